"""How much a rate can be trusted: the answers that named no option and the answers cut off at the token budget.

A rate that rests on invalid or truncated answers must say so wherever it appears (summary, table, plot, CLI):
:func:`answer_quality` computes both per round and the warnings the testbeds print, and :func:`warning_lines`
puts those warnings on top of a Markdown table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .metrics import Rate, RoundCounts

INVALID_WARN = 0.2
"""Warn when more than this share of answers named no option."""
TRUNCATED_WARN = 0.05
"""Warn when more than this share of generated answers was cut off at the token budget."""


def invalid_warning(bad: int, n: int, counted_as: str) -> str:
    """The sentence for ``bad`` of ``n`` answers naming no option."""
    return f"{bad} of {n} answers ({bad / n:.0%}) named no option, so the rates count them as {counted_as}"


class QualityCounts:
    """Invalid and truncated answers per round, filled one event at a time (see :func:`answer_quality`)."""

    def __init__(self, rounds: int):
        self.invalid = RoundCounts(rounds)
        self.cut = RoundCounts(rounds)
        """Over the answers a model generated (events whose ``finish`` is known)."""

    def add(self, event: Any, *, invalid: bool) -> None:
        self.invalid.add(event.round, invalid)
        finish = getattr(event, "finish", None)
        if finish is not None:
            self.cut.add(event.round, finish == "length")

    def result(self, *, counted_as: str, on_truncated: str = "parse") -> dict[str, Any]:
        """The per-round rates and the warnings they call for (the ``answer_quality`` dict)."""
        warnings = []
        n_bad, n = sum(self.invalid.k), sum(self.invalid.n)
        n_cut, n_gen = sum(self.cut.k), sum(self.cut.n)
        if n_gen and n_cut / n_gen > TRUNCATED_WARN:
            treated = "parsed as far as they go" if on_truncated == "parse" else "invalid"
            warnings.append(
                f"{n_cut} of {n_gen} answers ({n_cut / n_gen:.0%}) were cut off at the token budget (truncated, "
                f"{treated}): raise --max-new-tokens; the rates measure truncation as much as drift"
            )
        if n and n_bad / n > INVALID_WARN:
            warnings.append(invalid_warning(n_bad, n, counted_as))
        return {
            "invalid_rate": [r.as_dict() for r in self.invalid.rates()],
            "truncated_rate": [r.as_dict() for r in self.cut.rates()] if n_gen else None,
            "warnings": warnings,
        }


def answer_quality(
    events: Iterable[Any], *, rounds: int, invalid: Callable[[Any], bool], counted_as: str, on_truncated: str = "parse"
) -> dict[str, Any]:
    """Per-round invalid and truncated rates (Wilson intervals) and the warnings they call for.

    ``truncated_rate`` is over the answers a model generated (events whose ``finish`` is known), ``None`` when
    there are none (score mode, the surrogate).
    """
    counts = QualityCounts(rounds)
    for e in events:
        counts.add(e, invalid=bool(invalid(e)))
    return counts.result(counted_as=counted_as, on_truncated=on_truncated)


def quality_rows(quality: dict[str, Any]) -> dict[str, list[Rate]]:
    """Table rows for the invalid and (when known) truncated rates."""
    rows = {"invalid rate": [Rate.from_dict(d) for d in quality["invalid_rate"]]}
    if quality["truncated_rate"]:
        rows["truncated rate"] = [Rate.from_dict(d) for d in quality["truncated_rate"]]
    return rows


def quality_series(summary: dict[str, Any], invalid: str = "invalid rate (no option named)") -> dict[str, list[Rate]]:
    """The series a plot adds so that a rate resting on invalid or cut-off answers says so in the picture too: the
    invalid rate (labelled ``invalid``) and the truncated rate, each only when some answer was."""
    series = {}
    if any(d["k"] for d in summary["invalid_rate"]):
        series[invalid] = [Rate.from_dict(d) for d in summary["invalid_rate"]]
    if summary.get("truncated_rate") and any(d["k"] for d in summary["truncated_rate"]):
        series["truncated (cut off at the token budget)"] = [Rate.from_dict(d) for d in summary["truncated_rate"]]
    return series


def warning_lines(warnings: Sequence[str]) -> str:
    """Markdown block quotes, one per warning (empty when there is none)."""
    return "".join(f"> **Warning:** {w}\n>\n" for w in warnings) + ("\n" if warnings else "")
