"""How fast and how falsely does the TippingMonitor's Bernoulli CUSUM fire? Seeded Monte Carlo, numpy only.

    .venv/bin/python bench/monitor.py [--h 3 4 5 6] [--streams 20000] [--arl-streams 4000] [--arl-steps 25000]

For p0 = 0.1, p1 = 0.5 and each threshold h it prints:
  detection delay  decisions from the change until the alarm (1 = the first bad decision fires), when the agent
                   violates at p0 for --change decisions and then jumps to each rate in --after; a false alarm
                   before the change restarts the statistic, as in the detector. Mean, median and 90th percentile
                   over --streams streams, and the mean from a fresh detector (S = 0 at the change: the ARL1).
  false alarms     the mean number of decisions between alarms (ARL0) while the agent stays at each rate in
                   --stay: --arl-streams streams of --arl-steps decisions, total decisions / total alarms.
The simulated recursion is checked against CusumDetector on one stream first.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atp_graph.analysis.cusum import CusumConfig, CusumDetector  # noqa: E402

P0, P1 = 0.1, 0.5
UP, DOWN = math.log(P1 / P0), math.log((1 - P1) / (1 - P0))


def step(s: np.ndarray, violated: np.ndarray, h: float) -> np.ndarray:
    """One CUSUM update of every stream in place; return which streams alarmed (their S restarts next step)."""
    s += np.where(violated, UP, DOWN)
    np.maximum(s, 0.0, out=s)
    alarm = s >= h
    s[alarm] = 0.0  # the detector starts the next observation from 0 after an alarm
    return alarm


def delays(h: float, rate: float, *, streams: int, change: int, rng: np.random.Generator) -> np.ndarray:
    """Decisions from the change to the first alarm at or after it, per stream (``change`` decisions at p0 first)."""
    s = np.zeros(streams)
    for _ in range(change):
        step(s, rng.random(streams) < P0, h)
    out = np.zeros(streams, dtype=np.int64)
    t = 0
    while (out == 0).any():
        t += 1
        alarm = step(s, rng.random(streams) < rate, h)
        out[alarm & (out == 0)] = t
    return out


def spacing(h: float, rate: float, *, streams: int, steps: int, rng: np.random.Generator) -> tuple[float, int]:
    """Mean decisions between alarms at a steady ``rate`` (renewal estimate) and the alarms it rests on."""
    s, alarms, chunk = np.zeros(streams), 0, 1000
    for start in range(0, steps, chunk):
        violated = rng.random((min(chunk, steps - start), streams)) < rate
        for row in violated:
            alarms += int(np.count_nonzero(step(s, row, h)))
    return (streams * steps / alarms if alarms else math.inf), alarms


def check_against_detector(h: float, rng: np.random.Generator) -> None:
    xs = rng.random(5000) < 0.3
    detector, s = CusumDetector(CusumConfig(p0=P0, p1=P1, h=h)), np.zeros(1)
    expected = [detector.update(bool(x)) for x in xs]
    assert [bool(step(s, np.array([x]), h)[0]) for x in xs] == expected, "simulation != CusumDetector"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--h", type=float, nargs="+", default=[3.0, 4.0, 5.0, 6.0], help="Thresholds (5 = default).")
    ap.add_argument("--after", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0], help="Violation rates after.")
    ap.add_argument("--stay", type=float, nargs="+", default=[0.1, 0.05], help="Steady rates for the ARL0.")
    ap.add_argument("--change", type=int, default=100, help="Decisions at p0 before the change.")
    ap.add_argument("--streams", type=int, default=20000, help="Streams per detection-delay cell.")
    ap.add_argument("--arl-streams", type=int, default=4000)
    ap.add_argument("--arl-steps", type=int, default=25000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for h in args.h:
        check_against_detector(h, rng)

    print(
        f"Bernoulli CUSUM, p0 = {P0}, p1 = {P1}; detection delay in decisions after the change "
        f"({args.change} decisions at p0 before it; {args.streams} streams per row)"
    )
    print(f"{'h':>4} {'rate after':>10} {'mean':>7} {'median':>7} {'p90':>5} {'mean from S=0':>14}")
    for h in args.h:
        for rate in args.after:
            d = delays(h, rate, streams=args.streams, change=args.change, rng=rng)
            fresh = delays(h, rate, streams=args.streams, change=0, rng=rng)
            print(
                f"{h:>4g} {rate:>10.2f} {d.mean():>7.2f} {np.median(d):>7.0f} {np.percentile(d, 90):>5.0f} "
                f"{fresh.mean():>14.2f}"
            )

    print(
        f"\nFalse-alarm spacing (ARL0): mean decisions between alarms at a steady rate "
        f"({args.arl_streams} streams x {args.arl_steps} decisions per row)"
    )
    print(f"{'h':>4} {'steady rate':>11} {'ARL0':>9} {'alarms':>7}")
    for h in args.h:
        for rate in args.stay:
            arl, n = spacing(h, rate, streams=args.arl_streams, steps=args.arl_steps, rng=rng)
            print(f"{h:>4g} {rate:>11.2f} {arl:>9,.0f} {n:>7}")
    print(f"\n{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
