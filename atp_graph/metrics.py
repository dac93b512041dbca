"""Rates with Wilson intervals, tipping rounds, and per-round summaries of event records."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


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


def by_round(events: Iterable[dict], *, field: str, positive: str, rounds: int) -> list[Rate]:
    """Per round, the share of events whose ``field`` equals ``positive`` (all events count in the denominator)."""
    k = [0] * rounds
    n = [0] * rounds
    for e in events:
        i = e["round"] - 1
        n[i] += 1
        k[i] += e[field] == positive
    return [wilson(k[i], n[i]) for i in range(rounds)]


def mean_by_round(events: Iterable[dict], *, field: str, rounds: int) -> list[Rate]:
    """Per round, the mean of a probability ``field`` as an expected rate (events without it are skipped)."""
    s = [0.0] * rounds
    n = [0] * rounds
    for e in events:
        if e.get(field) is not None:
            s[e["round"] - 1] += e[field]
            n[e["round"] - 1] += 1
    return [wilson(s[i], n[i]) for i in range(rounds)]


def intervals_overlap(a: Rate, b: Rate) -> bool:
    """Whether two rates' intervals overlap (a conservative 'not clearly different')."""
    return not (a.high < b.low or b.high < a.low)
