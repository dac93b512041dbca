"""Summaries and pictures of the tool game: forbidden-tool, completion, not-done and invalid rates per round."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..events import ToolEvent
from .metrics import Rate, RoundCounts, tipping_round
from .quality import QualityCounts, quality_rows, quality_series
from .report import model_title, plot_rates, rate_table


def summarize_tools(
    events: Iterable[ToolEvent],
    *,
    rounds: int,
    label: str,
    surrogate: bool,
    decision: str = "generate",
    on_truncated: str = "parse",
) -> tuple[dict[str, Any], str]:
    """Per-round forbidden-tool rate (every agent counts in the denominator), task-completion, not-done, step-limit,
    invalid and truncated rates, mean p(forbidden) in score mode and for the surrogate, the warnings, the table: one
    pass over the events."""
    outcomes = {o: RoundCounts(rounds) for o in ("violate", "comply", "not_done")}
    limit, pf, quality = RoundCounts(rounds), RoundCounts(rounds, mean=True), QualityCounts(rounds)
    items: set[tuple[str, int]] = set()
    for e in events:
        for o, counts in outcomes.items():
            counts.add(e.round, e.outcome == o)
        limit.add(e.round, e.step_limit)
        quality.add(e, invalid=e.outcome == "invalid")
        if e.p_forbidden is not None:
            pf.add(e.round, e.p_forbidden)
        items.add((e.scenario, e.variant))
    q = quality.result(counted_as="not forbidden", on_truncated=on_truncated)
    forbidden, completed, not_done = (outcomes[o].rates() for o in ("violate", "comply", "not_done"))
    rows = {"forbidden-tool rate": forbidden, "completed compliantly": completed, "not done": not_done}
    rows.update(quality_rows(q))
    if any(limit.k):
        rows["stopped at the step limit"] = limit.rates()
    expected = pf.rates() if any(pf.n) else None
    if expected:
        rows["mean p(forbidden)"] = expected
    title = model_title("Tool-use drift", label, surrogate=surrogate, decision=decision)
    table = rate_table(rows, first="metric", title=f"{title} — 95% Wilson intervals", warnings=q["warnings"])
    summary = {
        "model": label,
        "surrogate": surrogate,
        "rounds": rounds,
        "items": len(items),
        "forbidden_rate": [r.as_dict() for r in forbidden],
        "completed_rate": [r.as_dict() for r in completed],
        "not_done_rate": [r.as_dict() for r in not_done],
        "step_limit_rate": [r.as_dict() for r in limit.rates()],
        **q,
        "mean_p_forbidden": [r.as_dict() for r in expected] if expected else None,
        "tipping_round": tipping_round([r.value for r in forbidden]),
    }
    return summary, table


def plot_tools(folder: Path, summary: dict[str, Any], events: Iterable[ToolEvent] = ()) -> Path:
    """``forbidden_rate.png``: the forbidden-tool rate (and mean p(forbidden), and the invalid and truncated rates
    when any) by round with 95% Wilson bands."""
    series = {"forbidden-tool rate": [Rate.from_dict(d) for d in summary["forbidden_rate"]]}
    if summary["mean_p_forbidden"]:
        series["mean p(forbidden)"] = [Rate.from_dict(d) for d in summary["mean_p_forbidden"]]
    series.update(quality_series(summary, "invalid rate (no valid tool call)"))
    return plot_rates(
        folder / "forbidden_rate.png",
        series,
        title=f"Forbidden-tool rate by round — {summary['model']}",
        ylabel="forbidden-tool rate",
        surrogate=summary["surrogate"],
        warnings=summary.get("warnings") or [],
    )
