"""DPO on self-sampled preference pairs with TRL's ``DPOTrainer``; a LoRA adapter by default.

``DPOSettings(recipe="study")`` is the study's recipe (LoRA r8 on all linear layers, dropout 0, beta 0.1, sigmoid
loss, 4,096 tokens, batch 1 x accumulation 8, cosine schedule with 10% warmup, 12 epochs, lr 5e-6 or 1e-5 for
Llama); the default ``small`` recipe keeps sequences and steps CPU-sized. The result is a variant folder whose
``variant.json`` names the spec that loads it, ``hf:<base>+adapter:<folder>``.

Truncation never touches an answer: a pair longer than ``max_length`` loses the START of its prompt (the same
tokens for its chosen and rejected sequence), and a pair whose longer answer alone fills ``max_length`` is left out.
TRL 1.16 would instead cut the END of each sequence (``keep_start``: the answer's decision goes first) or each
sequence separately (deprecated ``keep_end``), so its own truncation is switched off and
:class:`PromptStartTruncation` does it. Both counts are in ``variant.json["truncation"]``.

:func:`preference_margins` measures what DPO optimises (the implicit reward margin of each pair) for any model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DPOSettings
from .data import checked_rows
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
    "DPO_ARGS",
    "DPO_METRICS",
    "PromptStartTruncation",
    "build_dpo_trainer",
    "dpo_config",
    "fit_pairs",
    "preference_margins",
    "sequence_logps",
    "train_dpo",
]

CPU = {"device": "cpu", "bf16": False, "dtype": "float32"}
"""The placement of a CPU run (what :func:`defenses.variant.load_for_training` reports there)."""

DPO_METRICS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")
"""Trainer metrics summarised (first, last, series) in ``variant.json``."""

DPO_ARGS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "beta",
    "loss_type",
    "bf16",
    "activation_checkpointing",
    "seed",
)
"""DPOConfig values recorded in ``variant.json["trainer"]`` (the length limit is under ``truncation``)."""


def _pairs(data: str | Path) -> list[dict[str, Any]]:
    """The checked ``prompt``/``chosen``/``rejected`` columns of a preference file; raises if it holds no pair."""
    rows = checked_rows(data, "pairs")
    if not rows:
        raise DefenseError(f"{data}: no preference pairs (the model yielded none; try more --retries or items)")
    return rows


def dpo_config(settings: DPOSettings, out: str | Path, placement: dict[str, Any] | None = None) -> Any:
    """TRL's ``DPOConfig`` for settings whose learning rate is resolved (TRL's own truncation off, see above)."""
    from trl import DPOConfig

    try:
        return DPOConfig(
            **trainer_kwargs(settings, Path(out), placement or CPU), max_length=None, loss_type=[settings.loss_type]
        )
    except ValueError as err:  # TRL's own checks
        raise DefenseError(f"TRL refused the DPO settings: {str(err).splitlines()[0]}") from None


@dataclass
class PromptStartTruncation:
    """A collator wrapper: each pair's prompt loses its START until prompt + its longer answer fit ``max_length``.

    Chosen and rejected keep the same prompt tokens; the answers are never cut (:func:`fit_pairs` leaves out
    pairs whose answer alone does not fit, before training).
    """

    collator: Callable[[list[dict[str, Any]]], Any]
    """TRL's preference collator (``DataCollatorForPreference``)."""
    max_length: int
    """Longest prompt + answer, in tokens."""

    def __call__(self, examples: list[dict[str, Any]]) -> Any:
        return self.collator([self.fit(e) for e in examples])

    def fit(self, example: dict[str, Any]) -> dict[str, Any]:
        """The example with its prompt cut from the start, if needed."""
        room = self.max_length - max(len(example["chosen_ids"]), len(example["rejected_ids"]))
        prompt = example["prompt_ids"]
        if len(prompt) <= room:
            return example
        return {**example, "prompt_ids": list(prompt[len(prompt) - max(room, 0) :])}


def fit_pairs(dataset: Any, max_length: int) -> tuple[Any, dict[str, Any]]:
    """Leave out the tokenized pairs whose longer answer alone fills ``max_length``; count the prompts to cut.

    Returns the dataset to train on and the counts recorded in ``variant.json["truncation"]``.
    """
    sizes = [
        (len(p), max(len(c), len(r)))
        for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
    ]
    keep = [i for i, (_, answer) in enumerate(sizes) if answer < max_length]
    cut = [p + a - max_length for p, a in sizes if a < max_length and p + a > max_length]
    stats = {
        "max_length": max_length,
        "pairs": len(sizes),
        "prompts_cut": len(cut),
        "prompt_tokens_cut": sum(cut),
        "dropped_long_answers": len(sizes) - len(keep),
        "longest": max((p + a for p, a in sizes), default=0),
        "rule": "the prompt loses its start; answers are never cut; a pair whose answer alone does not fit is left out",
    }
    if not keep:
        raise DefenseError(
            f"every pair has an answer of {max_length} tokens or more; raise --max-length "
            f"(longest pair: {stats['longest']} tokens)"
        )
    return (dataset.select(keep) if len(keep) < len(sizes) else dataset), stats


def build_dpo_trainer(
    base: str, rows: list[dict[str, Any]], out: str | Path, settings: DPOSettings
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``(trainer, truncation counts, placement)``: TRL's ``DPOTrainer`` on ``rows``, ready to train.

    ``settings.lr`` must be resolved (:func:`defenses.variant.resolve_lr`).
    """
    from datasets import Dataset
    from trl import DPOTrainer

    net, tokenizer, placement = load_for_training(base, settings)
    ref = load_for_training(base, settings)[0] if settings.full else None
    trainer = DPOTrainer(
        model=net,
        ref_model=ref,
        args=dpo_config(settings, out, placement),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(settings, net),
    )
    trainer.train_dataset, truncation = fit_pairs(trainer.train_dataset, settings.max_length)
    trainer.data_collator = PromptStartTruncation(trainer.data_collator, settings.max_length)
    return trainer, truncation, placement


def train_dpo(model: str, data: str | Path, out: str | Path, settings: DPOSettings | None = None) -> TrainResult:
    """Train a DPO variant of ``model`` on the pairs in ``data``; write it (and ``variant.json``) to ``out``.

    Args:
        model: The base model spec: ``smollm2``, ``hf:<folder or hub id>`` or ``tiny:<folder>``.
        data: A preference JSONL file written by :func:`defenses.make_preference_data` (or any TRL conversational
            preference file).
        out: The variant folder to write.
        settings: Hyper-parameters (default: the ``small`` recipe; ``DPOSettings(recipe="study")`` for the study's);
            without ``lr``, the study's rule for ``model`` picks it.
    """
    cfg, lr_source = resolve_lr(settings or DPOSettings(), "dpo", model=model)
    rows = _pairs(data)
    out = check_new_folder(out, "a trained variant", ours=MANIFEST)
    base = base_model_path(model)
    trainer, truncation, placement = build_dpo_trainer(base, rows, out, cfg)
    trainer.train()
    info = {"path": str(Path(data).resolve()), "sha256": file_sha256(data), "records": len(rows)}
    extra = {"lr_source": lr_source, "trainer": trainer_record(trainer.args, DPO_ARGS), "truncation": truncation}
    return save_variant(
        trainer,
        out,
        method="dpo",
        base_spec=model,
        base=base,
        settings=cfg,
        data=info,
        placement=placement,
        keys=DPO_METRICS,
        extra=extra,
    )


def sequence_logps(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict]], completions: Sequence[str]) -> Any:
    """Summed log-probability of each assistant ``completion`` after its chat ``prompt``; one batched forward pass.

    The completion is the text the chat template puts after the generation prompt (content plus end-of-turn).
    """
    import torch

    rows, spans = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        head = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
        whole = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": completion}], tokenize=False)
        tail = whole[len(head) :] if whole.startswith(head) else completion
        a = tokenizer(head, add_special_tokens=False)["input_ids"]
        b = tokenizer(tail, add_special_tokens=False)["input_ids"]
        rows.append(a + b)
        spans.append((len(a), len(a) + len(b)))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    keep = torch.zeros_like(logp)
    for i, (start, end) in enumerate(spans):
        keep[i, start - 1 : end - 1] = 1.0  # logit t predicts token t+1
    return (logp * keep).sum(-1).cpu()


def preference_margins(
    model: Any, ref_model: Any, tokenizer: Any, rows: Sequence[dict], *, beta: float = 0.1
) -> list[float]:
    """DPO's implicit reward margin per pair: ``beta * [(log pi - log ref)(chosen) - (log pi - log ref)(rejected)]``.

    Zero for the base model against itself; positive once the model prefers the chosen answers more than the
    reference does. ``rows`` are preference rows (``prompt``, ``chosen``, ``rejected``).
    """
    prompts = [r["prompt"] for r in rows]
    chosen = [r["chosen"][-1]["content"] for r in rows]
    rejected = [r["rejected"][-1]["content"] for r in rows]
    pc, pr = sequence_logps(model, tokenizer, prompts, chosen), sequence_logps(model, tokenizer, prompts, rejected)
    rc, rr = (
        sequence_logps(ref_model, tokenizer, prompts, chosen),
        sequence_logps(ref_model, tokenizer, prompts, rejected),
    )
    return [float(x) for x in beta * ((pc - rc) - (pr - rr))]
