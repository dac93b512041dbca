"""Scenario files: models, a safe loader with ``PATH:LINE`` errors, and ``${param}`` templating."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .loader import Problem, ScenarioError, load_scenario_file, load_scenarios, scenario_files
from .models import CollectiveScenario, Game, IndividualScenario, Scenario, SupervisionPattern, ToolScenario
from .render import CollectiveItem, GameRules, IndividualItem, collective_items, fill, individual_items
from .tools import ToolItem, tool_items


def _builtin_dir() -> Path:
    """Where the built-in scenarios are: ``$ATP_GRAPH_SCENARIOS``, else the installed package data, else the repo.

    pyproject.toml ships the top-level ``scenarios/`` folder inside the wheel as the data-only package
    ``atp_graph._builtin_scenarios``. It has no ``__init__.py`` (the YAML files stay where they are in the
    repo), so it is located through ``atp_graph``'s files rather than imported. An editable install or a
    plain source checkout has no such folder and uses the repo's ``scenarios/`` instead.
    """
    override = os.environ.get("ATP_GRAPH_SCENARIOS")
    if override:
        return Path(override)
    packaged = resources.files("atp_graph").joinpath("_builtin_scenarios")
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "scenarios"


BUILTIN_DIR = _builtin_dir()
"""The scenarios shipped with the project (override with ``ATP_GRAPH_SCENARIOS``)."""


def resolve(spec: str | Path | None, *, kind: str) -> list[IndividualScenario | CollectiveScenario | ToolScenario]:
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
    "ToolItem",
    "ToolScenario",
    "collective_items",
    "fill",
    "individual_items",
    "load_scenario_file",
    "load_scenarios",
    "resolve",
    "scenario_files",
    "tool_items",
]
