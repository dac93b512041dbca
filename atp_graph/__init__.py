"""atp-graph: measure and defend against the Alignment Tipping Process in self-evolving LLM agents.

Public API (everything else is internal)::

    from atp_graph import parse_choice, run_explore, ExploreConfig, run_diffuse, DiffuseConfig, load_policy
    from atp_graph import probe, TippingMonitor, load_scenarios

Heavy modules (torch, transformers) load only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .parsing import parse_choice

_LAZY = {
    "ExploreConfig": ".explore",
    "ExploreResult": ".explore",
    "run_explore": ".explore",
    "DiffuseConfig": ".diffuse",
    "DiffuseResult": ".diffuse",
    "run_diffuse": ".diffuse",
    "PAPER_GRID": ".diffuse",
    "build_agent_graph": ".agent",
    "load_policy": ".policies",
    "Policy": ".policies",
    "Decision": ".policies",
    "DecisionRequest": ".policies",
    "ModelError": ".policies",
    "load_scenarios": ".scenarios",
    "load_scenario_file": ".scenarios",
    "ScenarioError": ".scenarios",
    "build_graph": ".topology",
    "load_graph": ".topology",
    "probe": ".probes",
    "ProbeReport": ".probes",
    "ProbeRound": ".probes",
    "ProbeError": ".probes",
    "TippingMonitor": ".monitor",
    "CusumDetector": ".monitor",
}

__all__ = [
    "CusumDetector",
    "Decision",
    "DecisionRequest",
    "DiffuseConfig",
    "DiffuseResult",
    "ExploreConfig",
    "ExploreResult",
    "ModelError",
    "PAPER_GRID",
    "Policy",
    "ProbeError",
    "ProbeReport",
    "ProbeRound",
    "ScenarioError",
    "TippingMonitor",
    "build_agent_graph",
    "build_graph",
    "load_graph",
    "load_policy",
    "load_scenario_file",
    "load_scenarios",
    "parse_choice",
    "probe",
    "run_diffuse",
    "run_explore",
]

if TYPE_CHECKING:  # pragma: no cover
    from .agent import build_agent_graph
    from .diffuse import PAPER_GRID, DiffuseConfig, DiffuseResult, run_diffuse
    from .explore import ExploreConfig, ExploreResult, run_explore
    from .monitor import CusumDetector, TippingMonitor
    from .policies import Decision, DecisionRequest, ModelError, Policy, load_policy
    from .probes import ProbeError, ProbeReport, ProbeRound, probe
    from .scenarios import ScenarioError, load_scenario_file, load_scenarios
    from .topology import build_graph, load_graph


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'atp_graph' has no attribute {name!r}")
