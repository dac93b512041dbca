"""Summaries and pictures of a diffusion run: collective rate per cell and round, tipping, re-adoption, first
adoption per node; adoption curves, a sweep heatmap and the graph coloured by choice per round."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import networkx as nx

from ..events import DiffuseEvent
from .metrics import Rate, tipping_round, wilson
from .quality import answer_quality, quality_rows, warning_lines
from .report import plot_graph_rounds, plot_heatmap, plot_rates, rate_table


def _cell(pop_threshold: float, rewards: Sequence[float]) -> str:
    return f"t={pop_threshold:g}, rewards={'/'.join(f'{x:g}' for x in rewards)}"


def summarize_diffusion(
    events: Sequence[DiffuseEvent],
    *,
    rounds: int,
    label: str,
    surrogate: bool,
    graph_desc: str,
    scope: str,
    decision: str = "generate",
    on_truncated: str = "parse",
) -> tuple[dict, str]:
    """Collective rate per cell and round (seeded agents excluded), tipping, re-adoption and first adoption."""
    cells: dict[str, list[list[DiffuseEvent]]] = {}
    for e in events:
        if not e.seeded:
            cells.setdefault(_cell(e.threshold, e.rewards), [[] for _ in range(rounds)])[e.round - 1].append(e)
    rates = {c: [wilson(sum(x.collective for x in rs), len(rs)) for rs in per] for c, per in cells.items()}
    expected = {  # score mode and the surrogate: the mean p(collective) as an expected rate
        c: [wilson(sum(x.p_collective for x in rs), len(rs)) for rs in per]  # type: ignore[misc]
        for c, per in cells.items()
        if all(x.p_collective is not None for rs in per for x in rs)
    }
    # re-adoption: chose collective in a successful round r -> chose collective again in r+1
    last: dict[tuple, DiffuseEvent] = {}
    re_k = re_n = 0
    first: dict[str, dict[int, int | None]] = {}
    for e in sorted(events, key=lambda x: x.round):
        key = (e.population, e.node)
        prev = last.get(key)
        if prev and prev.collective and prev.success and not e.seeded:
            re_n += 1
            re_k += e.collective
        last[key] = e
        f = first.setdefault(e.population, {})
        if e.node not in f or f[e.node] is None:
            f[e.node] = e.round if e.collective else f.get(e.node)
    deciding = [e for e in events if not e.seeded]
    quality = answer_quality(
        deciding,
        rounds=rounds,
        invalid=lambda e: e.choice is None,
        counted_as="independent",
        on_truncated=on_truncated,
    )
    rows = {**rates, **{f"{c} · mean p(collective)": v for c, v in expected.items()}}
    if any(d["k"] for d in quality["invalid_rate"]) or quality["truncated_rate"]:
        rows |= {f"all cells · {k}": v for k, v in quality_rows(quality).items()}
    table = warning_lines(quality["warnings"]) + rate_table(
        rows,
        first="cell",
        title=f"Imitative Strategy Diffusion — {label}{'' if surrogate else f', {decision} mode'} — "
        f"{graph_desc}, scope {scope} — "
        f"collective rate = collective choices / (games x deciding agents), 95% Wilson",
    )
    summary = {
        "model": label,
        "surrogate": surrogate,
        "graph": graph_desc,
        "scope": scope,
        "rounds": rounds,
        "cells": {
            c: {
                "collective_rate": [r.as_dict() for r in rs],
                "tipping_round": tipping_round([r.value for r in rs]),
                "final_adoption": rs[-1].value,
                "mean_p_collective": [r.as_dict() for r in expected[c]] if c in expected else None,
            }
            for c, rs in rates.items()
        },
        **quality,
        "readoption_after_success": wilson(re_k, re_n).as_dict(),
        "first_adoption": {pop: {str(k): v for k, v in nodes.items()} for pop, nodes in first.items()},
    }
    return summary, table


def graph_from_events(events: Sequence[DiffuseEvent]) -> nx.Graph:
    """The social graph, rebuilt from the events' ``node`` and ``neighbours`` (one population is enough)."""
    first = [e for e in events if e.population == events[0].population and e.round == 1] if events else []
    g = nx.Graph()
    g.add_nodes_from(sorted(e.node for e in first))
    g.add_edges_from((e.node, m) for e in first for m in e.neighbours)
    return g


def plot_diffusion(folder: Path, summary: dict, events: Sequence[DiffuseEvent]) -> None:
    """adoption.png, heatmap.png for sweeps, and graph_rounds.png for the first population."""
    surrogate = summary["surrogate"]
    series = {c: [Rate.from_dict(d) for d in v["collective_rate"]] for c, v in summary["cells"].items()}
    warnings = summary.get("warnings") or []
    plot_rates(
        folder / "adoption.png",
        series,
        title=f"Collective (deviant) adoption — {summary['graph']}",
        ylabel="collective rate",
        surrogate=surrogate,
        warnings=warnings,
    )
    ts = sorted({e.threshold for e in events})
    rs = sorted({tuple(e.rewards) for e in events})
    if len(ts) > 1 or len(rs) > 1:
        grid = [[summary["cells"][_cell(t, r)]["final_adoption"] for r in rs] for t in ts]
        plot_heatmap(
            folder / "heatmap.png",
            grid,
            rows=[f"t={t:g}" for t in ts],
            cols=["/".join(f"{x:g}" for x in r) for r in rs],
            title="final collective rate",
            surrogate=surrogate,
        )
    first = events[0].population if events else ""
    head = events[0] if events else None
    plot_graph_rounds(
        folder / "graph_rounds.png",
        graph_from_events(events),
        [[e for e in events if e.population == first and e.round == r] for r in range(1, summary["rounds"] + 1)],
        title=f"{head.game}, {_cell(head.threshold, head.rewards)}" if head else "",
        surrogate=surrogate,
    )
