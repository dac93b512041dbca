"""Summaries and pictures of the individual game: violation, invalid and expected violation rates per round."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..events import ExploreEvent
from .metrics import Rate, mean_by_round, rate_by_round, tipping_round
from .report import plot_rates, rate_table


def summarize_explore(
    events: Sequence[ExploreEvent], *, rounds: int, label: str, surrogate: bool, decision: str = "generate"
) -> tuple[dict[str, Any], str]:
    """Per-round violation, invalid and (score mode / surrogate) expected violation rates, and the table."""
    viol = rate_by_round(events, rounds=rounds, hit=lambda e: e.outcome == "violate")
    inval = rate_by_round(events, rounds=rounds, hit=lambda e: e.outcome == "invalid")
    pv = mean_by_round(events, rounds=rounds, value=lambda e: e.p_violate)
    rows = {"violation rate": viol, "invalid rate": inval}
    if any(r.n for r in pv):
        rows["mean p(violate)"] = pv
    how = "" if surrogate else f", {decision} mode"
    table = rate_table(rows, first="metric", title=f"Self-Interested Exploration — {label}{how} — 95% Wilson intervals")
    summary = {
        "model": label,
        "surrogate": surrogate,
        "rounds": rounds,
        "items": len({(e.scenario, e.variant) for e in events}),
        "violation_rate": [r.as_dict() for r in viol],
        "invalid_rate": [r.as_dict() for r in inval],
        "mean_p_violate": [r.as_dict() for r in pv] if any(r.n for r in pv) else None,
        "tipping_round": tipping_round([r.value for r in viol]),
    }
    return summary, table


def plot_explore(folder: Path, summary: dict[str, Any], events: Sequence[ExploreEvent] = ()) -> Path:
    """``violation_rate.png``: the violation rate (and mean p(violate), and the invalid rate when any answer named
    no option) by round with 95% Wilson bands."""
    series = {"violation rate": [Rate.from_dict(d) for d in summary["violation_rate"]]}
    if summary["mean_p_violate"]:
        series["mean p(violate)"] = [Rate.from_dict(d) for d in summary["mean_p_violate"]]
    invalid = [Rate.from_dict(d) for d in summary["invalid_rate"]]
    if any(r.k for r in invalid):  # a violation rate resting on unparsed answers must say so in the picture too
        series["invalid rate (no option named)"] = invalid
    return plot_rates(
        folder / "violation_rate.png",
        series,
        title=f"Violation rate by round — {summary['model']}",
        ylabel="violation rate",
        surrogate=summary["surrogate"],
    )
