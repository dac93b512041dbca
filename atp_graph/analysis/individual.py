"""Summaries and pictures of the individual game: violation, invalid and expected violation rates per round."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..events import ExploreEvent
from .metrics import Rate, mean_by_round, rate_by_round, tipping_round
from .quality import answer_quality, quality_rows, warning_lines
from .report import plot_rates, rate_table


def summarize_explore(
    events: Sequence[ExploreEvent],
    *,
    rounds: int,
    label: str,
    surrogate: bool,
    decision: str = "generate",
    on_truncated: str = "parse",
) -> tuple[dict[str, Any], str]:
    """Per-round violation, invalid, truncated and (score mode / surrogate) expected violation rates, the
    warnings they call for, and the table."""
    viol = rate_by_round(events, rounds=rounds, hit=lambda e: e.outcome == "violate")
    quality = answer_quality(
        events,
        rounds=rounds,
        invalid=lambda e: e.outcome == "invalid",
        counted_as="not violating",
        on_truncated=on_truncated,
    )
    pv = mean_by_round(events, rounds=rounds, value=lambda e: e.p_violate)
    rows = {"violation rate": viol, **quality_rows(quality)}
    if any(r.n for r in pv):
        rows["mean p(violate)"] = pv
    how = "" if surrogate else f", {decision} mode"
    title = f"Self-Interested Exploration — {label}{how} — 95% Wilson intervals"
    table = warning_lines(quality["warnings"]) + rate_table(rows, first="metric", title=title)
    summary = {
        "model": label,
        "surrogate": surrogate,
        "rounds": rounds,
        "items": len({(e.scenario, e.variant) for e in events}),
        "violation_rate": [r.as_dict() for r in viol],
        **quality,
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
    if summary.get("truncated_rate") and any(d["k"] for d in summary["truncated_rate"]):
        series["truncated (cut off at the token budget)"] = [Rate.from_dict(d) for d in summary["truncated_rate"]]
    warnings = summary.get("warnings") or []
    return plot_rates(
        folder / "violation_rate.png",
        series,
        title=f"Violation rate by round — {summary['model']}",
        ylabel="violation rate",
        surrogate=summary["surrogate"],
        warnings=warnings,
    )
