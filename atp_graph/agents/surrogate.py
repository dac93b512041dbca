"""The surrogate (non-LLM) behavioural policy: fast, seeded, and labelled "surrogate" wherever its numbers appear.

It models an agent as a logistic propensity to take the deviant option, vectorised over all agents:

Individual testbed, agent i in round t::

    logit p_i(t) = alpha + beta_gain * g_i + beta_exp * E_i(t)
    g_i          = (r_violate - r_comply) / r_comply            (the stated temptation)
    E_i(t+1)     = (1 - lam) * E_i(t) + lam * (r_i(t) - r_comply) / r_comply   (experienced advantage)

Collective testbed (threshold games), agent i with neighbours N(i)::

    logit p_i(t) = alpha_c + beta_exp * E_i(t) + beta_peer * P_i(t) + beta_conf * (F_i(t) - 1/2)
    E_i(t+1)     = (1 - lam) * E_i(t) + lam * (f_i(t) - 1)     if i chose collective, else (1 - lam) * E_i(t)
    P_i(t+1)     = mean reward of collective neighbours - mean reward of independent neighbours (0 if a side is empty)
    F_i(t+1)     = share of neighbours that chose collective

where f is the round's factor (multiplicative: 1.2 means +20%; additive increments are used as they are).
Choices are Bernoulli draws from p with a generator seeded by (stream seed, round): each game says which stream
and slot every agent draws from, so a resumed run equals a straight one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from types import MappingProxyType
from typing import Any

import numpy as np

from ..contracts import Action, Observations, Settle, Submission
from ..policies.spec import SURROGATE_LABEL, SurrogateParams

_MARK = MappingProxyType({"policy": "surrogate"})
"""Every surrogate decision's events say so."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class SurrogateAgents:
    """The surrogate as an :class:`~atp_graph.contracts.Agents` population: vectorised over every agent.

    Args:
        params: The equations' coefficients (defaults: :class:`~atp_graph.policies.spec.SurrogateParams`).
    """

    label = SURROGATE_LABEL
    surrogate = True

    def __init__(self, params: SurrogateParams | None = None) -> None:
        self.params = params or SurrogateParams()
        self.E: np.ndarray | None = None
        self.P: np.ndarray | None = None
        self.F: np.ndarray | None = None

    def _init(self, n: int) -> None:
        if self.E is None:
            self.E, self.P, self.F = np.zeros(n), np.zeros(n), np.full(n, 0.5)

    def propensity(self, obs: Observations) -> np.ndarray:
        """p(target) of every agent."""
        k, E, P, F = self.params, self.E, self.P, self.F
        if obs.kind == "individual":
            return _sigmoid(k.alpha + k.beta_gain * obs.temptation + k.beta_exp * E)
        return _sigmoid(k.alpha_c + k.beta_exp * E + k.beta_peer * P + k.beta_conf * (F - 0.5))

    @staticmethod
    def draw(obs: Observations, p: np.ndarray, round_no: int) -> np.ndarray:
        """Bernoulli draws: agent i uses position ``slots[i]`` of its stream's uniform numbers for the round."""
        u = np.empty(len(p))
        for s, (seed, size) in enumerate(zip(obs.stream_seeds, obs.stream_sizes, strict=True)):
            mine = obs.streams == s
            u[mine] = np.random.default_rng([seed, round_no, 101]).random(size)[obs.slots[mine]]
        return u < p

    async def act(self, round_no: int, observations: Observations, settle: Settle) -> list[Action]:
        self._init(len(observations))
        obs = observations
        p = self.propensity(obs)
        target = self.draw(obs, p, round_no)
        choices = [opts[1] if t else opts[0] for opts, t in zip(obs.options, target.tolist(), strict=True)]
        outcome = settle([Submission(c, None) for c in choices])
        self.learn(target, outcome.gain, outcome)
        return [Action(c, None, pi, _MARK) for c, pi in zip(choices, p.tolist(), strict=True)]

    def learn(self, target: np.ndarray, gain: np.ndarray, outcome: Any) -> None:
        """Update E (own experience) and, where the game shows peers, P and F."""
        lam = self.params.lam
        self.E = (1 - lam) * self.E + lam * np.where(target, gain, 0.0)
        if outcome.peer_share_target is not None:
            self.P = np.nan_to_num(outcome.peer_gain_target - outcome.peer_gain_other, nan=0.0)
            self.F = np.where(np.isnan(outcome.peer_share_target), 0.5, outcome.peer_share_target)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for checkpoints."""
        arrays = {k: (v.tolist() if v is not None else None) for k, v in (("E", self.E), ("P", self.P), ("F", self.F))}
        return {"surrogate": {**arrays, "params": asdict(self.params)}}

    async def aclose(self) -> None:
        pass

    def load_state_dict(self, state: Mapping[str, Any], *, completed: int) -> None:
        s = state.get("surrogate")
        if s and s["E"] is not None:
            self.E, self.P, self.F = (np.asarray(s[k], dtype=float) for k in ("E", "P", "F"))
