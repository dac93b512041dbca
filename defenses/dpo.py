"""DPO on self-sampled preference pairs with TRL's ``DPOTrainer``; a LoRA adapter by default.

The study's recipe (LoRA rank 8, beta 0.1, lr 5e-6, 12 epochs) is the default of :class:`DPOSettings`. The result
is a variant folder whose ``variant.json`` names the spec that loads it, ``hf:<base>+adapter:<folder>``.
:func:`preference_margins` measures what DPO optimises (the implicit reward margin of each pair) for any model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import DPOSettings
from .data import read_records
from .variant import (
    DefenseError,
    TrainResult,
    base_model_path,
    file_sha256,
    load_for_training,
    lora_config,
    save_variant,
    trainer_kwargs,
)

__all__ = ["DPO_METRICS", "preference_margins", "sequence_logps", "train_dpo"]

DPO_METRICS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")
"""Trainer metrics summarised (first, last, series) in ``variant.json``."""


def _pairs(data: str | Path) -> list[dict[str, Any]]:
    """The ``prompt``/``chosen``/``rejected`` columns of a preference file; raises if it holds no pair."""
    rows = read_records(data)
    if not rows:
        raise DefenseError(f"{data}: no preference pairs (the model yielded none; try more --retries or items)")
    for n, row in enumerate(rows, 1):
        missing = {"prompt", "chosen", "rejected"} - set(row)
        if missing:
            raise DefenseError(f"{data}:{n}: missing {', '.join(sorted(missing))}; not a preference dataset")
    return [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows]


def train_dpo(model: str, data: str | Path, out: str | Path, settings: DPOSettings | None = None) -> TrainResult:
    """Train a DPO variant of ``model`` on the pairs in ``data``; write it (and ``variant.json``) to ``out``.

    Args:
        model: The base model spec: ``smollm2``, ``hf:<folder or hub id>`` or ``tiny:<folder>``.
        data: A preference JSONL file written by :func:`defenses.make_preference_data` (or any TRL conversational
            preference file).
        out: The variant folder to write.
        settings: Hyper-parameters; defaults are the study's.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    cfg = settings or DPOSettings()
    rows = _pairs(data)
    base = base_model_path(model)
    net, tokenizer, placement = load_for_training(base, cfg)
    ref = load_for_training(base, cfg)[0] if cfg.full else None
    out = Path(out)
    args = DPOConfig(**trainer_kwargs(cfg, out, placement), max_length=cfg.max_length, loss_type=[cfg.loss_type])
    trainer = DPOTrainer(model=net, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora_config(cfg))
    trainer.train()
    info = {"path": str(Path(data).resolve()), "sha256": file_sha256(data), "records": len(rows)}
    return save_variant(trainer, out, method="dpo", base_spec=model, base=base, settings=cfg, data=info,
                        placement=placement, keys=DPO_METRICS)


def sequence_logps(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict]], completions: Sequence[str]) -> Any:
    """Summed log-probability of each assistant ``completion`` after its chat ``prompt``; one batched forward pass.

    The completion is the text the chat template puts after the generation prompt (content plus end-of-turn).
    """
    import torch

    rows, spans = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        head = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
        whole = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": completion}], tokenize=False)
        tail = whole[len(head):] if whole.startswith(head) else completion
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


def preference_margins(model: Any, ref_model: Any, tokenizer: Any, rows: Sequence[dict], *, beta: float = 0.1) -> list[
        float]:
    """DPO's implicit reward margin per pair: ``beta * [(log pi - log ref)(chosen) - (log pi - log ref)(rejected)]``.

    Zero for the base model against itself; positive once the model prefers the chosen answers more than the
    reference does. ``rows`` are preference rows (``prompt``, ``chosen``, ``rejected``).
    """
    prompts = [r["prompt"] for r in rows]
    chosen = [r["chosen"][-1]["content"] for r in rows]
    rejected = [r["rejected"][-1]["content"] for r in rows]
    pc, pr = sequence_logps(model, tokenizer, prompts, chosen), sequence_logps(model, tokenizer, prompts, rejected)
    rc, rr = (sequence_logps(ref_model, tokenizer, prompts, chosen),
              sequence_logps(ref_model, tokenizer, prompts, rejected))
    return [float(x) for x in beta * ((pc - rc) - (pr - rr))]
