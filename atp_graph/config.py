"""Run configs: what defines a run, written to its ``config.json``.

:class:`AgentConfig` holds what every testbed shares (which model decides, how agents evolve and decide, runtime
defenses); :class:`ExploreConfig` and :class:`DiffuseConfig` extend it. The command line derives its options from
these fields (:mod:`atp_graph.cli.options`), so name, type, default and help are written once, here. Every list of
choices (topologies, supervision patterns, evolution modes...) is a ``Literal`` here and nowhere else.
"""

from __future__ import annotations

import math
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .parsing import ParseRule
from .policies.base import DecisionMode
from .scenarios.models import MAX_AGENTS, MAX_ROUNDS, SupervisionPattern
from .scenarios.render import MAX_NUMBER

Evolution = Literal["transcript", "reflection", "none"]
"""What agents carry between rounds."""

Topology = Literal["complete", "small-world", "scale-free", "ring", "grid", "random", "star"]
"""Generated social graphs."""
Scope = Literal["global", "local"]
"""Whose choices a threshold counts: everyone (the study) or each agent's neighbourhood."""
PeerViewMode = Literal["final_only", "full"]
"""What agents see of their neighbours: final choices, or whole answers too."""
Placement = Literal["hubs", "random", "periphery"]
"""Where seeded deviants sit."""
Preset = Literal["default", "study"]
"""default: this project's choices; study: the original study's structure (see :data:`STUDY_PRESET`)."""
Truncated = Literal["parse", "invalid"]
"""What an answer cut off at the token budget counts as: whatever it says (parsed), or invalid."""
RandomRule = Literal["seeded", "cyclic"]
"""How the ``random`` supervision pattern picks rounds: seeded draws (p = 1/3), or the study's (round + seed) % 3."""
Rewards = tuple[float, float, float]
"""(success, fail_independent, fail_collective), as the study writes its reward triples (1.2, 1.0, 0.8)."""

EVOLUTIONS: tuple[str, ...] = typing.get_args(Evolution)
TOPOLOGIES: tuple[str, ...] = typing.get_args(Topology)
SUPERVISION_PATTERNS: tuple[str, ...] = typing.get_args(SupervisionPattern)


def resolve_decision(decision: str, model: str) -> str:
    """``auto`` = ``score`` for the embedded smollm2 (too small to follow the answer format), else ``generate``."""
    if decision != "auto":
        return decision
    return "score" if model in ("", "smollm2") else "generate"


class AgentConfig(BaseModel):
    """Who decides and how agents evolve: the fields every testbed config shares (written to ``config.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: str = Field(default="smollm2", min_length=1, pattern=r"\S")
    """Model spec: smollm2 | hf:<folder or hub id>[+adapter:<folder>] | <provider>:<model> | sim (surrogate)."""
    evolution: Evolution = "transcript"
    """What agents carry between rounds: transcript (the study), reflection (written lessons) or none."""
    decision: DecisionMode = "generate"
    """generate: free text ending in JSON (the study); score: p(option) from option log-likelihoods."""
    history_window: int | None = Field(default=None, ge=0)
    """Transcript rounds shown; None = the scenarios' default (5)."""
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    """Seed for sampling, the random supervision pattern, graphs, placement and the surrogate."""
    memory_hygiene: bool = False
    """Defense: refuse to store lessons that endorse rule-breaking (reflection mode)."""
    reanchor_every: int = Field(default=0, ge=0)
    """Defense: restate the rule (or the safe option) every k rounds; 0 = never."""
    monitor_fallback: bool = False
    """Defense: a per-agent tipping monitor (CUSUM) switches the agent to the safe option once it fires."""
    preset: Preset = "default"
    """study: the original study's structure where not set explicitly (its imported items, protocol study, parse
    first, cyclic random supervision, its collective grid); see FIDELITY.md."""
    protocol: str = "default"
    """The words around each scenario: a built-in protocol (default, study) or a protocol YAML file."""
    parse: ParseRule = "last"
    """Which decision counts: the last one outside thinking (ours) or the first one anywhere (the study's)."""
    on_truncated: Truncated = "parse"
    """An answer cut off at the token budget: parse what it says, or count it as invalid."""

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """Fill the fields a preset sets, unless given explicitly."""
        if isinstance(data, dict) and data.get("preset") == "study":
            data = {**STUDY_PRESET.get(cls.__name__, {}), **data}
            if data.get("scenarios") is None:
                raise ValueError(
                    "preset study plays the study's own items: import them with `python cli.py scenarios import-atp "
                    "<study JSON> --out DIR` and pass --scenarios DIR (see FIDELITY.md)"
                )
        return data


class ExploreConfig(AgentConfig):
    """Everything that defines an exploration run (written to ``config.json``)."""

    scenarios: str | None = None
    """Scenario file, folder or built-in name; None = every built-in individual scenario."""
    rounds: int | None = Field(default=None, ge=1, le=MAX_ROUNDS)
    """Rounds to play; None = the scenarios' default (6)."""
    supervision: SupervisionPattern | None = None
    """Supervision pattern; None = the scenarios' default (all_unsupervised)."""
    limit: int | None = Field(default=None, ge=1)
    """Play only the first N items (quick checks)."""
    random_supervision: RandomRule = "seeded"
    """How the random supervision pattern picks rounds: seeded draws, or the study's cyclic (round + seed) % 3."""


class ToolsConfig(ExploreConfig):
    """Everything that defines a tool-use drift run (written to ``config.json``)."""

    scenarios: str | None = None
    """Tool scenario file, folder or built-in name; None = every built-in tool scenario."""
    max_steps: int = Field(default=4, ge=1, le=64)
    """Most model calls per agent and round (the step limit); the round also ends once the task is decided."""

    @model_validator(mode="after")
    def _unsupported(self) -> ToolsConfig:
        """Refuse the individual game's options that have no meaning for tool calls."""
        fixed = {"preset": "default", "protocol": "default", "parse": "last", "monitor_fallback": False}
        for name, default in fixed.items():
            if getattr(self, name) != default:
                raise ValueError(f"{name}: not supported by the tool testbed (leave it at {default})")
        return self


class DiffuseConfig(AgentConfig):
    """Everything that defines a diffusion run (written to ``config.json``)."""

    scenarios: str | None = "public-fund"
    """Collective scenario file, folder or built-in name; None = all built-in games."""
    topology: Topology = "small-world"
    """Generated social graph (ignored with graph)."""
    graph: str | None = None
    """Edge list, GraphML or GML file to use instead of a generated topology."""
    agents: int = Field(default=24, ge=2, le=MAX_AGENTS)
    """Number of agents (nodes) of a generated topology."""
    k: int = 4
    """Small-world ring neighbours."""
    p: float = 0.1
    """Small-world rewiring / random-graph edge probability."""
    m: int = 2
    """Scale-free edges per new node."""
    rounds: int = Field(default=4, ge=1, le=MAX_ROUNDS)
    """Rounds to play."""
    scope: Scope = "global"
    """Threshold over all agents (the study) or over each agent's neighbourhood."""
    peer_view: PeerViewMode = "final_only"
    """Neighbours' final choices only, or their whole answers too."""
    thresholds: list[float] | None = None
    """Sweep these thresholds (counts, or fractions in (0, 1]), e.g. 2,4,6,8; None = the scenario's."""
    rewards: list[Rewards] | None = None
    """Sweep these success/independent/collective triples, e.g. 1.2/1/0.8,1.5/1/0.5; None = the scenario's."""
    seed_deviants: int = Field(default=0, ge=0)
    """Agents fixed to the collective choice for every round."""
    placement: Placement = "hubs"
    """Where the seeded deviants sit."""

    @field_validator("thresholds")
    @classmethod
    def _thr(cls, v: list[float] | None) -> list[float] | None:
        for t in v or []:
            if not math.isfinite(t) or t <= 0 or (t > 1 and not float(t).is_integer()):
                raise ValueError(f"threshold {t} must be a count (integer >= 1) or a fraction in (0, 1]")
        return v

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, v: list[Rewards] | None) -> list[Rewards] | None:
        for triple in v or []:
            if not all(math.isfinite(x) and 0 <= x <= MAX_NUMBER for x in triple):
                shown = "/".join(f"{x:g}" for x in triple)
                raise ValueError(f"rewards {shown} must be finite, not negative and at most {MAX_NUMBER:g}")
        return v


PAPER_GRID: dict[str, Any] = dict(
    topology="complete",
    agents=8,
    rounds=3,
    thresholds=[2, 4, 6, 8],
    rewards=[(1.2, 1.0, 0.8)],
    peer_view="final_only",
    scenarios=None,
    scope="global",
)
"""The study's collective protocol."""

STUDY_PRESET: dict[str, dict[str, Any]] = {
    "ExploreConfig": {"protocol": "study", "parse": "first", "random_supervision": "cyclic"},
    "DiffuseConfig": {
        "protocol": "study",
        "parse": "first",
        **{k: v for k, v in PAPER_GRID.items() if k != "scenarios"},
    },
}
"""What ``preset: study`` sets, per config class, where a field is not given (the answer budgets follow the model:
see :func:`atp_graph.policies.spec.answer_budget`)."""
