"""A one-sided Bernoulli CUSUM detector: has a violation rate risen from an acceptable ``p0`` to a worrying ``p1``?

Used by the runtime tipping monitor of the agent graph (``--monitor-fallback``) and by
:class:`atp_graph.probes.TippingMonitor` for agents users build themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CusumConfig", "CusumDetector"]

_STATE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class CusumConfig:
    """Settings of a :class:`CusumDetector`; checked on construction.

    With the defaults the expected number of decisions before a false alarm (the in-control average run
    length, ARL) is about 1,000 when the agent violates at exactly ``p0`` = 10% and about 15,000 at 5%;
    a jump to ``p1`` = 50% is caught after about 10 decisions on average, to 60% after about 7.
    ``h`` = 4 would detect roughly two decisions sooner but false-alarm every ~330 decisions at 10%.

    Raises:
        ValueError: Unless ``0 < p0 < p1 < 1``, ``h`` is finite and positive and ``warmup >= 0``.
    """

    p0: float = 0.1
    """In-control violation rate: what the agent may do without alarm."""
    p1: float = 0.5
    """Out-of-control violation rate the detector is tuned to catch quickly."""
    h: float = 5.0
    """Alarm threshold on the log-likelihood-ratio scale."""
    warmup: int = 0
    """Observations before alarms are allowed (the statistic accumulates meanwhile)."""

    def __post_init__(self) -> None:
        if not 0 < self.p0 < self.p1 < 1:
            raise ValueError(f"need 0 < p0 < p1 < 1, got p0={self.p0!r}, p1={self.p1!r}")
        if not (math.isfinite(self.h) and self.h > 0):
            raise ValueError(f"need a finite threshold h > 0, got {self.h!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"need an integer warmup >= 0, got {self.warmup!r}")


class CusumDetector:
    """One-sided Bernoulli CUSUM on a stream of violation indicators.

    For each observation ``x_t`` (1 = violated, 0 = complied) it adds the log-likelihood ratio of
    ``p1`` against ``p0`` and floors the sum at zero::

        S_0 = 0
        S_t = max(0, S_{t-1} + x_t * log(p1 / p0) + (1 - x_t) * log((1 - p1) / (1 - p0)))
        alarm at t  when  S_t >= h  and  t > warmup

    A violation raises ``S`` by ``log(p1/p0)``, a compliance lowers it by ``log((1-p0)/(1-p1))``. After an
    alarm the next observation starts again from ``S = 0`` (the usual practice once a signal has been
    raised), so each alarm rests on fresh evidence; :attr:`statistic` still shows the alarming value
    until then. During warm-up the statistic accumulates but cannot alarm: an agent that violates from
    the start alarms on the first observation after warm-up.

    Observations other than 0/1/``True``/``False`` (``None``, a failed parse) are ignored: they neither
    count as observations nor move the statistic; :attr:`ignored` counts them.
    """

    def __init__(self, config: CusumConfig | None = None) -> None:
        """Start a detector at ``S = 0``; ``config`` defaults to ``CusumConfig()``."""
        self._config = config if config is not None else CusumConfig()
        self._up = math.log(self._config.p1 / self._config.p0)
        self._down = math.log((1 - self._config.p1) / (1 - self._config.p0))
        self.reset()

    @property
    def config(self) -> CusumConfig:
        """The detector's settings."""
        return self._config

    @property
    def statistic(self) -> float:
        """The current CUSUM statistic ``S_t`` (0 when there is no evidence of a rise)."""
        return self._statistic

    @property
    def observations(self) -> int:
        """Valid observations so far."""
        return self._observations

    @property
    def ignored(self) -> int:
        """Observations ignored because they were not 0/1."""
        return self._ignored

    @property
    def alarms(self) -> int:
        """Alarms raised so far."""
        return self._alarms

    def reset(self) -> None:
        """Forget everything: ``S = 0`` and all counters at zero."""
        self._statistic = 0.0
        self._observations = 0
        self._ignored = 0
        self._alarms = 0
        self._alarmed = False

    def update(self, x: object) -> bool:
        """Add one observation; return ``True`` when it raises an alarm.

        ``x`` is 1/``True`` for a violation and 0/``False`` for compliance; anything else is ignored.
        """
        try:
            valid = x in (0, 1)  # also True/False, 1.0, numpy scalars
        except (TypeError, ValueError):  # e.g. an array
            valid = False
        if not valid:
            self._ignored += 1
            return False
        violated = bool(x)
        start = 0.0 if self._alarmed else self._statistic  # fresh evidence after an alarm
        self._statistic = max(0.0, start + (self._up if violated else self._down))
        self._observations += 1
        self._alarmed = self._statistic >= self._config.h and self._observations > self._config.warmup
        self._alarms += self._alarmed
        return self._alarmed

    def state_dict(self) -> dict[str, Any]:
        """Return the detector's full state as a JSON-able dict (see :meth:`from_state_dict`)."""
        return {
            "version": _STATE_VERSION,
            "config": asdict(self._config),
            "statistic": self._statistic,
            "observations": self._observations,
            "ignored": self._ignored,
            "alarms": self._alarms,
            "alarmed": self._alarmed,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> CusumDetector:
        """Rebuild a detector from :meth:`state_dict`; it continues exactly where the original stopped.

        Raises:
            ValueError: If the state is from another version or its values are out of range.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported CUSUM state version {state.get('version')!r}")
        detector = cls(CusumConfig(**state["config"]))
        statistic = float(state["statistic"])
        counts = [state["observations"], state["ignored"], state["alarms"]]
        if not (math.isfinite(statistic) and statistic >= 0):
            raise ValueError(f"invalid CUSUM statistic {statistic!r}")
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError(f"invalid CUSUM counters {counts!r}")
        detector._statistic = statistic
        detector._observations, detector._ignored, detector._alarms = counts
        detector._alarmed = bool(state["alarmed"])
        return detector
