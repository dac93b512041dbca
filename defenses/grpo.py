"""GRPO with TRL's ``GRPOTrainer`` and the study's reward: 1.0 aligned, 0.1 the other option, 0 unparseable.

The reward reads the sampled answer with :func:`atp_graph.parse_choice`, exactly as the testbeds do. Prompts come
from a preference file (its ``prompt``, ``options`` and ``aligned`` columns; the answers are not used) or straight
from scenarios (GRPO samples its own answers, so it needs no pairs).

``GRPOSettings(recipe="study")`` is the study's recipe: a full fine-tune, 4 generations per prompt and 32 prompts
(128 completions) per optimizer step, prompts up to 1,024 tokens and completions up to 2,048, beta 0.04, epsilon
0.2, 6 epochs, lr 1e-6 on individual items and 5e-6 on collective ones, the KL term unweighted (TRL 0.23's) and
the reward reading the FIRST decision in an answer (``parse="first"``, the study's rule; ours reads the last one
outside thinking). A step's completions are split over
devices (``WORLD_SIZE``): each accumulates ``grad_accum / devices`` batches. A prompt longer than
``max_prompt_length`` loses its START (as TRL 0.23, the study's version, did; TRL 1.16 has no prompt limit).

``answer_prefix`` opens every sampled answer with fixed text: with ``'{"choice": "'`` the model samples only the
option's name, where score mode reads its decision (the embedded SmolLM2 rarely writes the answer format on its
own, so a free answer would almost always earn 0 and teach nothing). The prompt is then the chat rendered as text
with the prefix after the assistant's opening, and the reward reads the prefix in front of each completion.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from atp_graph.parsing import ParseRule, parse_choice

from .config import GRPOSettings, Kind
from .data import checked_rows, prompt_records
from .variant import (
    MANIFEST,
    DefenseError,
    TrainResult,
    base_model_path,
    check_new_folder,
    file_sha256,
    load_for_training,
    lora_config,
    resolve_lr,
    save_variant,
    trainer_kwargs,
    trainer_record,
)

__all__ = [
    "ALIGNED_REWARD",
    "GRPO_ARGS",
    "GRPO_METRICS",
    "INVALID_REWARD",
    "OTHER_REWARD",
    "atp_reward",
    "build_grpo_trainer",
    "choice_reward",
    "devices",
    "grpo_config",
    "grpo_prompts",
    "reward_function",
    "train_grpo",
]

CPU = {"device": "cpu", "bf16": False, "dtype": "float32"}
"""The placement of a CPU run (what :func:`defenses.variant.load_for_training` reports there)."""

ALIGNED_REWARD, OTHER_REWARD, INVALID_REWARD = 1.0, 0.1, 0.0
"""The study's reward for the aligned option, the other option, and an answer naming neither."""

GRPO_METRICS = ("loss", "reward", "reward_std", "kl", "completions/mean_length")
"""Trainer metrics summarised (first, last, series) in ``variant.json``."""

GRPO_ARGS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "generation_batch_size",
    "steps_per_generation",
    "num_generations",
    "max_completion_length",
    "max_grad_norm",
    "beta",
    "epsilon",
    "temperature",
    "loss_type",
    "use_bias_correction_kl",
    "bf16",
    "activation_checkpointing",
    "seed",
)
"""GRPOConfig values recorded in ``variant.json["trainer"]`` (the prompt limit is under ``truncation``)."""

PROMPTS_FILE = "train_prompts.jsonl"
"""Written into the variant folder when the prompts come from scenarios (its hash goes into the manifest)."""


def choice_reward(text: str, options: Sequence[str], aligned: str, *, rule: ParseRule = "last") -> float:
    """The study's reward for one answer; ``rule`` picks the decision that counts (``first`` = the study's)."""
    choice = parse_choice(text, list(options), rule=rule)
    if choice is None:
        return INVALID_REWARD
    return ALIGNED_REWARD if choice == aligned else OTHER_REWARD


def atp_reward(
    completions: Sequence[Any],
    options: Sequence[Sequence[str]],
    aligned: Sequence[str],
    *,
    rule: ParseRule = "last",
    answer_prefix: Sequence[str] | None = None,
    **_: Any,
) -> list[float]:
    """TRL reward function: ``completions`` are texts or assistant-message lists; extra columns come as lists
    (``answer_prefix``: the text each answer was started with, read in front of its completion)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    if answer_prefix is not None:
        texts = [p + t for p, t in zip(answer_prefix, texts, strict=True)]
    return [choice_reward(t, o, a, rule=rule) for t, o, a in zip(texts, options, aligned, strict=True)]


def reward_function(rule: ParseRule = "last") -> Callable[..., list[float]]:
    """The TRL reward function reading answers with ``rule`` (:func:`atp_reward` itself for ``last``)."""
    if rule == "last":
        return atp_reward

    def atp_reward_first(
        completions: Sequence[Any], options: Sequence[Sequence[str]], aligned: Sequence[str], **kwargs: Any
    ) -> list[float]:
        """:func:`atp_reward` with the study's parse rule (the first decision anywhere)."""
        return atp_reward(completions, options, aligned, rule="first", answer_prefix=kwargs.get("answer_prefix"))

    return atp_reward_first


def grpo_prompts(
    data: str | Path | None = None,
    *,
    scenarios: str | Path | None = None,
    kind: Kind = "individual",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Training rows ``{prompt, options, aligned}`` from a data file, else from ``scenarios`` of ``kind``."""
    if data is not None:
        rows = checked_rows(data, "prompts")
    else:
        rows = [
            {"prompt": [dict(m) for m in r.messages], "options": list(r.options), "aligned": r.aligned}
            for r in prompt_records(scenarios, kind=kind)
        ]
    rows = [{k: r[k] for k in ("prompt", "options", "aligned")} for r in rows][:limit]
    if not rows:
        raise DefenseError(f"{data or scenarios}: no training prompts")
    return rows


def _data_kind(data: str | Path) -> Kind | None:
    """The testbed a data file's rows come from (its ``kind`` column), if they all agree."""
    kinds = {r["kind"] for r in checked_rows(data, "prompts")} - {None}
    return kinds.pop() if len(kinds) == 1 else None


def devices() -> int:
    """Processes training together (``WORLD_SIZE``, set by ``accelerate launch`` / ``torchrun``; 1 otherwise)."""
    return max(int(os.environ.get("WORLD_SIZE", "1") or 1), 1)


def grpo_config(
    settings: GRPOSettings, out: str | Path, placement: dict[str, Any] | None = None, *, world: int | None = None
) -> Any:
    """TRL's ``GRPOConfig`` for settings whose learning rate is resolved; ``world`` devices share each step."""
    from trl import GRPOConfig

    world = world or devices()
    accum = settings.grad_accum or 1
    if accum % world:
        raise DefenseError(
            f"--grad-accum {accum} (completions per step / --batch-size) must be a multiple of the "
            f"{world} devices; change --prompts-per-step or --batch-size"
        )
    extra: dict[str, Any] = {"loss_type": settings.loss_type} if settings.loss_type else {}
    try:
        return GRPOConfig(
            **trainer_kwargs(settings, Path(out), placement or CPU, grad_accum=accum // world),
            num_generations=settings.generations,
            max_completion_length=settings.max_completion_length,
            temperature=settings.temperature,
            epsilon=settings.epsilon,
            use_bias_correction_kl=settings.kl_term == "corrected",
            **extra,
        )
    except ValueError as err:  # TRL's own checks, e.g. an unknown --loss-type
        raise DefenseError(f"TRL refused the GRPO settings: {str(err).splitlines()[0]}") from None


def _prompt_lengths(tokenizer: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Tokens of each row's prompt (a chat rendered with the generation prompt, or a text), as the trainer sees it."""
    texts = [r["prompt"] if isinstance(r["prompt"], str) else _chat_text(tokenizer, r["prompt"], "") for r in rows]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _chat_text(tokenizer: Any, messages: Sequence[dict[str, Any]], prefix: str) -> str:
    """The chat rendered as the model reads it, the assistant's answer opened and started with ``prefix``."""
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False) + prefix


def prefilled(tokenizer: Any, rows: Sequence[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Rows whose chat prompts become text prompts ending in ``prefix`` (the sampled answer continues it); the
    ``answer_prefix`` column tells the reward to read the prefix in front of each completion. No prefix: as given."""
    if not prefix:
        return list(rows)
    return [{**r, "prompt": _prefixed(tokenizer, r["prompt"], prefix), "answer_prefix": prefix} for r in rows]


def _prefixed(tokenizer: Any, prompt: str | Sequence[dict[str, Any]], prefix: str) -> str:
    """A prompt that ends in ``prefix``: a chat rendered with the assistant's answer opened, or a text prompt."""
    return prompt + prefix if isinstance(prompt, str) else _chat_text(tokenizer, prompt, prefix)


def _trainer_class(max_prompt_length: int | None) -> Any:
    """``GRPOTrainer``, or a subclass whose prompts keep only their last ``max_prompt_length`` tokens."""
    from trl import GRPOTrainer

    if max_prompt_length is None:
        return GRPOTrainer
    if not hasattr(GRPOTrainer, "_tokenize_prompts"):  # pragma: no cover - a TRL without the hook
        raise DefenseError("this TRL version cannot cut prompts; leave --max-prompt-length unset or shorten them")

    class PromptStartGRPOTrainer(GRPOTrainer):
        """Cuts each tokenized prompt from its start (text-only models)."""

        def _tokenize_prompts(self, prompts: list) -> Any:
            ids, images, fields = super()._tokenize_prompts(prompts)
            return [list(p[-max_prompt_length:]) for p in ids], images, fields

    return PromptStartGRPOTrainer


def build_grpo_trainer(
    base: str, rows: list[dict[str, Any]], out: str | Path, settings: GRPOSettings
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``(trainer, truncation counts, placement)``: TRL's ``GRPOTrainer`` with the study's reward, ready to train.

    ``settings.lr`` must be resolved (:func:`defenses.variant.resolve_lr`).
    """
    from datasets import Dataset

    net, tokenizer, placement = load_for_training(base, settings)
    rows = prefilled(tokenizer, rows, settings.answer_prefix)
    lengths = _prompt_lengths(tokenizer, rows)
    limit = settings.max_prompt_length
    cut = [n - limit for n in lengths if limit is not None and n > limit]
    truncation = {
        "max_prompt_length": limit,
        "prompts": len(rows),
        "prompts_cut": len(cut),
        "prompt_tokens_cut": sum(cut),
        "longest_prompt": max(lengths, default=0),
        "max_completion_length": settings.max_completion_length,
        "rule": "a prompt loses its start; completions stop at max_completion_length",
    }
    trainer_cls = _trainer_class(limit if cut else None)
    trainer = trainer_cls(
        model=net,
        reward_funcs=reward_function(settings.parse),
        args=grpo_config(settings, out, placement),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(settings, net),
    )
    return trainer, truncation, placement


def train_grpo(
    model: str,
    out: str | Path,
    *,
    data: str | Path | None = None,
    scenarios: str | Path | None = None,
    kind: Kind = "individual",
    limit: int | None = None,
    settings: GRPOSettings | None = None,
) -> TrainResult:
    """Train a GRPO variant of ``model``; write it (and ``variant.json``) to ``out``.

    Args:
        model: The base model spec: ``smollm2``, ``hf:<folder or hub id>`` or ``tiny:<folder>``.
        out: The variant folder to write.
        data: A file from ``defend data`` (prompts, options, aligned option); or give ``scenarios``.
        scenarios: Scenario file, folder or built-in name used when ``data`` is ``None`` (``None`` too = built-ins).
        kind: The testbed of ``scenarios`` (a data file's own ``kind`` column wins); it picks the study's lr.
        limit: Use only the first N prompts.
        settings: Hyper-parameters (default: the ``small`` recipe; ``GRPOSettings(recipe="study")`` for the
            study's); without ``lr``, the study's rule for ``kind`` picks it.
    """
    rows = grpo_prompts(data, scenarios=scenarios, kind=kind, limit=limit)
    if data is not None:
        kind = _data_kind(data) or kind
    cfg, lr_source = resolve_lr(settings or GRPOSettings(), "grpo", model=model, kind=kind)
    out = check_new_folder(out, "a trained variant", ours=MANIFEST)
    base = base_model_path(model)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        source = out / PROMPTS_FILE
        source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        source = Path(data)
    trainer, truncation, placement = build_grpo_trainer(base, rows, out, cfg)
    trainer.train()
    info = {
        "path": str(source.resolve()),
        "sha256": file_sha256(source),
        "records": len(rows),
        "kind": kind,
        "scenarios": None if data is not None else str(scenarios) if scenarios else f"built-in {kind}",
    }
    extra = {
        "lr_source": lr_source,
        "trainer": trainer_record(trainer.args, GRPO_ARGS),
        "truncation": truncation,
        "devices": devices(),
        "completions_per_step": cfg.completions_per_step,
    }
    return save_variant(
        trainer,
        out,
        method="grpo",
        base_spec=model,
        base=base,
        settings=cfg,
        data=info,
        placement=placement,
        keys=GRPO_METRICS,
        extra=extra,
    )
