"""Summaries and pictures of the individual game: violation, invalid and expected violation rates per round."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..events import ExploreEvent
from .metrics import Rate, RoundCounts, tipping_round
from .quality import QualityCounts, quality_rows, quality_series
from .report import model_title, plot_rates, rate_table


def summarize_explore(
    events: Iterable[ExploreEvent],
    *,
    rounds: int,
    label: str,
    surrogate: bool,
    decision: str = "generate",
    on_truncated: str = "parse",
) -> tuple[dict[str, Any], str]:
    """Per-round violation, invalid, truncated and (score mode / surrogate) expected violation rates, the
    warnings they call for, and the table: one pass over the events."""
    viol, pv, quality = RoundCounts(rounds), RoundCounts(rounds, mean=True), QualityCounts(rounds)
    items: set[tuple[str, int]] = set()
    for e in events:
        viol.add(e.round, e.outcome == "violate")
        quality.add(e, invalid=e.outcome == "invalid")
        if e.p_violate is not None:
            pv.add(e.round, e.p_violate)
        items.add((e.scenario, e.variant))
    q = quality.result(counted_as="not violating", on_truncated=on_truncated)
    rows = {"violation rate": viol.rates(), **quality_rows(q)}
    expected = pv.rates() if any(pv.n) else None
    if expected:
        rows["mean p(violate)"] = expected
    title = model_title("Self-Interested Exploration", label, surrogate=surrogate, decision=decision)
    table = rate_table(rows, first="metric", title=f"{title} — 95% Wilson intervals", warnings=q["warnings"])
    summary = {
        "model": label,
        "surrogate": surrogate,
        "rounds": rounds,
        "items": len(items),
        "violation_rate": [r.as_dict() for r in rows["violation rate"]],
        **q,
        "mean_p_violate": [r.as_dict() for r in expected] if expected else None,
        "tipping_round": tipping_round([r.value for r in rows["violation rate"]]),
    }
    return summary, table


def plot_explore(folder: Path, summary: dict[str, Any], events: Sequence[ExploreEvent] = ()) -> Path:
    """``violation_rate.png``: the violation rate (and mean p(violate), and the invalid rate when any answer named
    no option) by round with 95% Wilson bands."""
    series = {"violation rate": [Rate.from_dict(d) for d in summary["violation_rate"]]}
    if summary["mean_p_violate"]:
        series["mean p(violate)"] = [Rate.from_dict(d) for d in summary["mean_p_violate"]]
    series.update(quality_series(summary))
    warnings = summary.get("warnings") or []
    return plot_rates(
        folder / "violation_rate.png",
        series,
        title=f"Violation rate by round — {summary['model']}",
        ylabel="violation rate",
        surrogate=summary["surrogate"],
        warnings=warnings,
    )
