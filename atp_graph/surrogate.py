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
Choices are Bernoulli draws from p with a generator seeded by (seed, round), so a resumed run equals a straight one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SURROGATE_LABEL = "sim (SURROGATE: non-LLM behavioural policy)"


@dataclass(frozen=True, kw_only=True)
class SurrogateParams:
    """Coefficients of the surrogate's equations (see the module docstring)."""

    alpha: float = -2.0
    """Individual alignment prior (logit of violating with no temptation or experience)."""
    beta_gain: float = 1.0
    """Weight of the stated temptation g."""
    alpha_c: float = -1.0
    """Collective-game prior for the collective option."""
    beta_exp: float = 4.0
    """Weight of the agent's own experienced advantage E."""
    beta_peer: float = 6.0
    """Weight of what collective neighbours earned over independent ones."""
    beta_conf: float = 1.5
    """Weight of conformity to neighbours' choices."""
    lam: float = 0.5
    """Learning rate of E."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Surrogate:
    """Vectorised state of ``n`` surrogate agents."""

    def __init__(self, n: int, *, seed: int, params: SurrogateParams | None = None):
        self.params = params or SurrogateParams()
        self.seed = seed
        self.E = np.zeros(n)
        self.P = np.zeros(n)
        self.F = np.full(n, 0.5)

    def _draw(self, p: np.ndarray, round_no: int) -> np.ndarray:
        return np.random.default_rng([self.seed, round_no, 101]).random(len(p)) < p

    def decide_individual(self, gain: np.ndarray, round_no: int) -> tuple[np.ndarray, np.ndarray]:
        """``(violate, p_violate)`` for every agent."""
        k = self.params
        p = _sigmoid(k.alpha + k.beta_gain * gain + k.beta_exp * self.E)
        return self._draw(p, round_no), p

    def learn_individual(self, reward: np.ndarray, r_comply: np.ndarray) -> None:
        """Update E from this round's rewards."""
        lam = self.params.lam
        self.E = (1 - lam) * self.E + lam * (reward - r_comply) / np.maximum(np.abs(r_comply), 1e-9)

    def decide_collective(self, round_no: int) -> tuple[np.ndarray, np.ndarray]:
        """``(collective, p_collective)`` for every agent."""
        k = self.params
        p = _sigmoid(k.alpha_c + k.beta_exp * self.E + k.beta_peer * self.P + k.beta_conf * (self.F - 0.5))
        return self._draw(p, round_no), p

    def learn_collective(self, collective: np.ndarray, gain: np.ndarray, adjacency) -> None:
        """Update E, P and F from this round (``gain`` = factor - 1 or the additive increment)."""
        lam = self.params.lam
        self.E = (1 - lam) * self.E + lam * np.where(collective, gain, 0.0)
        c = collective.astype(float)
        deg = np.asarray(adjacency.sum(axis=1)).ravel()
        n_col = np.asarray(adjacency @ c).ravel()
        n_ind = deg - n_col
        sum_col = np.asarray(adjacency @ (c * gain)).ravel()
        sum_ind = np.asarray(adjacency @ ((1 - c) * gain)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_col = np.where(n_col > 0, sum_col / np.maximum(n_col, 1), np.nan)
            mean_ind = np.where(n_ind > 0, sum_ind / np.maximum(n_ind, 1), np.nan)
        self.P = np.nan_to_num(mean_col - mean_ind, nan=0.0)
        self.F = np.where(deg > 0, n_col / np.maximum(deg, 1), 0.5)

    def state_dict(self) -> dict:
        """JSON-able state for checkpoints."""
        return {"E": self.E.tolist(), "P": self.P.tolist(), "F": self.F.tolist(), "params": asdict(self.params)}

    def load_state_dict(self, state: dict) -> None:
        self.E, self.P, self.F = (np.asarray(state[k], dtype=float) for k in ("E", "P", "F"))
