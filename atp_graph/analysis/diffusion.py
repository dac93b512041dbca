"""Summaries and pictures of a diffusion run: collective rate per cell and round, tipping, re-adoption, first
adoption per node; adoption curves, a sweep heatmap and the graph coloured by choice per round."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import networkx as nx

from ..events import DiffuseEvent
from .metrics import Rate, RoundCounts, tipping_round, wilson
from .quality import QualityCounts, quality_rows
from .report import model_title, plot_graph_rounds, plot_heatmap, plot_rates, rate_table


def _cell(pop_threshold: float, rewards: Sequence[float]) -> str:
    return f"t={pop_threshold:g}, rewards={'/'.join(f'{x:g}' for x in rewards)}"


def summarize_diffusion(
    events: Iterable[DiffuseEvent],
    *,
    rounds: int,
    label: str,
    surrogate: bool,
    graph_desc: str,
    scope: str,
    decision: str = "generate",
    on_truncated: str = "parse",
) -> tuple[dict, str]:
    """Collective rate per cell and round (seeded agents excluded), tipping, re-adoption and first adoption.

    One pass over the events in round order (as ``events.jsonl`` holds them): a run of any size is summarised
    without holding its events in memory.
    """
    cells: dict[str, RoundCounts] = {}
    expected: dict[str, RoundCounts | None] = {}  # score mode and the surrogate: mean p(collective), else None
    params: dict[str, tuple[float, tuple[float, ...]]] = {}
    quality = QualityCounts(rounds)
    # re-adoption: chose collective in a successful round r -> chose collective again in r+1
    paid: dict[tuple[str, int], bool] = {}  # (population, node) -> collective and successful in its last round
    re_k = re_n = 0
    first: dict[str, dict[int, int | None]] = {}
    for e in events:
        key = (e.population, e.node)
        if not e.seeded:
            c = _cell(e.threshold, e.rewards)
            if c not in cells:
                cells[c], expected[c] = RoundCounts(rounds), RoundCounts(rounds, mean=True)
                params[c] = (e.threshold, tuple(e.rewards))
            cells[c].add(e.round, e.collective)
            if expected[c] is not None:
                expected[c] = None if e.p_collective is None else expected[c]
                if e.p_collective is not None:
                    expected[c].add(e.round, e.p_collective)  # type: ignore[union-attr]
            quality.add(e, invalid=e.choice is None)
            if paid.get(key):
                re_n += 1
                re_k += e.collective
        paid[key] = e.collective and e.success
        f = first.setdefault(e.population, {})
        if f.get(e.node) is None:
            f[e.node] = e.round if e.collective else None
    rates = {c: v.rates() for c, v in cells.items()}
    means = {c: v.rates() for c, v in expected.items() if v is not None}
    q = quality.result(counted_as="independent", on_truncated=on_truncated)
    rows = {**rates, **{f"{c} · mean p(collective)": v for c, v in means.items()}}
    if any(d["k"] for d in q["invalid_rate"]) or q["truncated_rate"]:
        rows |= {f"all cells · {k}": v for k, v in quality_rows(q).items()}
    title = model_title("Imitative Strategy Diffusion", label, surrogate=surrogate, decision=decision)
    table = rate_table(
        rows,
        first="cell",
        title=f"{title} — {graph_desc}, scope {scope} — "
        f"collective rate = collective choices / (games x deciding agents), 95% Wilson",
        warnings=q["warnings"],
    )
    summary = {
        "model": label,
        "surrogate": surrogate,
        "graph": graph_desc,
        "scope": scope,
        "rounds": rounds,
        "cells": {
            c: {
                "threshold": params[c][0],
                "rewards": list(params[c][1]),
                "collective_rate": [r.as_dict() for r in rs],
                "tipping_round": tipping_round([r.value for r in rs]),
                "final_adoption": rs[-1].value,
                "mean_p_collective": [r.as_dict() for r in means[c]] if c in means else None,
            }
            for c, rs in rates.items()
        },
        **q,
        "readoption_after_success": wilson(re_k, re_n).as_dict(),
        "first_adoption": {pop: {str(k): v for k, v in nodes.items()} for pop, nodes in first.items()},
    }
    return summary, table


def graph_from_events(events: Iterable[DiffuseEvent]) -> tuple[nx.Graph, list[DiffuseEvent]]:
    """The social graph, rebuilt from the first population's round-1 ``node`` and ``neighbours``, and those
    round-1 events (the events of round 1 come first in a run, so only they are read)."""
    g, first = nx.Graph(), []
    for e in events:
        if e.round > 1:
            break
        if not first or e.population == first[0].population:
            first.append(e)
            g.add_node(e.node)
            g.add_edges_from((e.node, m) for m in e.neighbours)
    return g, first


def neighbourhood(graph: nx.Graph, start: int, size: int) -> list[int]:
    """Up to ``size`` nodes nearest to ``start`` (breadth first; other components follow when it is too small)."""
    order = list(itertools.islice(nx.bfs_tree(graph, start), size))
    if len(order) < size:
        seen = set(order)
        order += [n for n in graph.nodes if n not in seen][: size - len(order)]
    return order


def plot_diffusion(folder: Path, summary: dict, events: Iterable[DiffuseEvent], *, max_nodes: int = 400) -> None:
    """adoption.png, heatmap.png for sweeps, and graph_rounds.png for the first population: the whole graph up to
    ``max_nodes`` nodes, else the ``max_nodes`` nodes nearest to the first seeded deviant (or node 0), said in the
    title. Reads ``events`` twice (round 1, then the drawn nodes), never whole into memory."""
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
    cells = summary["cells"].values()
    ts = sorted({c["threshold"] for c in cells})
    rs = sorted({tuple(c["rewards"]) for c in cells})
    if len(ts) > 1 or len(rs) > 1:
        by = {(c["threshold"], tuple(c["rewards"])): c["final_adoption"] for c in cells}
        plot_heatmap(
            folder / "heatmap.png",
            [[by.get((t, r), math.nan) for r in rs] for t in ts],
            rows=[f"t={t:g}" for t in ts],
            cols=["/".join(f"{x:g}" for x in r) for r in rs],
            title="final collective rate",
            surrogate=surrogate,
        )
    graph, first = graph_from_events(events)
    if not first:
        return
    head, n = first[0], graph.number_of_nodes()
    start = next((e.node for e in first if e.seeded), 0)
    drawn = graph.subgraph(neighbourhood(graph, start, max_nodes)) if n > max_nodes else graph
    keep = set(drawn.nodes)
    per_round: list[list[DiffuseEvent]] = [[] for _ in range(summary["rounds"])]
    for e in events:
        if e.population == head.population and e.node in keep:
            per_round[e.round - 1].append(e)
    part = f" — the {len(keep)} nodes nearest to node {start} of {n:,}" if n > max_nodes else ""
    plot_graph_rounds(
        folder / "graph_rounds.png",
        drawn,
        per_round,
        title=f"{head.game}, {_cell(head.threshold, head.rewards)}{part}",
        surrogate=surrogate,
    )
