"""Rates with Wilson intervals, tipping rounds, and per-round summaries of event records."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
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
        return {"k": self.k, "n": self.n, "rate": self.value, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> Rate:
        """Inverse of :meth:`as_dict` (reads summaries back)."""
        return cls(d["k"], int(d["n"]), d["rate"], d["low"], d["high"])

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


def rate_by_round(events: Iterable[E], *, rounds: int, hit: Callable[[E], bool]) -> list[Rate]:
    """Per round, the share of events for which ``hit`` holds (every event counts in the denominator)."""
    k = [0] * rounds
    n = [0] * rounds
    for e in events:
        i = e.round - 1  # type: ignore[attr-defined]
        n[i] += 1
        k[i] += bool(hit(e))
    return [wilson(k[i], n[i]) for i in range(rounds)]


def mean_by_round(events: Iterable[E], *, rounds: int, value: Callable[[E], float | None]) -> list[Rate]:
    """Per round, the mean of a probability as an expected rate (events where ``value`` is ``None`` are skipped)."""
    s = [0.0] * rounds
    n = [0] * rounds
    for e in events:
        v = value(e)
        if v is not None:
            s[e.round - 1] += v  # type: ignore[attr-defined]
            n[e.round - 1] += 1  # type: ignore[attr-defined]
    return [wilson(s[i], n[i]) for i in range(rounds)]


def bootstrap_mean(values: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> Rate:
    """The mean of ``values`` with a 95% percentile bootstrap interval (the values resampled with replacement).

    Pass per-unit differences for a paired comparison (e.g. each item's round-6 minus round-1 p(violate)): the
    interval then speaks of the units, with what they share cancelled. ``k`` is the sum; the same values and seed
    always give the same interval.
    """
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if not len(x):
        return Rate(0.0, 0, math.nan, math.nan, math.nan)
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return Rate(float(x.sum()), len(x), float(x.mean()), float(low), float(high))


def intervals_overlap(a: Rate, b: Rate) -> bool:
    """Whether two rates' intervals overlap (a conservative 'not clearly different')."""
    return not (a.high < b.low or b.high < a.low)
