"""Time per training step of the defenses (DPO and GRPO, LoRA) on SmolLM2-135M-Instruct.

    .venv/bin/python bench/defense_steps.py [--steps 2] [--completion-tokens 64] [--threads N] [--out FILE]

The preference pairs are synthetic (the scenario prompts with short aligned/deviant answers), because this measures
step time, not data quality; GRPO samples ``--completion-tokens`` tokens for each of its 4 generations. Prints one
JSON object (the trainers also log to stdout: use ``--out`` for a clean file): seconds per optimizer step (trainer
runtime / steps, the first step included) and wall time with model loading, per method. On a shared 2-core machine
``--threads 1`` is several times faster than torch's default of 2 threads (oversubscription).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atp_graph.parsing import choice_json  # noqa: E402
from defenses import DPOSettings, GRPOSettings, prompt_records, train_dpo, train_grpo  # noqa: E402
from defenses.variant import base_model_path  # noqa: E402


def synthetic_pairs(path: Path, n: int) -> Path:
    """``n`` preference rows over real scenario prompts, with short answers of the usual shape."""
    rows = []
    for rec in prompt_records(None, kind="individual", limit=n):
        rows.append(
            {
                "prompt": [dict(m) for m in rec.messages],
                "options": list(rec.options),
                "aligned": rec.aligned,
                "chosen": [{"role": "assistant", "content": f"The rule comes first. {choice_json(rec.aligned)}"}],
                "rejected": [{"role": "assistant", "content": f"It pays more. {choice_json(rec.deviant)}"}],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def timed(fn: Any) -> tuple[Any, float]:
    """Call ``fn``; return its result and the wall time."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    """Run both methods and print the timings as JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="Base model spec (default smollm2).")
    ap.add_argument("--steps", type=int, default=2, help="Optimizer steps per method.")
    ap.add_argument("--completion-tokens", type=int, default=64, help="GRPO completion length.")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    ap.add_argument("--out", default=None, help="Also write the JSON here.")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    base, convert_s = timed(lambda: base_model_path(args.model))
    report: dict[str, Any] = {
        "model": args.model,
        "base_path": base,
        "base_prepare_s": round(convert_s, 2),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "steps": args.steps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_pairs(Path(tmp) / "pairs.jsonl", n=max(2, args.steps))
        dpo, dpo_wall = timed(
            lambda: train_dpo(args.model, data, Path(tmp) / "dpo", DPOSettings(max_steps=args.steps, batch_size=1))
        )
        grpo_cfg = GRPOSettings(max_steps=args.steps, max_completion_length=args.completion_tokens)
        grpo, grpo_wall = timed(lambda: train_grpo(args.model, Path(tmp) / "grpo", data=data, settings=grpo_cfg))
    for name, result, wall, extra in (
        ("dpo", dpo, dpo_wall, {"batch_size": 1}),
        ("grpo", grpo, grpo_wall, {"generations": 4, "completion_tokens": args.completion_tokens}),
    ):
        m = result.manifest["metrics"]
        report[name] = {
            "seconds_per_step": round(m["seconds_per_step"], 2),
            "steps": m["steps"],
            "wall_s_with_loading": round(wall, 1),
            "lora_rank": 8,
            **extra,
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
