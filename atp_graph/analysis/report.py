"""Tables (Markdown) and plots (PNG) of per-round rates with their intervals."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics import Rate
from .quality import warning_lines


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def model_title(what: str, label: str, *, surrogate: bool, decision: str) -> str:
    """A table's title start: ``what — label`` and the decision mode (a surrogate has none)."""
    return f"{what} — {label}" + ("" if surrogate else f", {decision} mode")


def rate_table(
    rows: Mapping[str, Sequence[Rate]], *, first: str = "", title: str | None = None, warnings: Sequence[str] = ()
) -> str:
    """A Markdown table: one row per series, one column per round, each cell ``rate [low, high]``; the run's
    ``warnings`` (invalid or truncated answers) as block quotes above it."""
    rounds = max((len(v) for v in rows.values()), default=0)
    head = f"| {first} | " + " | ".join(f"round {i + 1}" for i in range(rounds)) + " |"
    sep = "|---" * (rounds + 1) + "|"
    body = [f"| {label} | " + " | ".join(str(r) for r in rates) + " |" for label, rates in rows.items()]
    return warning_lines(warnings) + "\n".join(([f"**{title}**", ""] if title else []) + [head, sep, *body]) + "\n"


def plot_rates(
    path: Path,
    series: Mapping[str, Sequence[Rate]],
    *,
    title: str,
    ylabel: str,
    surrogate: bool = False,
    warnings: Sequence[str] = (),
) -> Path:
    """Line plot of each series by round with its 95% Wilson interval as a band.

    The legend gives each series' n per round; series that coincide stay visible (a different marker and size
    each, drawn largest first); rounds are whole numbers; a round without a measurement (``n/a``) is a gap.
    The first of ``warnings`` is printed in red across the plot (the reader must not miss it)."""
    from matplotlib.ticker import MaxNLocator

    plt = _mpl()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    markers = "osD^v<>"
    for k, (label, rates) in enumerate(series.items()):
        x = list(range(1, len(rates) + 1))
        ns = sorted({r.n for r in rates if r.n})
        n = "no data" if not ns else f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"
        marker, size = markers[k % len(markers)], max(8 - 2 * k, 3)
        ax.plot(x, [r.value for r in rates], marker=marker, ms=size, label=f"{label} ({n})")
        band = "95% Wilson interval" if k == 0 else None
        ax.fill_between(x, [r.low for r in rates], [r.high for r in rates], alpha=0.18, label=band)
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    full = ("SURROGATE (non-LLM) policy — " if surrogate else "") + title
    ax.set_title("\n".join(textwrap.wrap(full, 80)), fontsize=10)
    if warnings:
        ax.text(
            0.5,
            0.5,
            "\n".join(textwrap.wrap("WARNING: " + warnings[0], 60)),
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="#b03a2e",
            fontsize=9,
            fontweight="bold",
            bbox={"facecolor": "white", "alpha": 0.85},
        )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_heatmap(
    path: Path,
    values: Sequence[Sequence[float]],
    *,
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
    surrogate: bool = False,
) -> Path:
    """Heatmap of final rates over a sweep grid (rows x columns)."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(cols), 1.0 + 0.6 * len(rows)), dpi=120)
    im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    fig.colorbar(im, ax=ax)
    ax.set_title(("SURROGATE — " if surrogate else "") + title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_graph_rounds(
    path: Path, graph, rounds: Sequence[Sequence[Any]], *, title: str, surrogate: bool = False
) -> Path:
    """Small multiples: the graph once per round, nodes coloured by choice (red = collective, blue = independent,
    grey = invalid, black ring = seeded). Draw a few hundred nodes at most (a larger graph is unreadable and slow
    to lay out: pass a part of it, as :func:`~atp_graph.analysis.diffusion.plot_diffusion` does)."""
    import networkx as nx

    plt = _mpl()
    pos = nx.spring_layout(graph, seed=1) if graph.number_of_nodes() > 12 else nx.circular_layout(graph)
    cols = min(len(rounds), 4)
    nrows = -(-len(rounds) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.2 * nrows), dpi=110, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, evs in enumerate(rounds):
        ax = axes.ravel()[r]
        by_node = {e.node: e for e in evs}
        colours = [
            "#c0392b" if by_node[n].collective else ("#2e86c1" if by_node[n].choice else "#aaaaaa") for n in graph.nodes
        ]
        edge = ["black" if by_node[n].seeded else "white" for n in graph.nodes]
        nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.25, width=0.6)
        nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colours, edgecolors=edge, node_size=60, linewidths=1.2)
        share = sum(e.collective for e in evs if not e.seeded) / max(sum(not e.seeded for e in evs), 1)
        ax.set_title(f"round {r + 1}: {share:.0%} collective", fontsize=9)
    fig.suptitle(("SURROGATE — " if surrogate else "") + title + "  (red = collective, blue = independent)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
