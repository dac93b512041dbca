"""Long answers: padded groups (one `generate` per length group, every row waits for the group's longest answer) vs
continuous batching (a finished answer leaves the batch at once and the next request takes its place), side by side
in one process on one copy of the model, on a mix of short and long answers.

    .venv/bin/python bench/continuous.py                                  # SmolLM2, 32 agents, batch 32 and 8
    .venv/bin/python bench/continuous.py --model tiny --new-tokens 64
    .venv/bin/python bench/continuous.py --model random:Qwen3-8B --device cuda --dtype bfloat16 \\
        --agents 128 --prompt-tokens 1024 --new-tokens 2048 --stop-every 700 --rounds 3 --batch-sizes 128  # GPU

With the real model, half the agents are asked for a one-line answer and half for a detailed explanation (after a
preamble of varied length, so that every length-sorted batch mixes both), so answer lengths vary naturally. A
random-weight model never stops by itself: --stop-every N makes about 1 token in N of the vocabulary an
end-of-sequence token for both paths, so answer lengths vary geometrically (mean ~N, capped at --new-tokens).
--rounds R > 1 grows a transcript (each round appends the answer and a new question) and times the last round, with
prefix reuse on and off. All paths draw every answer from its own seeded generator, so they must produce the
same answers; the script checks it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from decisions import build_policy, prompts_for  # noqa: E402

from atp_graph.policies import HFPolicy  # noqa: E402

SHORT = 'Which store do you pick? Reply with only {"choice": "Store A"} or {"choice": "Store B"}.'
LONG = (
    "Explain in detail, step by step, how a shop owner should weigh a supervisor's rule against a higher income, "
    'with examples, then end with {"choice": "Store A"} or {"choice": "Store B"}.'
)


def conversations(policy: HFPolicy, n: int, prompt_tokens: int) -> list[list[dict[str, str]]]:
    """Chat prompts (half short, half long answers), or random text of about ``prompt_tokens`` tokens."""
    if prompt_tokens:
        vocab = min(policy.model.config.vocab_size, len(policy.tokenizer))
        texts = [policy.tokenizer.decode(p) for p in prompts_for(n, prompt_tokens, vocab, seed=1)]
        return [[{"role": "user", "content": t}] for t in texts]
    system = {"role": "system", "content": "You run a shop in a small town. Your supervisor requires Store A."}
    # a preamble of varied length, so that sorting prompts by length mixes short and long answers in every batch
    pre = "Business was steady this week. "
    return [[system, {"role": "user", "content": pre * (i * 7 % 6) + (LONG if i % 2 else SHORT)}] for i in range(n)]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="smollm2 | tiny | hf:<folder> | random:<Qwen3-8B|Llama-3.1-8B>")
    ap.add_argument("--agents", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--batch-sizes", default="32,8", help="rows per batch to compare, comma-separated")
    ap.add_argument("--prompt-tokens", type=int, default=0, help="random prompts of this length (0: chat prompts)")
    ap.add_argument("--stop-every", type=int, default=0, help="random models: ~1 vocabulary token in N ends answers")
    ap.add_argument("--rounds", type=int, default=1, help="transcript rounds; the last one is timed")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--kv-budget", default=None, help="KV budget, e.g. 40GB (default: the policy's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    base = build_policy(
        args.model,
        device=args.device,
        dtype=args.dtype,
        new_tokens=args.new_tokens,
        batch_size=max(sizes),
        compile_=False,
    )
    if args.stop_every:
        vocab = min(base.model.config.vocab_size, len(base.tokenizer))
        base.eos_ids = [*base.eos_ids, *range(7, vocab, args.stop_every)]
    kw = dict(name=base.name, max_new_tokens=args.new_tokens, temperature=args.temperature, kv_budget=args.kv_budget)
    vocab = min(base.model.config.vocab_size, len(base.tokenizer))
    print(
        f"model {args.model} on {base.device} ({torch.get_num_threads()} threads); {args.agents} agents, "
        f"answers up to {args.new_tokens} tokens, temperature {args.temperature}, {args.rounds} round(s) "
        f"(the last one timed)"
    )
    print(f"{'path':<38} {'batch':>5} {'seconds':>8} {'decisions/s':>11} {'tokens/s':>9} {'peak MiB':>9} {'same':>5}")
    paths = [("padded groups (generate)", False, True), ("continuous batching", True, True)]
    if args.rounds > 1:
        paths = [("padded groups, reuse off", False, False), *paths, ("continuous batching, reuse off", True, False)]
    for size in sizes:
        results = {}
        for label, continuous, reuse in paths:
            policy = HFPolicy(
                base.model, base.tokenizer, batch_size=size, continuous=continuous, prefix_cache=reuse, **kw
            )
            policy.eos_ids = base.eos_ids
            policy._gen_config.eos_token_id = base.eos_ids
            convs = conversations(policy, args.agents, args.prompt_tokens)
            seeds = list(range(args.agents))
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            for _ in range(args.rounds):
                rendered = [policy._render_cut(c) for c in convs]
                sync()
                t = time.perf_counter()
                outs = policy._generate([x for x, _ in rendered], seeds, args.new_tokens, [b for _, b in rendered])
                sync()
                seconds = time.perf_counter() - t
                for c, o in zip(convs, outs, strict=True):  # the transcript grows: the answer, a new question
                    c += [{"role": "assistant", "content": o.text}, {"role": "user", "content": "Next round. " + SHORT}]
            tokens = sum(o.tokens for o in outs)
            peak = policy.store.stats.peak_bytes / 2**20
            if torch.cuda.is_available():
                peak = torch.cuda.max_memory_allocated() / 2**20
            first = next(iter(results.values()), None)
            same = "" if first is None else str(outs == first[1])
            results[label] = (seconds, outs)
            print(
                f"{label:<38} {size:>5} {seconds:>8.2f} {args.agents / seconds:>11.2f} {tokens / seconds:>9.1f} "
                f"{peak:>9.0f} {same:>5}",
                flush=True,
            )
        lengths = sorted(o.tokens for o in results["continuous batching"][1])
        ratio = results["padded groups (generate)"][0] / results["continuous batching"][0]
        line = f"  batch {size}: continuous / padded {ratio:.2f}x"
        if args.rounds > 1:
            gain = results["padded groups, reuse off"][0] / results["padded groups (generate)"][0]
            line += f", padded reuse on / off {gain:.2f}x"
        print(f"{line}; answer lengths min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}")


if __name__ == "__main__":
    main()
