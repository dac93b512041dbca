"""Cost of keeping agent memory on LangGraph threads: seconds per round for N LLM-path agents (tiny model, score mode).

Three runs of the same explore workload, side by side:
  none    the agent graph without a checkpointer (memory is lost between rounds, prompts stay short: a floor)
  memory  InMemorySaver (the Python API default)
  sqlite  AsyncSqliteSaver in the run folder (CLI runs): the checkpointer writes whose cost we bound (< 10% of a round)

    .venv/bin/python bench/checkpointer.py --agents 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from atp_graph.agents import LLMAgents  # noqa: E402
from atp_graph.config import ExploreConfig  # noqa: E402
from atp_graph.games import IndividualGame  # noqa: E402
from atp_graph.policies import load_policy  # noqa: E402
from atp_graph.policies.tiny import build_tiny_model  # noqa: E402
from atp_graph.run import play_rounds  # noqa: E402
from atp_graph.scenarios import individual_items, resolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="Run memory and sqlite this many times, alternating.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    policy = load_policy(f"hf:{build_tiny_model(tmp / 'tiny')}", max_new_tokens=8)
    items = [it for s in resolve(None, kind="individual") for it in individual_items(s)]
    items = [items[i % len(items)] for i in range(args.agents)]
    ids = [f"{it.key}/{i}" for i, it in enumerate(items)]
    cfg = ExploreConfig(model="tiny", decision="score")
    rows: dict[str, list[float]] = {}
    for mode in ("none", *["memory", "sqlite"] * args.repeats):
        game = IndividualGame(items, pattern="all_unsupervised", rounds=args.rounds, agent_ids=ids)
        agents = LLMAgents(policy, cfg, checkpoints=tmp / f"{mode}.sqlite" if mode == "sqlite" else None)
        if mode == "none":
            from atp_graph.agents import build_agent_graph

            async def no_saver(self, _ids):
                self.saver, self.graph = object(), build_agent_graph()

            agents._open = no_saver.__get__(agents)  # type: ignore[method-assign]
        t0 = time.perf_counter()
        play_rounds(game, agents, rounds=args.rounds, progress=False)
        rows.setdefault(mode, []).append((time.perf_counter() - t0) / args.rounds)
    best = {mode: min(times) for mode, times in rows.items()}
    print(
        f"{args.agents} LLM-path agents (tiny model, score mode), {args.rounds} rounds, seconds per round (best of "
        f"{args.repeats}):"
    )
    for mode, sec in best.items():
        runs = ", ".join(f"{t:.2f}" for t in rows[mode])
        print(f"  {mode:7} {sec:7.2f} s/round   ({sec / best['memory']:.2f}x memory)   runs: {runs}")
    over = (best["sqlite"] - best["memory"]) / best["sqlite"]
    print(f"disk checkpoint writes (sqlite - memory) = {over:.1%} of an sqlite round (target < 10%); 'none' carries")
    print("no memory, so its later rounds read short prompts: a floor for the compute, not the same workload")


if __name__ == "__main__":
    main()
