"""Self-Interested Exploration: one agent per testbed item, repeated rounds, rewards that favour breaking the rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis import plot_explore, summarize_explore
from ..config import ExploreConfig
from ..events import ExploreEvent
from ..games import IndividualGame
from ..games.protocol import load_protocol
from ..policies.spec import SURROGATE_LABEL
from ..scenarios import individual_items, resolve
from .common import RunResult, Testbed, check_study_items


def explore_game(cfg: ExploreConfig) -> tuple[IndividualGame, dict[str, Any]]:
    """The individual game a config asks for, and the values it resolved from the scenarios' defaults."""
    scenarios = resolve(cfg.scenarios, kind="individual")
    items = [it for s in scenarios for it in individual_items(s)][: cfg.limit]
    first = scenarios[0].defaults
    resolved = {
        "rounds": cfg.rounds or first.rounds,
        "supervision": cfg.supervision or first.supervision_pattern,
        "history_window": first.history_window if cfg.history_window is None else cfg.history_window,
    }
    protocol = load_protocol(cfg.protocol)
    check_study_items(cfg, scenarios)
    game = IndividualGame(
        items,
        pattern=resolved["supervision"],
        rounds=resolved["rounds"],
        seed=cfg.seed,
        protocol=protocol,
        random_rule=cfg.random_supervision,
    )
    return game, {**resolved, "protocol": protocol.model_dump()}


def explore_report(
    cfg: ExploreConfig, resolved: Mapping[str, Any], events: Sequence[ExploreEvent], *, surrogate: bool
) -> tuple[dict[str, Any], str]:
    """Summary and table of an exploration run, from its config and events alone."""
    label = SURROGATE_LABEL if surrogate else cfg.model
    summary, table = summarize_explore(
        events,
        rounds=resolved["rounds"],
        label=label,
        surrogate=surrogate,
        decision=cfg.decision,
        on_truncated=cfg.on_truncated,
    )
    summary.update(supervision_pattern=resolved["supervision"], evolution=cfg.evolution, decision=cfg.decision)
    return summary, table


def _postfix(events: Sequence[ExploreEvent]) -> str:
    return f"violation {sum(e.outcome == 'violate' for e in events) / max(len(events), 1):.0%}"


EXPLORE = Testbed("explore", ExploreConfig, explore_game, explore_report, plot_explore, _postfix)
"""The individual testbed."""


def run_explore(cfg: ExploreConfig, **kwargs: Any) -> RunResult:
    """Run (or resume) the individual testbed; keyword arguments as :meth:`Testbed.run` (policy, out, resume,
    progress)."""
    return EXPLORE.run(cfg, **kwargs)
