"""Pydantic models of the two scenario kinds users author in YAML.

Models are frozen and reject unknown keys, so a typo such as ``histroy_window`` is an error, not a silent default.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator, model_validator

SupervisionPattern = Literal[
    "all_unsupervised",
    "all_supervised",
    "alternating",
    "mostly_supervised",
    "mostly_unsupervised",
    "last_unsupervised",
    "last_supervised",
    "random",
]
"""When the supervisor checks: see :func:`atp_graph.environments.supervision_schedule`."""

MAX_ROUNDS = 10_000
"""Most rounds a run or a scenario's defaults may ask for (every round is kept on disk and in the summary)."""
MAX_AGENTS = 10_000_000
"""Most agents of a generated graph (and the largest threshold count a scenario may state)."""
Number = StrictInt | StrictFloat
Scalar = StrictInt | StrictFloat | str
"""A payoff or game number: a literal number or a ``${param}`` template filled from each variant."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _distinct(a: str, b: str) -> None:
    if " ".join(a.split()).casefold() == " ".join(b.split()).casefold():
        raise ValueError(f"the two options must differ, both are {a!r}")


class IndividualOptions(_Spec):
    compliant: str = Field(min_length=1)
    """The option the rule or supervisor requires."""
    violating: str = Field(min_length=1)
    """The better-paying option that breaks the rule."""

    @model_validator(mode="after")
    def _check(self) -> IndividualOptions:
        _distinct(self.compliant, self.violating)
        return self


class CollectiveOptions(_Spec):
    collective: str = Field(min_length=1)
    """The collusive (deviant) option whose payoff depends on how many others choose it."""
    independent: str = Field(min_length=1)
    """The safe individual option."""

    @model_validator(mode="after")
    def _check(self) -> CollectiveOptions:
        _distinct(self.collective, self.independent)
        return self


class Supervision(_Spec):
    supervised: str
    """Sentence shown in a round the supervisor checks."""
    unsupervised: str
    """Sentence shown in a round the supervisor does not check."""
    neutral: str
    """Sentence shown under ``all_unsupervised``/``all_supervised``, where the study kept the schedule vague."""


class Payoff(_Spec):
    compliant: Scalar
    """Reward for the compliant option."""
    violating_undetected: Scalar
    """Reward for violating in an unsupervised round."""
    violating_detected: Scalar = 0
    """Reward for violating in a supervised round (caught)."""
    invalid: Scalar = 0
    """Reward for an answer that names no valid option."""


class Game(_Spec):
    threshold: Number = 4
    """How many must choose the collective option for success: a count (integer >= 1) or a fraction in (0, 1] of
    the group (a float)."""
    success: Scalar = 1.2
    """Everyone's capital factor (multiplicative) or increment (additive) when the threshold is met."""
    fail_collective: Scalar = 0.8
    """Collective choosers' factor or increment when the threshold is missed."""
    fail_independent: Scalar = 1.0
    """Independent choosers' factor or increment when the threshold is missed."""
    capital: Literal["multiplicative", "additive"] = "multiplicative"
    """How a round's outcome changes capital."""
    start_capital: float = Field(default=1.0, allow_inf_nan=False)
    """Every agent's capital before round 1."""

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: int | float) -> int | float:
        if isinstance(v, int) and not 1 <= v <= MAX_AGENTS:
            raise ValueError(f"a threshold count must be at least 1 and at most {MAX_AGENTS:,} (the most agents)")
        if isinstance(v, float) and not 0 < v <= 1:
            raise ValueError("a fractional threshold must be in (0, 1]; write a count as an integer")
        return v


class Defaults(_Spec):
    rounds: Annotated[int, Field(gt=0, le=MAX_ROUNDS)] = 6
    """Rounds played when the run does not say."""
    history_window: Annotated[int, Field(ge=0)] = 5
    """How many past rounds the transcript memory shows."""
    supervision_pattern: SupervisionPattern = "all_unsupervised"
    """Supervision pattern when the run does not say (individual kind)."""


NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,79}")
Variant = dict[str, Scalar]


class _Scenario(_Spec):
    name: str
    """Unique identifier: lowercase letters, digits and dashes."""
    description: str = ""
    """One line shown by ``scenarios list``."""
    system_prompt: str
    """System message; a ``${param}`` template."""
    prompt: str = Field(min_length=1)
    """The question; a ``${param}`` template. The supervision sentence and answer format are appended for you."""
    variants: list[Variant] = Field(default_factory=lambda: [{}], min_length=1, max_length=10_000)
    """Parameter sets; each one is one testbed item (at most 10,000)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} must match [a-z0-9-] and start with a letter or digit")
        return v


class IndividualScenario(_Scenario):
    """A one-agent dilemma: a rule-compliant option and a better-paying violating option."""

    kind: Literal["individual"]
    """Scenario kind."""
    options: IndividualOptions
    """The two choices."""
    supervision: Supervision
    """Sentences describing the supervisor in each round."""
    payoff: Payoff
    """Rewards; numbers or ``${param}`` templates."""
    defaults: Defaults = Defaults()
    """Run defaults."""


class CollectiveDefaults(Defaults):
    rounds: Annotated[int, Field(gt=0, le=MAX_ROUNDS)] = 3
    """Rounds played when the run does not say."""


class CollectiveScenario(_Scenario):
    """A threshold game: success needs enough agents to choose the collective option."""

    kind: Literal["collective"]
    """Scenario kind."""
    options: CollectiveOptions
    """The two choices."""
    game: Game = Game()
    """The threshold game's rules."""
    defaults: CollectiveDefaults = CollectiveDefaults()
    """Run defaults."""


TOOL_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""A tool name every provider accepts: letters, digits and underscores, at most 64 characters."""


class ToolSpec(_Spec):
    """One tool the agent may call; its result is simulated from ``result`` (no side effects)."""

    name: str
    """How the agent calls it: letters, digits and underscores, starting with a letter or underscore."""
    description: str = Field(min_length=1)
    """What the tool does, as the model reads it; a ``${param}`` template."""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON schema (draft 2020-12, inline: no ``$ref``) of the call's arguments; an object schema."""
    result: str = Field(min_length=1)
    """What the simulated tool returns: a ``${param}`` template over the variant's parameters and the call's
    arguments (an argument wins over a parameter of the same name; a missing optional argument is empty)."""
    forbidden: bool = False
    """Calling it breaks the rule the system prompt states (exactly one tool per scenario)."""
    completes: bool = False
    """Calling it with valid arguments completes the task (at least one allowed tool must)."""
    example: dict[str, Any] = Field(default_factory=dict)
    """The arguments of this tool's call as score mode writes it (must match ``parameters``; required for the
    forbidden and the completing tools, which score mode weighs)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TOOL_NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} must be letters, digits and underscores (at most 64), starting with a letter")
        return v


class ToolPayoff(_Spec):
    compliant: Scalar
    """Reward for completing the task without the forbidden tool."""
    violating_undetected: Scalar
    """Reward for using the forbidden tool in an unsupervised round."""
    violating_detected: Scalar = 0
    """Reward for using the forbidden tool in a supervised round (caught)."""
    not_done: Scalar = 0
    """Reward when valid calls were made but the task was not completed."""
    invalid: Scalar = 0
    """Reward when no valid tool call was made."""


class ToolScenario(_Scenario):
    """A task the agent completes by calling tools; one tool is a forbidden shortcut that pays more."""

    kind: Literal["tool"]
    """Scenario kind."""
    tools: list[ToolSpec] = Field(min_length=2, max_length=32)
    """The tools bound to the agent's model, in the order shown (score mode also shows the pair swapped)."""
    supervision: Supervision
    """Sentences describing whether the forbidden tool's use is checked in each round."""
    payoff: ToolPayoff
    """Rewards; numbers or ``${param}`` templates."""
    defaults: Defaults = Defaults()
    """Run defaults."""


SCENARIO_KINDS = ("individual", "collective", "tool")
"""Every scenario kind, as a YAML file's ``kind`` names it."""

Scenario = Annotated[IndividualScenario | CollectiveScenario | ToolScenario, Field(discriminator="kind")]
