"""Prefix reuse: the same runs with every prompt prefilled in full (today's path, reuse off) and with the KV of
earlier prompts and answers reused (reuse on), side by side in one process on one copy of the model.

    .venv/bin/python bench/prefix_reuse.py                       # all three workloads below, embedded SmolLM2
    .venv/bin/python bench/prefix_reuse.py --workload diffuse    # `make run`: diffuse, small world, 24 agents, 4 rounds
    .venv/bin/python bench/prefix_reuse.py --workload explore --items 16 --rounds 6
    .venv/bin/python bench/prefix_reuse.py --workload decisions --agents 16 --new-tokens 32
    .venv/bin/python bench/prefix_reuse.py --model tiny         # seconds, for a smoke test

Workloads:
- diffuse: `make run`'s workload (score mode, transcript memory): seconds per round and in all, and the largest
  difference in p(collective) between the two runs.
- explore: transcript mode, score mode: round-r time / round-1 time (cost of a growing transcript).
  A shared CPU's speed drifts from minute to minute, so both testbeds replay the run --repeats times (default 3)
  and show each round's median, then time round 1 and the last round back to back --pairs times (default 5) and
  show the median of the pairs' ratios.
- decisions: transcript growth by hand (each round appends the answer, a feedback line and a new question of about
  --turn-tokens tokens): decisions/s of the original approach (one `generate` per decision, batch 1), batched
  generate and score mode, reuse off and on, in the last round.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from atp_graph.policies import DecisionRequest, HFPolicy, build_tiny_model, load_policy  # noqa: E402
from atp_graph.policies.kvcache import PrefixStore, StoreStats  # noqa: E402


class Recorder:
    """A policy wrapper that records every decide_batch call (one per round): its requests, mode and seconds."""

    def __init__(self, policy: HFPolicy) -> None:
        self.policy, self.name = policy, policy.name
        self.calls: list[tuple[Sequence[DecisionRequest], str, float]] = []

    def decide_batch(self, requests: Sequence[DecisionRequest], *, mode: str = "generate") -> list[Any]:
        t = time.perf_counter()
        out = self.policy.decide_batch(requests, mode=mode)  # type: ignore[arg-type]
        self.calls.append((list(requests), mode, time.perf_counter() - t))
        return out

    def complete_batch(self, conversations: Sequence[Any], *, max_new_tokens: int = 96) -> list[str]:
        return self.policy.complete_batch(conversations, max_new_tokens=max_new_tokens)


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def pair(spec: str, **kw: Any) -> tuple[HFPolicy, HFPolicy]:
    """Reuse off and on, sharing one model."""
    if spec == "tiny":
        base = HFPolicy.from_pretrained(build_tiny_model(tempfile.mkdtemp()), prefix_cache=False, **kw)
    else:
        base = load_policy(spec, prefix_cache=False, **kw)
    return base, HFPolicy(base.model, base.tokenizer, name=base.name, **kw)


def run_testbed(kind: str, policy: HFPolicy, args: argparse.Namespace) -> tuple[Recorder, float]:
    from atp_graph import DiffuseConfig, ExploreConfig, run_diffuse, run_explore

    rec = Recorder(policy)
    start = time.perf_counter()
    if kind == "diffuse":
        cfg = DiffuseConfig(model="smollm2", decision="score", agents=args.agents, rounds=args.rounds or 4)
        run_diffuse(cfg, policy=rec, progress=False)
    else:
        cfg = ExploreConfig(model="smollm2", decision="score", rounds=args.rounds or 6, limit=args.items)
        run_explore(cfg, policy=rec, progress=False)
    return rec, time.perf_counter() - start


def testbed(kind: str, off: HFPolicy, on: HFPolicy, args: argparse.Namespace) -> None:
    """Run the testbed once (reuse on) to record every round's requests, then replay the rounds in order through
    both policies, reuse off and reuse on back to back in each round, so that both see the same machine load (a
    shared CPU's speed drifts by several times over minutes). The requests are the same in both (identical p values
    give identical choices), so the replay is the run."""
    rec, wall = run_testbed(kind, on, args)
    overhead = wall - sum(secs for _, _, secs in rec.calls)  # graphs, games, events: everything but the model
    runs_off: list[list[float]] = []
    runs_on: list[list[float]] = []
    dp = 0.0
    for _ in range(args.repeats):  # a whole run each time: reuse on starts from an empty store
        on.store.clear()
        on.store.stats = type(on.store.stats)()
        runs_off.append([])
        runs_on.append([])
        for reqs, mode, _ in rec.calls:
            a, d_off = timed(lambda reqs=reqs, mode=mode: off.decide_batch(reqs, mode=mode))
            b, d_on = timed(lambda reqs=reqs, mode=mode: on.decide_batch(reqs, mode=mode))
            runs_off[-1].append(a)
            runs_on[-1].append(b)
            dp = max([dp, *(abs(x.p_target - y.p_target) for x, y in zip(d_off, d_on, strict=True))])
    t_off = [statistics.median(col) for col in zip(*runs_off, strict=True)]
    t_on = [statistics.median(col) for col in zip(*runs_on, strict=True)]
    n = sum(len(reqs) for reqs, _, _ in rec.calls)
    what = f"{args.agents} agents" if kind == "diffuse" else f"{args.items} items"
    print(f"\n{kind} ({what}, {len(t_off)} rounds, score mode, transcript memory) on {off.name}")
    if args.repeats > 1:
        print(f"seconds are each round's median over {args.repeats} replays of the whole run")
    print(
        f"{'round':>5} {'reuse off s':>12} {'reuse on s':>11} {'speed-up':>9} {'off / round 1':>14} "
        f"{'on / round 1':>13}"
    )
    for r, (a, b) in enumerate(zip(t_off, t_on, strict=True), 1):
        print(f"{r:>5} {a:>12.2f} {b:>11.2f} {a / b:>8.2f}x {a / t_off[0]:>13.2f}x {b / t_on[0]:>12.2f}x")
    off_all, on_all = sum(t_off), sum(t_on)
    print(f"{'all':>5} {off_all:>12.2f} {on_all:>11.2f} {off_all / on_all:>8.2f}x   (model calls)")
    e2e_off, e2e_on = off_all + overhead, on_all + overhead
    print(f"{'run':>5} {e2e_off:>12.2f} {e2e_on:>11.2f} {e2e_off / e2e_on:>8.2f}x   (end to end: + {overhead:.1f} s)")
    print(f"largest |p(reuse on) - p(reuse off)| over {n} decisions: {dp:.2e}")
    s = on.store.stats
    print(f"prompt tokens reused {s.reused}, computed {s.computed}; peak KV held {s.peak_bytes / 2**20:.0f} MiB")
    last_vs_first(on, rec, args.pairs)


def fork(store: PrefixStore) -> PrefixStore:
    """A copy of a store that shares its KV tensors (never changed in place) but not its bookkeeping."""
    index = {h: set(ids) for h, ids in store._index.items()}
    return dataclasses.replace(store, stats=StoreStats(), _entries=OrderedDict(store._entries), _index=index)


def last_vs_first(on: HFPolicy, rec: Recorder, pairs: int) -> None:
    """The last round's time over round 1's, measured as adjacent pairs: round 1 from an empty store, then the last
    round from the store as the run left it after the round before. A pair takes seconds, so the host's drift
    (minutes) cancels in each pair's ratio; the median of the pairs is shown."""
    *head, last = rec.calls
    on.store.clear()
    for reqs, mode, _ in head:
        on.decide_batch(reqs, mode=mode)
    before_last = fork(on.store)
    firsts, lasts = [], []
    for _ in range(pairs):
        on.store = PrefixStore(on.store.budget)
        firsts.append(timed(lambda: on.decide_batch(rec.calls[0][0], mode=rec.calls[0][1]))[0])
        on.store = fork(before_last)
        lasts.append(timed(lambda: on.decide_batch(last[0], mode=last[1]))[0])
    ratios = sorted(b / a for a, b in zip(firsts, lasts, strict=True))
    r, mid = len(rec.calls), statistics.median
    print(
        f"round {r} / round 1 with reuse on, {pairs} adjacent pairs: median {mid(ratios):.2f}x (range "
        f"{ratios[0]:.2f}-{ratios[-1]:.2f}; round 1 median {mid(firsts):.2f} s, round {r} median {mid(lasts):.2f} s)"
    )


def decisions(off: HFPolicy, on: HFPolicy, args: argparse.Namespace) -> None:
    """Transcript growth by hand: decisions/s in the last round, for each path."""
    import random

    rng = random.Random(0)
    vocab = min(off.model.config.vocab_size, len(off.tokenizer))
    words = [off.tokenizer.decode([rng.randrange(100, vocab - 1)]) for _ in range(4000)]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    system = text(args.prompt_tokens)
    convs = [[{"role": "system", "content": system}] for _ in range(args.agents)]
    rows: list[tuple[str, int, float]] = []
    for r in range(args.rounds or 3):
        ask = [text(args.turn_tokens) + ' Answer {"choice": "Store A"} or {"choice": "Store B"}' for _ in convs]
        reqs = [
            DecisionRequest(
                messages=(*c, {"role": "user", "content": q}),
                options=("Store A", "Store B"),
                target="Store B",
                seed=i,
                continues=True,
            )
            for i, (c, q) in enumerate(zip(convs, ask, strict=True))
        ]
        last = r == (args.rounds or 3) - 1
        for name, pol in (("reuse off", off), ("reuse on", on)):
            t = time.perf_counter()
            gen = pol.decide_batch(reqs)
            t_gen = time.perf_counter() - t
            t = time.perf_counter()
            pol.decide_batch(reqs, mode="score")
            t_score = time.perf_counter() - t
            if last:
                rows += [(f"batched generate, {name}", len(reqs), t_gen), (f"score mode, {name}", len(reqs), t_score)]
        if last:
            model, cfg = off.model, copy.deepcopy(off._gen_config)
            cfg.max_new_tokens = args.new_tokens
            nb = max(1, args.agents // 4)
            t = time.perf_counter()
            for req in reqs[:nb]:  # the original approach: one generate per decision, batch 1, full prompt
                ids = torch.tensor([off._render(req.messages)], device=off.device)
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
            rows.insert(0, ("original: generate per decision, batch 1", nb, time.perf_counter() - t))
        for i, (c, d) in enumerate(zip(convs, gen, strict=True)):
            convs[i] = [*c, {"role": "user", "content": ask[i]}, {"role": "assistant", "content": d.text}]
            convs[i].append({"role": "user", "content": f"Result: {text(12)}"})
    prompt = len(off._render(reqs[0].messages))
    print(
        f"\ndecisions in round {args.rounds or 3} of a transcript ({args.agents} agents, ~{prompt}-token prompts, "
        f"+{args.turn_tokens} tokens a round, up to {args.new_tokens} new tokens) on {off.name}"
    )
    base = rows[0][1] / rows[0][2]
    print(f"{'path':<44} {'decisions':>9} {'seconds':>8} {'decisions/s':>12} {'x original':>11}")
    for name, n, secs in rows:
        print(f"{name:<44} {n:>9} {secs:>8.2f} {n / secs:>12.2f} {n / secs / base:>11.1f}")
    by = {name: n / secs for name, n, secs in rows}
    print(
        f"reuse on / off: batched generate {by['batched generate, reuse on'] / by['batched generate, reuse off']:.2f}x"
        f", score mode {by['score mode, reuse on'] / by['score mode, reuse off']:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="smollm2 | tiny | hf:<folder>")
    ap.add_argument("--workload", choices=["all", "diffuse", "explore", "decisions"], default="all")
    ap.add_argument("--agents", type=int, default=24, help="diffuse: graph size; decisions: agents (default 16)")
    ap.add_argument("--items", type=int, default=16, help="explore: items")
    ap.add_argument("--rounds", type=int, default=None, help="default: diffuse 4, explore 6, decisions 3")
    ap.add_argument("--prompt-tokens", type=int, default=300, help="decisions: system prompt length")
    ap.add_argument("--turn-tokens", type=int, default=60, help="decisions: new question length per round")
    ap.add_argument("--new-tokens", type=int, default=32, help="decisions: answer budget")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--repeats", type=int, default=3, help="diffuse, explore: replays of the run; each round's median is shown"
    )
    ap.add_argument("--pairs", type=int, default=5, help="diffuse, explore: (round 1, last round) pairs timed")
    args = ap.parse_args()
    torch.manual_seed(0)
    off, on = pair(args.model, batch_size=args.batch_size, max_new_tokens=args.new_tokens, continuous=False)
    print(f"torch threads {torch.get_num_threads()}, KV budget {on.kv_budget / 2**30:.1f} GiB")
    if args.workload in ("all", "diffuse"):
        testbed("diffuse", off, on, args)
    if args.workload in ("all", "explore"):
        testbed("explore", off, on, args)
    if args.workload in ("all", "decisions"):
        if args.workload == "all" or "--agents" not in sys.argv:
            args.agents = 16
        decisions(off, on, args)


if __name__ == "__main__":
    main()
