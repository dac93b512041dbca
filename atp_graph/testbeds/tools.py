"""Tool-use drift: Self-Interested Exploration where the agent acts by calling tools (``atp tools``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis.tools import plot_tools, summarize_tools
from ..config import ToolsConfig
from ..events import ToolEvent
from ..games.tools import ToolGame
from ..policies.spec import SURROGATE_LABEL
from ..scenarios import resolve, tool_items
from .common import RunResult, Testbed


def tools_game(cfg: ToolsConfig) -> tuple[ToolGame, dict[str, Any]]:
    """The tool game a config asks for, and the values it resolved from the scenarios' defaults."""
    scenarios = resolve(cfg.scenarios, kind="tool")
    items = [it for s in scenarios for it in tool_items(s)][: cfg.limit]  # type: ignore[arg-type]
    first = scenarios[0].defaults
    resolved = {
        "rounds": cfg.rounds or first.rounds,
        "supervision": cfg.supervision or first.supervision_pattern,
        "history_window": first.history_window if cfg.history_window is None else cfg.history_window,
        "max_steps": cfg.max_steps,
    }
    game = ToolGame(
        items,  # type: ignore[arg-type]
        pattern=resolved["supervision"],
        rounds=resolved["rounds"],
        seed=cfg.seed,
        random_rule=cfg.random_supervision,
    )
    return game, resolved


def tools_report(
    cfg: ToolsConfig, resolved: Mapping[str, Any], events: Sequence[ToolEvent], *, surrogate: bool
) -> tuple[dict[str, Any], str]:
    """Summary and table of a tool-use run, from its config and events alone."""
    summary, table = summarize_tools(
        events,
        rounds=resolved["rounds"],
        label=SURROGATE_LABEL if surrogate else cfg.model,
        surrogate=surrogate,
        decision=cfg.decision,
        on_truncated=cfg.on_truncated,
    )
    summary.update(
        supervision_pattern=resolved["supervision"],
        evolution=cfg.evolution,
        decision=cfg.decision,
        max_steps=resolved["max_steps"],
    )
    return summary, table


def _postfix(events: Sequence[ToolEvent]) -> str:
    return f"forbidden tool {sum(e.outcome == 'violate' for e in events) / max(len(events), 1):.0%}"


def _agents(*args: Any, **kwargs: Any) -> Any:
    from ..agents.tool_agent import make_tool_agents

    return make_tool_agents(*args, **kwargs)


TOOLS = Testbed("tools", ToolsConfig, tools_game, tools_report, plot_tools, _postfix, agents=_agents)
"""The tool-use testbed."""


def run_tools(cfg: ToolsConfig, **kwargs: Any) -> RunResult:
    """Run (or resume) the tool-use testbed; keyword arguments as :meth:`Testbed.run` (policy, out, resume,
    progress)."""
    return TOOLS.run(cfg, **kwargs)
