"""The contracts that join the parts: a :class:`Game` poses rounds, :class:`Agents` answer them.

One round, whatever the testbed (see :func:`atp_graph.run.play_rounds`)::

    observations = game.observe(r)                      # what every agent is asked
    actions = await agents.act(r, observations, settle) # one batched model call per rendezvous
        settle(submissions) -> game.settle(r, ...)      # pays every agent once all choices are in
    events = game.record(r, observations, actions)      # typed events (atp_graph.events)
    -> the run folder commits the round (events + checkpoint) before the next one starts

A new testbed is one new :class:`Game`; a new kind of decision maker is one new :class:`Agents` (today: LLM agents
on a LangGraph graph, the surrogate, and a user's own LangGraph runnable). Language models stay behind
:class:`atp_graph.policies.Policy`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from .errors import UserError
from .events import Event

GameKind = Literal["individual", "collective"]


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What one agent is asked in one round (the words, the options and its sampling seed)."""

    agent: str
    """Agent id; also the agent's LangGraph ``thread_id``."""
    round: int
    """Round number, from 1."""
    seed: int
    """Per-decision sampling seed."""
    system: str
    """System prompt."""
    question: str
    """This round's question, options in the listed order, ending with the answer instruction."""
    swapped: str
    """The same question with the options listed in the other order (score mode averages both)."""
    options: tuple[str, str]
    """The safe option first, then the target (the violating or collective one)."""
    target: str
    """The option whose rate is measured."""
    rule: str = ""
    """The rule restated by re-anchoring (empty = nothing to restate)."""

    def __post_init__(self) -> None:
        if len(set(self.options)) != 2 or self.target != self.options[1]:
            raise ValueError(f"an observation needs two distinct options with the target second, got {self.options}")


@dataclass(frozen=True, kw_only=True)
class Observations:
    """Every agent's observation for one round, plus the numeric view the surrogate reads.

    ``at(i)`` renders agent i's words; games render them lazily so a 100,000-agent surrogate run never does.
    """

    kind: GameKind
    """Which family of game asks."""
    agents: Sequence[str]
    """Agent ids, in a fixed order (the order of every per-agent array)."""
    at: Callable[[int], Observation]
    """Agent i's observation."""
    options: Sequence[tuple[str, str]]
    """Agent i's options: the safe one, then the target."""
    temptation: np.ndarray
    """Stated advantage of the target option per agent (individual: (high - low) / low; collective: 0)."""
    streams: np.ndarray
    """Random stream of each agent (the surrogate draws agent i's choice from stream ``streams[i]``)."""
    slots: np.ndarray
    """Position of each agent in its stream."""
    stream_seeds: Sequence[int]
    """Seed of each stream."""
    stream_sizes: Sequence[int]
    """Draws per stream and round."""

    def __post_init__(self) -> None:
        if len(set(self.agents)) != len(self.agents):
            seen: set[str] = set()
            dup = next(a for a in self.agents if a in seen or seen.add(a))  # type: ignore[func-returns-value]
            raise UserError(f"agent id {dup!r} appears twice: two agents would share one memory thread")

    def __len__(self) -> int:
        return len(self.agents)

    def __iter__(self):
        return (self.at(i) for i in range(len(self.agents)))


class Submission(NamedTuple):
    """One agent's final answer handed to the game (a tuple: built once per agent and round)."""

    choice: str | None
    """The chosen option; ``None`` = the answer named no valid option."""
    response: str | None
    """The raw answer (``None`` for the surrogate)."""


class Settlement(NamedTuple):
    """What the game tells one agent after a round."""

    reward: float
    """What the agent was paid."""
    feedback: str
    """The feedback turn the agent reads."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """A settled round, per agent (arrays in the order of :attr:`Observations.agents`)."""

    reward: np.ndarray
    """What each agent was paid."""
    gain: np.ndarray
    """Each agent's experienced advantage (individual: (reward - low) / low; collective: factor - 1)."""
    feedback: Callable[[int], str]
    """Agent i's feedback text (rendered on demand)."""
    peer_gain_target: np.ndarray | None = None
    """Mean gain of the agent's peers who chose the target (NaN when none); ``None`` = no peers seen."""
    peer_gain_other: np.ndarray | None = None
    """Mean gain of the agent's peers who chose the other option (NaN when none)."""
    peer_share_target: np.ndarray | None = None
    """Share of the agent's peers who chose the target (NaN for an agent without peers)."""

    def settlement(self, i: int) -> Settlement:
        return Settlement(float(self.reward[i]), self.feedback(i))


class Action(NamedTuple):
    """What one agent did in one round (a tuple: built once per agent and round)."""

    choice: str | None
    """The option the game was handed (after any runtime defense)."""
    response: str | None
    """The raw answer; ``None`` for the surrogate."""
    p_target: float | None = None
    """p(target) in score mode and for the surrogate."""
    extra: Mapping[str, Any] = MappingProxyType({})
    """Event fields only some agents have (prompt_hash, question, lesson, proposed_choice, lesson_refused...)."""


Settle = Callable[[Sequence[Submission]], Outcome]
"""Pays a round once every agent's submission is in (submissions in the order of the observations)."""


@runtime_checkable
class Game(Protocol):
    """One testbed's rules: who is asked what, how a round is paid, what is recorded."""

    kind: GameKind

    def observe(self, round_no: int) -> Observations:
        """Every agent's observation for ``round_no``."""
        ...

    def settle(self, round_no: int, submissions: Sequence[Submission]) -> Outcome:
        """Pay the round (pure rules; the game's own state, e.g. capital, moves on)."""
        ...

    def record(self, round_no: int, observations: Observations, actions: Sequence[Action]) -> list[Event]:
        """The round's typed events (call after :meth:`settle`)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for the round checkpoint."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Agents(Protocol):
    """A population that answers observations: LLM agents, the surrogate, or a user's runnable."""

    label: str
    """How tables and plots name the decision maker (the surrogate says SURROGATE)."""
    surrogate: bool
    """Whether these are non-LLM agents (their numbers are labelled as such everywhere)."""

    def act(self, round_no: int, observations: Observations, settle: Settle) -> Awaitable[list[Action]]:
        """Answer every observation; call ``settle`` once with every submission; return one action per agent."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for the round checkpoint (memory that lives elsewhere, e.g. a checkpointer, is not here)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any], *, completed: int) -> None:
        """Continue after round ``completed`` of an interrupted run."""
        ...

    async def aclose(self) -> None:
        """Release what the agents hold open (checkpointer connections)."""
        ...
