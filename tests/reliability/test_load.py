"""Memory under load: a run's memory does not grow with its rounds (events go to ``events.jsonl`` round by round and
summaries and plots stream them back), and the load sizes stay under stated ceilings.

The fast test compares two surrogate runs that differ only in rounds. The ``heavy`` tests (``make test-slow``) run
the load sizes of the README: 100,000 surrogate agents x 20 rounds, and 1,000 tiny-model agents in score mode with
a 256 MB KV budget. Each run is its own process, so its peak RSS is that run's alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SURROGATE_CEILING_MB = 1024
"""100,000 surrogate agents x 20 rounds (measured: 491 MB; 1,836 MB before events were streamed)."""
TINY_CEILING_MB = 2048
"""1,000 tiny-model agents x 3 rounds, score mode, ``--kv-budget 256MB``."""


def peak_mb(*args: str) -> tuple[int, Path]:
    """Run ``cli.py`` with ``args`` in a child process; its peak resident memory in MB and its run folder."""
    out = Path(args[args.index("--out") + 1])
    code = (
        "import resource, runpy, sys\n"
        f"sys.argv = ['cli.py', *{list(args)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'cli.py')!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATP_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-800:]
    return int(done.stdout.rsplit("PEAK", 1)[1]), out


def test_memory_does_not_grow_with_rounds(tmp_path):
    base = ["diffuse", "--model", "sim", "--agents", "20000", "--topology", "small-world"]
    short, _ = peak_mb(*base, "--rounds", "2", "--out", str(tmp_path / "short"))
    long, folder = peak_mb(*base, "--rounds", "10", "--out", str(tmp_path / "long"))
    # 8 more rounds are 160,000 more events (~100 MB held in lists before streaming); streamed, they cost nothing
    assert long - short < 40, f"peak {short} MB at 2 rounds, {long} MB at 10"
    summary = json.loads((folder / "summary.json").read_text())
    assert len(next(iter(summary["cells"].values()))["collective_rate"]) == 10
    assert (folder / "graph_rounds.png").stat().st_size > 0  # a 400-node part of the 20,000-node graph is drawn


@pytest.mark.heavy
def test_surrogate_100k_agents_20_rounds_under_the_ceiling(tmp_path):
    peak, folder = peak_mb(
        "diffuse", "--model", "sim", "--agents", "100000", "--rounds", "20", "--out", str(tmp_path / "run")
    )
    assert peak < SURROGATE_CEILING_MB, f"{peak} MB"
    assert sum(1 for _ in open(folder / "events.jsonl", encoding="utf-8")) == 100_000 * 20


@pytest.mark.heavy
def test_tiny_model_1000_agents_under_the_ceiling(tmp_path):
    peak, folder = peak_mb(
        "diffuse",
        "--model",
        f"tiny:{tmp_path / 'tiny'}",
        "--agents",
        "1000",
        "--rounds",
        "3",
        "--decision",
        "score",
        "--kv-budget",
        "256MB",
        "--out",
        str(tmp_path / "run"),
    )
    assert peak < TINY_CEILING_MB, f"{peak} MB"
    assert sum(1 for _ in open(folder / "events.jsonl", encoding="utf-8")) == 1000 * 3
