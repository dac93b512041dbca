"""Rates with Wilson intervals, tipping rounds, and per-round summaries of event records."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

Z95 = 1.959963984540054
E = TypeVar("E")


@dataclass(frozen=True)
class Rate:
    """A proportion with its 95% Wilson score interval."""

    k: float
    n: int
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        """As JSON holds it: a round without a measurement (``n`` 0) has ``null`` rate and bounds, never NaN."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {"k": self.k, "n": self.n, "rate": num(self.value), "low": num(self.low), "high": num(self.high)}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> Rate:
        """Inverse of :meth:`as_dict` (reads summaries back)."""

        def num(x: float | None) -> float:
            return math.nan if x is None else x

        return cls(d["k"], int(d["n"]), num(d["rate"]), num(d["low"]), num(d["high"]))

    def __str__(self) -> str:
        return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}]" if self.n else "n/a"


def wilson(k: float, n: int, *, z: float = Z95) -> Rate:
    """Wilson score interval for ``k`` successes in ``n`` trials (``k`` may be fractional: an expected count)."""
    if n <= 0:
        return Rate(k, 0, math.nan, math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    return Rate(k, n, p, max(0.0, centre - half), min(1.0, centre + half))


def tipping_round(rates: Sequence[float], *, level: float = 0.5) -> int | None:
    """First round (1-based) whose rate is at or above ``level``, or ``None``."""
    return next((i + 1 for i, r in enumerate(rates) if not math.isnan(r) and r >= level), None)


class RoundCounts:
    """Per-round sums and counts, filled one event at a time (so a summary reads a run's events once, streaming)."""

    def __init__(self, rounds: int, *, mean: bool = False):
        self.k: list[float] = [0.0 if mean else 0] * rounds
        """Per round: hits (whole numbers), or with ``mean`` the sum of probabilities."""
        self.n = [0] * rounds

    def add(self, round_no: int, value: float | bool) -> None:
        """Count one event of round ``round_no`` (from 1) with ``value``: a hit (bool) or a probability."""
        self.k[round_no - 1] += value
        self.n[round_no - 1] += 1

    def rates(self) -> list[Rate]:
        """Per round, the share (or mean) with its Wilson interval."""
        return [wilson(k, n) for k, n in zip(self.k, self.n, strict=True)]


def rate_by_round(events: Iterable[E], *, rounds: int, hit: Callable[[E], bool]) -> list[Rate]:
    """Per round, the share of events for which ``hit`` holds (every event counts in the denominator)."""
    counts = RoundCounts(rounds)
    for e in events:
        counts.add(e.round, bool(hit(e)))  # type: ignore[attr-defined]
    return counts.rates()


def mean_by_round(events: Iterable[E], *, rounds: int, value: Callable[[E], float | None]) -> list[Rate]:
    """Per round, the mean of a probability as an expected rate (events where ``value`` is ``None`` are skipped)."""
    counts = RoundCounts(rounds, mean=True)
    for e in events:
        v = value(e)
        if v is not None:
            counts.add(e.round, v)  # type: ignore[attr-defined]
    return counts.rates()


def bootstrap_mean(
    values: Sequence[float],
    *,
    groups: Sequence[Hashable] | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> Rate:
    """The mean of ``values`` with a 95% percentile bootstrap interval.

    The values are resampled with replacement, or, with ``groups`` (one label per value), whole groups are: use it
    when the values of a group are not independent (the items of one job differ only in the amounts paid), or the
    interval is too narrow. Pass per-unit differences for a paired comparison (e.g. each item's round-6 minus
    round-1 p(violate)): what the units share cancels. ``k`` is the sum; the same values and seed always give the
    same interval.
    """
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if not len(x):
        return Rate(0.0, 0, math.nan, math.nan, math.nan)
    labels = list(range(len(x))) if groups is None else list(groups)
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} group labels for {len(x)} values")
    index = {g: i for i, g in enumerate(dict.fromkeys(labels))}
    of = np.array([index[g] for g in labels])
    sums, counts = np.bincount(of, weights=x), np.bincount(of).astype(np.float64)
    pick = np.random.default_rng(seed).integers(0, len(index), size=(resamples, len(index)))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return Rate(float(x.sum()), len(x), float(x.mean()), float(low), float(high))


def intervals_overlap(a: Rate, b: Rate) -> bool:
    """Whether two rates' intervals overlap (a conservative 'not clearly different')."""
    return not (a.high < b.low or b.high < a.low)
