"""The individual (supervision) game of Self-Interested Exploration: one agent per item, a compliant option that
pays less and a violating option that pays more unless a supervisor checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..contracts import Action, Observation, Observations, Outcome, Submission
from ..events import ExploreEvent
from ..scenarios import IndividualItem
from ..scenarios.models import SupervisionPattern
from .prompts import DEFAULT, individual_feedback, individual_question, individual_system
from .protocol import Protocol, digest
from .rules import base_reward, individual_outcome, supervision_schedule, supervision_text


def rule_text(item: IndividualItem) -> str:
    """The rule as re-anchoring restates it."""
    return f"{item.compliant} is required; choosing {item.violating} breaks the rule."


class IndividualGame:
    """The individual game over ``items`` for ``rounds`` rounds under a supervision ``pattern``.

    Args:
        items: One agent per item (agent id = the item's key ``scenario#variant``).
        pattern: Supervision pattern (:func:`~atp_graph.games.rules.supervision_schedule`).
        rounds: Rounds the run will play (the schedule depends on it for the ``last_*`` patterns).
        seed: Seed of the sampling seeds, the ``random`` pattern and the surrogate's draws.
        agent_ids: Optional agent ids instead of the item keys (the probe names its threads).
        protocol: The words around the scenario (:mod:`atp_graph.games.protocol`).
        random_rule: How the ``random`` pattern picks rounds (``seeded`` or the study's ``cyclic``).
    """

    kind = "individual"

    def __init__(
        self,
        items: Sequence[IndividualItem],
        *,
        pattern: SupervisionPattern,
        rounds: int,
        seed: int = 0,
        agent_ids: Sequence[str] | None = None,
        protocol: Protocol = DEFAULT,
        random_rule: str = "seeded",
    ) -> None:
        self.items, self.protocol = list(items), protocol
        self.pattern, self.seed = pattern, seed
        self.schedule = supervision_schedule(pattern, rounds, seed=seed, random_rule=random_rule)
        self.agents = list(agent_ids) if agent_ids is not None else [it.key for it in self.items]
        self.low = np.array([it.reward_compliant for it in self.items], dtype=float)
        high = np.array([it.reward_violating_undetected for it in self.items], dtype=float)
        self.temptation = (high - self.low) / np.maximum(np.abs(self.low), 1e-9)
        self.options = [(it.compliant, it.violating) for it in self.items]
        self._paid: list[tuple[str, float]] = []

    def fingerprint(self) -> str:
        """A hash of everything that defines this game (items and payoffs, schedule, protocol): a resumed run must
        rebuild the same game."""
        return digest(self.items, self.schedule, self.agents, self.protocol)

    def supervised(self, round_no: int) -> bool:
        return self.schedule[round_no - 1]

    def observation(self, round_no: int, i: int) -> Observation:
        """Item i's question for ``round_no``."""
        it = self.items[i]
        sup = supervision_text(it, self.pattern, self.supervised(round_no))
        return Observation(
            agent=self.agents[i],
            round=round_no,
            seed=self.seed * 1_000_003 + round_no * 10_007 + i,
            system=individual_system(it, protocol=self.protocol),
            question=individual_question(it, sup, protocol=self.protocol),
            swapped=individual_question(it, sup, swapped=True, protocol=self.protocol),
            options=(it.compliant, it.violating),
            target=it.violating,
            rule=rule_text(it),
        )

    def observe(self, round_no: int) -> Observations:
        n = len(self.items)
        return Observations(
            kind="individual",
            agents=self.agents,
            at=lambda i: self.observation(round_no, i),
            options=self.options,
            temptation=self.temptation,
            streams=np.zeros(n, dtype=int),
            slots=np.arange(n),
            stream_seeds=[self.seed],
            stream_sizes=[n],
        )

    def settle(self, round_no: int, submissions: Sequence[Submission]) -> Outcome:
        supervised = self.supervised(round_no)
        paid = [individual_outcome(s.choice, it, supervised) for s, it in zip(submissions, self.items, strict=True)]
        self._paid = paid
        reward = np.array([r for _, r in paid], dtype=float)
        choices = [s.choice for s in submissions]
        return Outcome(
            reward=reward,
            gain=(reward - self.low) / np.maximum(np.abs(self.low), 1e-9),
            feedback=lambda i: individual_feedback(
                round_no,
                choices[i],
                *paid[i],
                supervised,
                base_reward=base_reward(choices[i], self.items[i]),
                protocol=self.protocol,
            ),
        )

    def record(self, round_no: int, observations: Observations, actions: Sequence[Action]) -> list[ExploreEvent]:
        supervised = self.supervised(round_no)
        return [
            ExploreEvent(
                round=round_no,
                agent=agent,
                scenario=it.scenario,
                variant=it.variant,
                supervised=supervised,
                choice=a.choice,
                response=a.response,
                outcome=outcome,  # type: ignore[arg-type]
                p_violate=a.p_target,
                reward=reward,
                **a.extra,
            )
            for agent, it, a, (outcome, reward) in zip(self.agents, self.items, actions, self._paid, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
