"""Imitative Strategy Diffusion: agents on a social graph play threshold games and see their neighbours.

A run holds one or more *populations*: one per (game, threshold, rewards) cell, each on its own copy of the graph.
Every round, all agents of all populations decide in one batched model call; then each population is paid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis import plot_diffusion, summarize_diffusion
from ..config import DiffuseConfig
from ..events import DiffuseEvent
from ..games import ThresholdGame, build_graph, load_graph, populations
from ..games.protocol import load_protocol
from ..policies.spec import SURROGATE_LABEL
from ..scenarios import collective_items, resolve
from .common import RunResult, Testbed, check_study_items


def diffuse_game(cfg: DiffuseConfig) -> tuple[ThresholdGame, dict[str, Any]]:
    """The threshold game a config asks for, and the values it resolved."""
    graph = (
        load_graph(cfg.graph)
        if cfg.graph
        else build_graph(cfg.topology, cfg.agents, k=cfg.k, p=cfg.p, m=cfg.m, seed=cfg.seed)
    )
    scenarios = resolve(cfg.scenarios, kind="collective")
    check_study_items(cfg, scenarios)
    items = [it for s in scenarios for it in collective_items(s)]
    protocol = load_protocol(cfg.protocol)
    game = ThresholdGame(
        graph,
        populations(items, cfg.thresholds, cfg.rewards),
        scope=cfg.scope,
        peer_view=cfg.peer_view,
        seed_deviants=cfg.seed_deviants,
        placement=cfg.placement,
        seed=cfg.seed,
        rounds=cfg.rounds,
        protocol=protocol,
    )
    window = 5 if cfg.history_window is None else cfg.history_window
    resolved = {"rounds": cfg.rounds, "history_window": window, "protocol": protocol.model_dump()}
    return game, resolved | ({"graph_notes": graph.graph["notes"]} if graph.graph.get("notes") else {})


def diffuse_report(
    cfg: DiffuseConfig, resolved: Mapping[str, Any], events: Sequence[DiffuseEvent], *, surrogate: bool
) -> tuple[dict[str, Any], str]:
    """Summary and table of a diffusion run, from its config and events alone (graph conversions noted)."""
    summary, table = summarize_diffusion(
        events,
        rounds=resolved["rounds"],
        label=SURROGATE_LABEL if surrogate else cfg.model,
        surrogate=surrogate,
        graph_desc=cfg.graph or f"{cfg.topology}, {cfg.agents} agents",
        scope=cfg.scope,
        decision=cfg.decision,
        on_truncated=cfg.on_truncated,
    )
    notes = list(resolved.get("graph_notes", []))
    if notes:
        summary["graph_notes"] = notes
        table = "".join(f"> Note: {n}\n>\n" for n in notes) + "\n" + table
    return summary, table


def _postfix(events: Sequence[DiffuseEvent]) -> str:
    dec = [e for e in events if not e.seeded]
    return f"collective {sum(e.collective for e in dec) / max(len(dec), 1):.0%}"


DIFFUSE = Testbed("diffuse", DiffuseConfig, diffuse_game, diffuse_report, plot_diffusion, _postfix)
"""The collective testbed."""


def run_diffuse(cfg: DiffuseConfig, **kwargs: Any) -> RunResult:
    """Run (or resume) the collective testbed on a social graph; keyword arguments as :meth:`Testbed.run`."""
    return DIFFUSE.run(cfg, **kwargs)
