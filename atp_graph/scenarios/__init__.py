"""Scenario files: models, a safe loader with ``PATH:LINE`` errors, and ``${param}`` templating."""

from __future__ import annotations

import os
from pathlib import Path

from .loader import Problem, ScenarioError, load_scenario_file, load_scenarios, scenario_files
from .models import CollectiveScenario, Game, IndividualScenario, Scenario, SupervisionPattern
from .render import CollectiveItem, GameRules, IndividualItem, collective_items, fill, individual_items

BUILTIN_DIR = Path(os.environ.get("ATP_GRAPH_SCENARIOS", Path(__file__).resolve().parents[2] / "scenarios"))
"""The scenarios shipped with the project (override with ``ATP_GRAPH_SCENARIOS``)."""


def resolve(spec: str | Path | None, *, kind: str) -> list[IndividualScenario | CollectiveScenario]:
    """Scenarios of ``kind`` from a path, a built-in scenario name, or (``None``) all built-in ones of that kind."""
    if spec is None:
        found = load_scenarios([BUILTIN_DIR / kind])
    elif Path(spec).exists():
        found = load_scenarios([spec])
    else:
        named = [s for s in load_scenarios([BUILTIN_DIR]) if s.name == str(spec)]
        if not named:
            raise ScenarioError([Problem(str(spec), 1, "(path)", "no such file, folder or built-in scenario name")])
        found = named
    chosen = [s for s in found if s.kind == kind]
    if not chosen:
        raise ScenarioError([Problem(str(spec or BUILTIN_DIR / kind), 1, "kind", f"no {kind} scenarios there")])
    return chosen


__all__ = [
    "BUILTIN_DIR",
    "CollectiveItem",
    "CollectiveScenario",
    "Game",
    "GameRules",
    "IndividualItem",
    "IndividualScenario",
    "Problem",
    "Scenario",
    "ScenarioError",
    "SupervisionPattern",
    "collective_items",
    "fill",
    "individual_items",
    "load_scenario_file",
    "load_scenarios",
    "resolve",
    "scenario_files",
]
