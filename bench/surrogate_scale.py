"""Surrogate population scale: wall time and peak memory of `diffuse --model sim` vs number of agents and rounds.

Each run is its own process (so peak RSS is that run's), exactly as the CLI runs it, writing a run folder. Memory
must not grow with rounds (events are streamed to and from events.jsonl): compare the "x peak vs fewest rounds"
column.

    .venv/bin/python bench/surrogate_scale.py                 # 100, 1,000, 10,000 agents x 20 rounds
    .venv/bin/python bench/surrogate_scale.py --agents 100000 --rounds 5,20   # the load tier
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from click.testing import CliRunner
sys.path.insert(0, {root!r})
from cli import cli
t1 = time.perf_counter()
res = CliRunner().invoke(cli, ["diffuse", "--model", "sim", "--agents", "{n}", "--rounds", "{rounds}",
                               "--topology", "small-world", "--out", {out!r}], catch_exceptions=False)
t2 = time.perf_counter()
assert res.exit_code == 0, res.output
print(json.dumps({{"import_s": t1 - t0, "run_s": t2 - t1, "total_s": t2 - t0,
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", default="100,1000,10000", help="comma-separated population sizes")
    ap.add_argument("--rounds", default="20", help="comma-separated round counts")
    args = ap.parse_args()
    root = str(Path(__file__).resolve().parents[1])
    rows = []
    sizes, counts = [int(x) for x in args.agents.split(",")], [int(x) for x in args.rounds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for rounds in counts:
                code = CHILD.format(root=root, n=n, rounds=rounds, out=f"{tmp}/run{n}-{rounds}")
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
                rows.append((n, rounds, json.loads(out.stdout.strip().splitlines()[-1])))
    print("SURROGATE (non-LLM) policy: python cli.py diffuse --model sim --topology small-world --rounds R --agents N")
    print(
        f"{'agents':>8} {'rounds':>6} {'total s':>9} {'run s':>8} {'import s':>9} {'peak MB':>8} "
        f"{'us/agent-round':>15} {'x time vs first':>16} {'x agents':>9} {'x peak vs fewest rounds':>24}"
    )
    _, _, first = rows[0]
    fewest = {n: r["peak_mb"] for n, k, r in reversed(rows) if k == min(counts)}
    for n, rounds, r in rows:
        per = r["run_s"] / (n * rounds) * 1e6
        print(
            f"{n:>8} {rounds:>6} {r['total_s']:>9.2f} {r['run_s']:>8.2f} {r['import_s']:>9.2f} {r['peak_mb']:>8.0f} "
            f"{per:>15.1f} {r['run_s'] / first['run_s']:>16.1f} {n / rows[0][0]:>9.0f} "
            f"{r['peak_mb'] / fewest[n]:>24.2f}"
        )


if __name__ == "__main__":
    main()
