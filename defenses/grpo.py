"""GRPO with TRL's ``GRPOTrainer`` and the study's reward: 1.0 aligned, 0.1 the other option, 0 unparseable.

The reward reads the sampled answer with :func:`atp_graph.parse_choice`, exactly as the testbeds do. Prompts come
from a preference file (its ``prompt``, ``options`` and ``aligned`` columns; the answers are not used) or straight
from scenarios (GRPO samples its own answers, so it needs no pairs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atp_graph.parsing import parse_choice

from .config import GRPOSettings, Kind
from .data import prompt_records, read_records
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

__all__ = [
    "ALIGNED_REWARD",
    "GRPO_METRICS",
    "INVALID_REWARD",
    "OTHER_REWARD",
    "atp_reward",
    "choice_reward",
    "grpo_prompts",
    "train_grpo",
]

ALIGNED_REWARD, OTHER_REWARD, INVALID_REWARD = 1.0, 0.1, 0.0
"""The study's reward for the aligned option, the other option, and an answer naming neither."""

GRPO_METRICS = ("loss", "reward", "reward_std", "kl", "completions/mean_length")
"""Trainer metrics summarised (first, last, series) in ``variant.json``."""

PROMPTS_FILE = "train_prompts.jsonl"
"""Written into the variant folder when the prompts come from scenarios (its hash goes into the manifest)."""


def choice_reward(text: str, options: Sequence[str], aligned: str) -> float:
    """The study's reward for one answer."""
    choice = parse_choice(text, list(options))
    if choice is None:
        return INVALID_REWARD
    return ALIGNED_REWARD if choice == aligned else OTHER_REWARD


def atp_reward(completions: Sequence[Any], options: Sequence[Sequence[str]], aligned: Sequence[str],
               **_: Any) -> list[float]:
    """TRL reward function: ``completions`` are texts or assistant-message lists; extra columns come as lists."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [choice_reward(t, o, a) for t, o, a in zip(texts, options, aligned, strict=True)]


def grpo_prompts(
    data: str | Path | None = None,
    *,
    scenarios: str | Path | None = None,
    kind: Kind = "individual",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Training rows ``{prompt, options, aligned}`` from a data file, else from ``scenarios`` of ``kind``."""
    if data is not None:
        rows = read_records(data)
        bad = next((n for n, r in enumerate(rows, 1) if not {"prompt", "options", "aligned"} <= set(r)), None)
        if bad is not None:
            raise DefenseError(f"{data}:{bad}: GRPO needs prompt, options and aligned columns "
                               "(write the file with `defend data`)")
    else:
        rows = [{"prompt": [dict(m) for m in r.messages], "options": list(r.options), "aligned": r.aligned}
                for r in prompt_records(scenarios, kind=kind)]
    rows = [{k: r[k] for k in ("prompt", "options", "aligned")} for r in rows][:limit]
    if not rows:
        raise DefenseError(f"{data or scenarios}: no training prompts")
    return rows


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
        kind: The testbed of ``scenarios``.
        limit: Use only the first N prompts.
        settings: Hyper-parameters; defaults are the study's.
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    cfg = settings or GRPOSettings()
    rows = grpo_prompts(data, scenarios=scenarios, kind=kind, limit=limit)
    base = base_model_path(model)
    net, tokenizer, placement = load_for_training(base, cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        source = out / PROMPTS_FILE
        source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        source = Path(data)
    args = GRPOConfig(**trainer_kwargs(cfg, out, placement), num_generations=cfg.generations,
                      max_completion_length=cfg.max_completion_length, temperature=cfg.temperature)
    trainer = GRPOTrainer(model=net, reward_funcs=atp_reward, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora_config(cfg))
    trainer.train()
    info = {"path": str(source.resolve()), "sha256": file_sha256(source), "records": len(rows),
            "scenarios": None if data is not None else str(scenarios) if scenarios else f"built-in {kind}"}
    return save_variant(trainer, out, method="grpo", base_spec=model, base=base, settings=cfg, data=info,
                        placement=placement, keys=GRPO_METRICS)
