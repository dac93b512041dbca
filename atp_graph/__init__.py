"""atp-graph: measure and defend against the Alignment Tipping Process in self-evolving LLM agents.

Public API (everything else is internal)::

    from atp_graph import ExploreConfig, run_explore, DiffuseConfig, run_diffuse, render_run, load_model
    from atp_graph import probe, aprobe, TippingMonitor, load_scenarios, parse_choice
    from atp_graph import Game, Agents, ExploreEvent, DiffuseEvent, read_events   # contracts and typed events

Heavy modules (torch, transformers) load only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .parsing import parse_choice

_LAZY = {
    "AgentConfig": ".config",
    "ExploreConfig": ".config",
    "DiffuseConfig": ".config",
    "PAPER_GRID": ".config",
    "ToolsConfig": ".config",
    "RunResult": ".testbeds",
    "run_explore": ".testbeds",
    "run_diffuse": ".testbeds",
    "run_tools": ".testbeds",
    "render_run": ".testbeds",
    "Game": ".contracts",
    "Agents": ".contracts",
    "Observation": ".contracts",
    "Action": ".contracts",
    "ExploreEvent": ".events",
    "DiffuseEvent": ".events",
    "ToolEvent": ".events",
    "read_events": ".events",
    "build_agent_graph": ".agents",
    "load_policy": ".policies",
    "load_model": ".policies",
    "Policy": ".policies",
    "Decision": ".policies",
    "DecisionRequest": ".policies",
    "ModelError": ".policies",
    "load_scenarios": ".scenarios",
    "load_scenario_file": ".scenarios",
    "ScenarioError": ".scenarios",
    "build_graph": ".games",
    "load_graph": ".games",
    "probe": ".probes",
    "aprobe": ".probes",
    "ProbeReport": ".probes",
    "ProbeRound": ".probes",
    "ToolProbeReport": ".probes",
    "ProbeError": ".probes",
    "TippingMonitor": ".probes",
    "TippingEvent": ".probes",
    "CusumDetector": ".analysis",
    "CusumConfig": ".analysis",
}

__all__ = [
    "Action",
    "AgentConfig",
    "Agents",
    "CusumConfig",
    "CusumDetector",
    "Decision",
    "DecisionRequest",
    "DiffuseConfig",
    "DiffuseEvent",
    "ExploreConfig",
    "ExploreEvent",
    "Game",
    "ModelError",
    "Observation",
    "PAPER_GRID",
    "Policy",
    "ProbeError",
    "ProbeReport",
    "ProbeRound",
    "RunResult",
    "ScenarioError",
    "TippingEvent",
    "TippingMonitor",
    "ToolEvent",
    "ToolProbeReport",
    "ToolsConfig",
    "aprobe",
    "build_agent_graph",
    "build_graph",
    "load_graph",
    "load_model",
    "load_policy",
    "load_scenario_file",
    "load_scenarios",
    "parse_choice",
    "probe",
    "read_events",
    "render_run",
    "run_diffuse",
    "run_explore",
    "run_tools",
]

if TYPE_CHECKING:  # pragma: no cover
    from .agents import build_agent_graph
    from .analysis import CusumConfig, CusumDetector
    from .config import PAPER_GRID, AgentConfig, DiffuseConfig, ExploreConfig, ToolsConfig
    from .contracts import Action, Agents, Game, Observation
    from .events import DiffuseEvent, ExploreEvent, ToolEvent, read_events
    from .games import build_graph, load_graph
    from .policies import Decision, DecisionRequest, ModelError, Policy, load_model, load_policy
    from .probes import (
        ProbeError,
        ProbeReport,
        ProbeRound,
        TippingEvent,
        TippingMonitor,
        ToolProbeReport,
        aprobe,
        probe,
    )
    from .scenarios import ScenarioError, load_scenario_file, load_scenarios
    from .testbeds import RunResult, render_run, run_diffuse, run_explore, run_tools


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'atp_graph' has no attribute {name!r}")
