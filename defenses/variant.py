"""What DPO and GRPO share: the base model folder behind a spec, loading it for training, and the variant manifest.

A trained variant is a folder with a LoRA adapter (or a whole model with ``full``) and ``variant.json``::

    {"spec": "hf:<base folder>+adapter:<this folder>", "method": "dpo", "base_spec": "smollm2",
     "base_path": "<base folder>", "config": {...every resolved setting...},
     "recipe": {"name": "study", "sets": {...}, "departures": {field: {"recipe", "used"}}},
     "lr_source": "...", "trainer": {...the values TRL's config received...}, "truncation": {...},
     "data": {"path", "sha256", "records"}, "metrics": {...}}

``spec`` is what :func:`atp_graph.load_policy` (and every ``--model`` option) accepts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from atp_graph.errors import UserError, printable
from atp_graph.policies.spec import ModelError, split_adapter
from atp_graph.run.provenance import versions as package_versions
from atp_graph.scenarios.loader import FileProblem, read_regular

from .config import recipe_report, study_lr

if TYPE_CHECKING:
    from .config import TrainSettings

S = TypeVar("S", bound="TrainSettings")

__all__ = [
    "MANIFEST",
    "DefenseError",
    "TrainResult",
    "base_model_path",
    "check_new_folder",
    "check_variant_files",
    "file_sha256",
    "lora_config",
    "load_for_training",
    "package_versions",
    "read_variant",
    "resolve_lr",
    "resolve_spec",
    "save_variant",
    "summarize_log",
    "trainer_kwargs",
    "trainer_record",
    "write_variant",
]

MANIFEST = "variant.json"
"""The manifest file of a trained variant folder."""


class DefenseError(UserError):
    """A user-facing problem with defense inputs (empty or malformed data, a bad variant spec)."""


@dataclass
class TrainResult:
    """A finished training run."""

    path: Path
    """The variant folder (adapter or full model, plus ``variant.json``)."""
    spec: str
    """The model spec that loads the variant: ``hf:<base>+adapter:<path>`` (LoRA) or ``hf:<path>`` (full)."""
    manifest: dict[str, Any]
    """The contents of ``variant.json``."""
    log_history: list[dict[str, Any]]
    """Every metrics record the trainer logged (one per ``logging_steps``)."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_model_path(spec: str) -> str:
    """The folder (or hub id) a trainable model spec names; ``smollm2`` is the cached converted folder.

    Raises:
        ModelError: For specs that are not a local Hugging Face model (``sim``, providers, adapters).
    """
    spec = spec.strip()
    if spec in ("", "smollm2"):
        from atp_graph.policies.smollm2 import ensure_smollm2

        return str(ensure_smollm2())
    kind, _, target = spec.partition(":")
    if kind == "tiny" and target:
        from atp_graph.policies.tiny import build_tiny_model

        folder = Path(target).expanduser()
        if not (folder / "config.json").exists():
            build_tiny_model(folder)
        return str(folder.resolve())
    if kind == "hf" and target:
        base, adapter = split_adapter(target)
        if adapter is not None:
            raise ModelError(f"{spec!r} already carries an adapter; merge it into a model folder before training on it")
        local = Path(base).expanduser()
        return str(local.resolve()) if local.is_dir() else base
    raise ModelError(f"cannot train {spec!r}: training needs smollm2, hf:<folder or hub id> or tiny:<folder>")


def resolve_spec(spec: str) -> str:
    """A model spec, with a trained variant folder (one holding ``variant.json``) replaced by its recorded spec.

    Raises:
        DefenseError: The folder's manifest is damaged, or the files it names are not there (the message names the
            folder).
    """
    p = Path(spec)
    if ":" not in spec and (p / MANIFEST).is_file():
        resolved = read_variant(p)["spec"]
        check_variant_files(p, resolved)
        return resolved
    return spec


MAX_MANIFEST_BYTES = 64 * 2**20
"""Largest ``variant.json`` read (a long run's metric series are well under 1 MB)."""


def read_variant(folder: str | Path) -> dict[str, Any]:
    """The ``variant.json`` manifest of a trained variant folder, its ``spec`` checked: a variant loads from its
    own folder (a full model, or an adapter on a base model), never builds or writes a model elsewhere.

    Raises:
        FileNotFoundError: No manifest in ``folder``.
        DefenseError: The manifest is not valid JSON, or its spec points outside the folder or is not ``hf:``.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no variant manifest here")
    manifest = _manifest(path)
    spec = manifest.get("spec") if isinstance(manifest, dict) else None
    if not isinstance(spec, str) or not spec.startswith("hf:"):
        raise DefenseError(f"{path}: spec must be 'hf:<this folder>' or 'hf:<base>+adapter:<this folder>'")
    here = Path(folder).resolve()  # the files are loaded from here, wherever the manifest says they were
    try:
        base, adapter = split_adapter(spec[3:])
    except ModelError as e:
        raise DefenseError(f"{path}: {printable(str(e))}") from None
    if adapter is None:
        return {**manifest, "spec": f"hf:{here}"}
    if base.startswith(("tiny:", "sim", "hf:", "server:")) or not base.strip() or not base.isprintable():
        raise DefenseError(f"{path}: the base model must be a model folder or hub id, not '{printable(base)}'")
    return {**manifest, "spec": f"hf:{base}+adapter:{here}"}


def _manifest(path: Path) -> Any:
    """The parsed ``variant.json`` at ``path``, or a :class:`DefenseError` naming it."""
    try:
        return json.loads(read_regular(path, MAX_MANIFEST_BYTES).decode("utf-8"))
    except FileProblem as e:
        raise DefenseError(f"{path}: {e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DefenseError(f"{path}: not a valid variant manifest ({printable(str(e))})") from None
    except RecursionError:
        raise DefenseError(f"{path}: not a valid variant manifest (nested too deeply)") from None


def check_variant_files(folder: str | Path, spec: str) -> None:
    """The files the resolved ``spec`` of a variant ``folder`` loads are there: the model (``config.json``) or the
    adapter (``adapter_config.json``) in the folder itself, and a base model folder named by the manifest (a hub
    id is only checked when it is loaded). Checked before anything runs, so nothing is written for a broken variant.

    Raises:
        DefenseError: Naming ``folder``.
    """
    from atp_graph.policies.hf import _looks_local

    base, adapter = split_adapter(spec.removeprefix("hf:"))
    need = "config.json" if adapter is None else "adapter_config.json"
    if not (Path(folder) / need).is_file():
        what = "model" if adapter is None else "adapter"
        raise DefenseError(f"{folder}: no trained {what} here ({need} is missing); a variant loads only its own folder")
    if adapter is not None and _looks_local(base) and not (Path(base).expanduser() / "config.json").is_file():
        raise DefenseError(f"{folder}: its base model folder '{printable(base)}' (in {MANIFEST}) holds no model")


def check_new_folder(path: str | Path, what: str, *, ours: str | None = None) -> Path:
    """``path`` as a folder to write ``what`` into: new or empty (never among the user's files), or, with ``ours``,
    one holding that file (written here before: a variant folder is trained again); else a one-line error.

    Raises:
        DefenseError: Naming ``path`` (also for a file, a place under a file or a read-only folder, a name the OS
            refuses: :meth:`atp_graph.run.RunDir.check_new`'s checks).
    """
    from atp_graph.run import RunDir
    from atp_graph.run.rundir import RunDirError

    p = Path(path)
    try:
        names = {f.name for f in p.iterdir()} if p.is_dir() else set()
    except OSError as e:
        raise DefenseError(f"{printable(str(p), 500)}: cannot use it for {what}: {e.strerror or e}") from None
    if names and (ours is None or ours not in names):
        raise DefenseError(
            f"{printable(str(p), 500)}: holds files; {what} is written only into a new or empty folder: choose "
            "another --out"
        )
    if names:
        return p
    try:
        return RunDir.check_new(p)
    except RunDirError as e:
        raise DefenseError(str(e)) from None


def write_variant(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``variant.json`` (adding the creation time and package versions); return what was written."""
    full = {
        **manifest,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    (folder / MANIFEST).write_text(json.dumps(full, indent=2, default=str) + "\n", encoding="utf-8")
    return full


def _device(setting: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _bf16(device: str, precision: str) -> bool:
    """bf16 mixed precision: asked for, or ``auto`` on a GPU that supports it."""
    import torch

    if precision != "auto":
        return precision == "bf16"
    return device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_for_training(base: str, settings: TrainSettings) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, placement)``: float32 weights on CPU; bf16 weights for LoRA on a bf16 GPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = _device(settings.device)
    bf16 = _bf16(device, settings.precision)
    dtype = torch.bfloat16 if bf16 and not settings.full else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except OSError as err:
        raise ModelError(f"cannot load model {base!r} for training ({err})") from None
    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelError(f"{base}: the tokenizer has no chat template; train an instruction-tuned model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, {"device": device, "bf16": bf16, "dtype": str(dtype).removeprefix("torch.")}


def lora_config(settings: TrainSettings, model: Any = None) -> Any:
    """The peft LoRA config, or ``None`` for full fine-tuning; ``model`` (needed for ``lora_layers``) tells how
    many layers there are and which linear layers 'all-linear' means."""
    if settings.full:
        return None
    from peft import LoraConfig

    targets: str | list[str] = settings.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    layers = None
    if settings.lora_layers is not None:
        if model is None:
            raise ValueError("lora_layers needs the model")
        total = model.config.num_hidden_layers
        if settings.lora_layers > total:
            raise DefenseError(f"--lora-layers {settings.lora_layers}: the model has only {total} layers")
        layers = list(range(total - settings.lora_layers, total))
        if targets == "all-linear":  # peft takes layer indices only with module names
            targets = _linear_names(model)
    return LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def _linear_names(model: Any) -> list[str]:
    """The names of the linear layers inside the transformer layers (what peft's 'all-linear' adapts)."""
    import torch

    out = model.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not out
        }
    )


def trainer_kwargs(
    settings: TrainSettings, out: Path, placement: dict[str, Any], *, grad_accum: int | None = None
) -> dict[str, Any]:
    """Arguments every TRL config gets: schedule, precision, CPU, no checkpoints, no external loggers.

    ``settings.lr`` must be resolved (:func:`resolve_lr`); ``grad_accum`` overrides the settings' accumulation
    (GRPO passes its per-device share). transformers 5 takes a warmup fraction as ``warmup_steps`` < 1.
    """
    if settings.lr is None:
        raise ValueError("resolve the learning rate first (defenses.variant.resolve_lr)")
    return dict(
        output_dir=str(out),
        learning_rate=settings.lr,
        lr_scheduler_type=settings.scheduler,
        warmup_steps=settings.warmup_ratio,
        max_grad_norm=settings.max_grad_norm,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=grad_accum or settings.grad_accum,
        beta=settings.beta,
        seed=settings.seed,
        use_cpu=placement["device"] == "cpu",
        bf16=placement["bf16"],
        fp16=False,
        activation_checkpointing=settings.gradient_checkpointing,
        logging_steps=settings.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=False,
    )


def resolve_lr(settings: S, method: Literal["dpo", "grpo"], *, model: str, kind: str = "individual") -> tuple[S, str]:
    """``settings`` with the learning rate filled by the study's rule when not given, and where it came from."""
    if settings.lr is not None:
        return settings, "given"
    lr = study_lr(method, model=model, kind=kind)  # type: ignore[arg-type]
    if method == "dpo":
        source = f"the study's DPO rule for {model!r}: 1e-5 for a model named like Llama, else 5e-6"
    else:
        source = f"the study's GRPO rule for {kind} items: 1e-6 individual, 5e-6 collective"
    return settings.model_copy(update={"lr": lr}), source


def trainer_record(args: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``keys`` in a TRL config as the trainer received them (for ``variant.json``)."""
    out = {}
    for key in keys:
        value = getattr(args, key, None)
        out[key] = getattr(value, "value", value)  # enums (scheduler) as their names
    return out


def summarize_log(history: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """First and last logged value (and the series) of each metric in ``keys``, plus run totals."""
    steps = [h for h in history if "loss" in h or "reward" in h]
    out: dict[str, Any] = {}
    for key in keys:
        series = [(h["step"], h[key]) for h in steps if key in h]
        if series:
            out[key] = {"first": series[0][1], "last": series[-1][1], "series": series}
    totals = next((h for h in reversed(history) if "train_runtime" in h), {})
    if totals:
        n = max(int(totals.get("step", 0)), 1)
        out["steps"] = int(totals.get("step", 0))
        out["train_runtime_s"] = totals["train_runtime"]
        out["seconds_per_step"] = totals["train_runtime"] / n
        out["train_loss"] = totals.get("train_loss")
    return out


def save_variant(
    trainer: Any,
    out: Path,
    *,
    method: str,
    base_spec: str,
    base: str,
    settings: TrainSettings,
    data: dict[str, Any],
    placement: dict[str, Any],
    keys: tuple[str, ...],
    extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Save the adapter (or full model) and tokenizer, write ``variant.json``; return the :class:`TrainResult`.

    ``extra`` (the learning-rate source, the TRL config values, truncation counts) is merged into the manifest.
    """
    trainer.save_model(str(out))
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; its values are in the manifest's "trainer"
    trainer.processing_class.save_pretrained(str(out))
    folder = out.resolve()
    spec = f"hf:{folder}" if settings.full else f"hf:{base}+adapter:{folder}"
    history = list(trainer.state.log_history)
    manifest = write_variant(
        out,
        {
            "spec": spec,
            "method": method,
            "base_spec": base_spec,
            "base_path": base,
            "adapter": None if settings.full else str(folder),
            "config": settings.model_dump(),
            "recipe": recipe_report(settings),
            **(extra or {}),
            "data": data,
            "placement": placement,
            "metrics": summarize_log(history, keys),
        },
    )
    return TrainResult(out, spec, manifest, history)
