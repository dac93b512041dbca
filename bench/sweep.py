"""Wall time of one sweep, serial vs two local jobs vs Ray on this machine, printed side by side.

The sweep: the study's collective grid (``diffuse`` with ``paper_grid``: complete graph of 8, 3 rounds, t=2/4/6/8,
all 7 games) x 3 seeds x 2 evolution modes = 6 runs on the surrogate. Each mode runs the real command
(``python cli.py sweep run SPEC --out DIR``) in a fresh process, so the times include start-up (imports, worker
processes, Ray) and the report. ``--agents``/``--rounds`` make each run bigger, to see where parallelism pays.

    .venv/bin/python bench/sweep.py
    .venv/bin/python bench/sweep.py --agents 2000 --rounds 10 --topology small-world
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "serial (--jobs 1)": ["--jobs", "1"],
    "local (--jobs 2)": ["--jobs", "2"],
    "ray (local)": ["--executor", "ray"],
}


def spec_text(agents: int | None, rounds: int | None, topology: str | None) -> str:
    base = {"model": "sim"}
    base.update({k: v for k, v in (("agents", agents), ("rounds", rounds), ("topology", topology)) if v is not None})
    return (
        "command: diffuse\npaper_grid: true\n"
        f"base: {json.dumps(base)}\n"
        "grid:\n  seed: [0, 1, 2]\n  evolution: [transcript, reflection]\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=None, help="Agents per run (default: the paper grid's 8).")
    ap.add_argument("--rounds", type=int, default=None, help="Rounds per run (default: the paper grid's 3).")
    ap.add_argument("--topology", default=None, help="Graph (default: the paper grid's complete graph).")
    ap.add_argument("--modes", default=",".join(MODES), help="Comma-separated subset of the modes.")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "paper.yaml"
        spec.write_text(spec_text(args.agents, args.rounds, args.topology))
        reports = {}
        for mode in args.modes.split(","):
            out = Path(tmp) / mode.split()[0]
            cmd = [sys.executable, str(ROOT / "cli.py"), "sweep", "run", str(spec), "--out", str(out), *MODES[mode]]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"{mode} failed ({done.returncode}):\n{done.stderr[-2000:]}")
            runs = json.loads((out / "sweep.json").read_text())["runs"]
            work = sum(r["seconds"] for r in runs)
            reports[mode] = (out / "report.md").read_text()
            rows.append((mode, wall, work, len(runs)))
        same = len(set(reports.values())) == 1
    serial = rows[0][1]
    base = spec_text(args.agents, args.rounds, args.topology).splitlines()[2]
    print(f"sweep: paper grid x 3 seeds x 2 evolution modes on the surrogate, {rows[0][3]} runs ({base})")
    print(f"{'mode':<20} {'wall s':>8} {'speed-up':>9} {'sum of run s':>13}")
    for mode, wall, work, _ in rows:
        print(f"{mode:<20} {wall:>8.1f} {serial / wall:>8.2f}x {work:>13.1f}")
    print(f"reports identical across modes: {same}")


if __name__ == "__main__":
    main()
