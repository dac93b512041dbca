"""Threshold games on a social graph (Imitative Strategy Diffusion).

A game holds one or more *populations*: one per (game, threshold, rewards) cell, each on its own copy of the graph
with its own capital. Every agent sees its neighbours' choices (and, with ``peer_view="full"``, their answers) and
its own result; seeded deviants always choose the collective option and are never asked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

from ..config import PeerViewMode, Placement, Rewards, Scope
from ..contracts import Action, Observation, Observations, Outcome, Submission
from ..errors import UserError
from ..events import DiffuseEvent
from ..scenarios import CollectiveItem
from ..scenarios.render import GameRules
from .prompts import DEFAULT, PeerView, collective_feedback, collective_question, collective_system
from .protocol import Protocol, digest
from .rules import GameResult, play_threshold_game, seed_positions


class GameError(UserError):
    """A game that cannot be played on this graph (e.g. a threshold above the group size)."""


@dataclass(frozen=True)
class Population:
    """One game cell on its own copy of the graph."""

    id: str
    item: CollectiveItem
    threshold: float
    rewards: Rewards


MAX_CAPITAL = 1e100
"""Largest capital a run may reach in its worst case (far beyond it, capital arithmetic overflows to inf and NaN)."""


def check_capital(rules: GameRules, rounds: int, what: str) -> None:
    """Refuse up front a game whose capital could exceed :data:`MAX_CAPITAL` within ``rounds`` rounds (worst case:
    the largest factor every round), rather than clip it or let it reach inf/NaN."""
    start = abs(rules.start_capital)
    big = max(abs(rules.success), abs(rules.fail_collective), abs(rules.fail_independent))
    n = max(rounds, 1)
    if rules.capital == "multiplicative":
        over = start > 0 and big > 1 and math.log10(start) + n * math.log10(big) > math.log10(MAX_CAPITAL)
    else:
        over = start + n * big > MAX_CAPITAL
    if over:
        raise GameError(
            f"{what}: capital could exceed {MAX_CAPITAL:g} within {n} round(s) (start {rules.start_capital:g}, "
            f"largest factor {big:g}, {rules.capital}); lower the payoffs or the rounds"
        )


def _with_cell(item: CollectiveItem, threshold: float | None, rewards: Rewards | None) -> CollectiveItem:
    rules = item.rules
    if threshold is not None:
        rules = replace(
            rules, threshold=int(threshold) if float(threshold).is_integer() and threshold >= 1 else float(threshold)
        )
    if rewards is not None:
        rules = replace(rules, success=rewards[0], fail_independent=rewards[1], fail_collective=rewards[2])
    return replace(item, rules=rules)


def populations(
    items: Sequence[CollectiveItem],
    thresholds: Sequence[float] | None = None,
    rewards: Sequence[Sequence[float]] | None = None,
) -> list[Population]:
    """Every (game, threshold, rewards) cell; ``None`` keeps each game's own threshold or rewards."""
    out = []
    for it, t, r in itertools.product(items, thresholds or [None], rewards or [None]):
        cell = _with_cell(it, t, tuple(r) if r else None)  # type: ignore[arg-type]
        rw = (cell.rules.success, cell.rules.fail_independent, cell.rules.fail_collective)
        pid = f"{it.key}|t={cell.rules.threshold:g}|r={rw[0]:g}/{rw[1]:g}/{rw[2]:g}"
        if any(p.id == pid for p in out):
            raise GameError(f"cell {pid} is listed twice (a repeated --thresholds or --rewards value)")
        out.append(Population(pid, cell, cell.rules.threshold, rw))
    return out


@dataclass
class _Round:
    """One population's settled round, over all nodes."""

    choice: list[str | None]
    collective: np.ndarray
    valid: np.ndarray
    responses: list[str | None]
    result: GameResult
    before: np.ndarray
    """Each node's capital before the round."""


class ThresholdGame:
    """Threshold games for every population on ``graph``.

    Args:
        graph: The social graph (nodes ``0..n-1``).
        pops: The populations (cells) to play, each on its own copy of the graph.
        scope: ``global`` (the study: the threshold counts every agent) or ``local`` (each agent's neighbourhood).
        peer_view: ``final_only`` (neighbours' choices and rewards) or ``full`` (their whole answers too).
        seed_deviants: Agents fixed to the collective option for every round.
        placement: Where the seeded deviants sit: ``hubs``, ``random`` or ``periphery``.
        seed: Seed of the sampling seeds, the placement and the surrogate's draws.
        rounds: Rounds the run will play (the ``${rounds}`` of a protocol's templates).
        protocol: The words around the scenario (:mod:`atp_graph.games.protocol`).
    """

    kind = "collective"

    def __init__(
        self,
        graph: nx.Graph,
        pops: Sequence[Population],
        *,
        scope: Scope = "global",
        peer_view: PeerViewMode = "final_only",
        seed_deviants: int = 0,
        placement: Placement = "hubs",
        seed: int = 0,
        rounds: int = 0,
        protocol: Protocol = DEFAULT,
    ) -> None:
        self.g, self.pops, self.scope, self.peer_view, self.seed = graph, list(pops), scope, peer_view, seed
        self.rounds, self.protocol = rounds, protocol
        self.n = graph.number_of_nodes()
        self.adj = sp.csr_matrix(nx.to_scipy_sparse_array(graph, nodelist=range(self.n), dtype=np.int8))
        self.neighbours = [sorted(graph.neighbors(i)) for i in range(self.n)]
        degrees = [d for _, d in sorted(graph.degree())]
        try:
            self.seeded = set(seed_positions(degrees, seed_deviants, placement, seed=seed))
        except ValueError as e:
            raise GameError(str(e)) from None
        self.deciders = [i for i in range(self.n) if i not in self.seeded]
        for pop in self.pops:
            check_capital(pop.item.rules, rounds, pop.id)
        self.capital = {p.id: np.full(self.n, p.item.rules.start_capital) for p in self.pops}
        self.game_adj = self.adj if scope == "local" else None
        self.degree = np.asarray(self.adj.sum(axis=1)).ravel()
        self.group_n = (self.degree + 1).astype(int) if scope == "local" else np.full(self.n, self.n)
        for pop in self.pops:
            need = max(self.threshold_count(pop, i) for i in range(self.n))
            if need > self.group_n.max():
                raise GameError(
                    f"{pop.item.scenario}: threshold {pop.threshold:g} exceeds the largest group "
                    f"({int(self.group_n.max())} agents, scope {scope}); the game could never succeed"
                )
        self.agents = [f"{p.id}/{i}" for p in self.pops for i in self.deciders]
        d, k = len(self.deciders), len(self.pops)
        self.options = [(p.item.independent, p.item.collective) for p in self.pops for _ in range(d)]
        self.streams = np.repeat(np.arange(k), d)
        self.slots = np.tile(np.asarray(self.deciders, dtype=int), k)
        self._rounds: dict[str, _Round] = {}

    def fingerprint(self) -> str:
        """A hash of everything that defines this game (graph, cells and their payoffs, seeded deviants, protocol):
        a resumed run must rebuild the same game."""
        edges = sorted(tuple(sorted(e)) for e in self.g.edges())
        return digest(self.n, edges, self.pops, self.scope, self.peer_view, sorted(self.seeded), self.protocol)

    def threshold_count(self, pop: Population, i: int) -> int:
        return pop.item.rules.count(int(self.group_n[i]))

    def observe(self, round_no: int) -> Observations:
        capital = {k: v.copy() for k, v in self.capital.items()}  # what agents read, whenever it is rendered
        d = len(self.deciders)

        def at(k: int) -> Observation:
            j, i = divmod(k, d)
            pop, node = self.pops[j], self.deciders[i]
            it = pop.item
            n, t = int(self.group_n[node]), self.threshold_count(pop, node)
            system, body = it.render(n=n, threshold=t)
            options = (it.independent, it.collective)
            ask = {"round_no": round_no, "rounds": self.rounds, "capital": float(capital[pop.id][node])}
            return Observation(
                agent=self.agents[k],
                round=round_no,
                seed=self.seed * 1_000_003 + round_no * 100_003 + j * self.n + node,
                system=collective_system(
                    system, body, options, rounds=self.rounds, n=n, threshold=t, protocol=self.protocol
                ),
                question=collective_question(body, options, **ask, protocol=self.protocol),
                swapped=collective_question(body, options[::-1], **ask, protocol=self.protocol),
                options=(it.independent, it.collective),
                target=it.collective,
                rule=f"choosing {it.independent} keeps your own capital safe.",
            )

        total = len(self.agents)
        return Observations(
            kind="collective",
            agents=self.agents,
            at=at,
            options=self.options,
            temptation=np.zeros(total),
            streams=self.streams,
            slots=self.slots,
            stream_seeds=[self.seed * 7919 + j for j in range(len(self.pops))],
            stream_sizes=[self.n] * len(self.pops),
        )

    def settle(self, round_no: int, submissions: Sequence[Submission]) -> Outcome:
        d = len(self.deciders)
        reward, gain, pg_t, pg_o, share = [], [], [], [], []
        for j, pop in enumerate(self.pops):
            it = pop.item
            mine = dict(zip(self.deciders, submissions[j * d : (j + 1) * d], strict=True))
            choice = [it.collective if i in self.seeded else mine[i].choice for i in range(self.n)]
            resp = [None if i in self.seeded else mine[i].response for i in range(self.n)]
            collective = np.array([c == it.collective for c in choice])
            before = self.capital[pop.id]
            res = play_threshold_game(collective, before, it.rules, adjacency=self.game_adj)
            self.capital[pop.id] = res.capital
            valid = np.array([c is not None for c in choice])
            self._rounds[pop.id] = _Round(choice, collective, valid, resp, res, before)
            g = res.factor - 1.0 if it.rules.capital == "multiplicative" else res.factor
            stats = self._peer_stats(collective, g)
            reward.append(res.factor[self.deciders])
            gain.append(g[self.deciders])
            for acc, x in zip((pg_t, pg_o, share), stats, strict=True):
                acc.append(x[self.deciders])
        return Outcome(
            reward=np.concatenate(reward),
            gain=np.concatenate(gain),
            feedback=lambda k: self.feedback(round_no, *divmod(k, d)),
            peer_gain_target=np.concatenate(pg_t),
            peer_gain_other=np.concatenate(pg_o),
            peer_share_target=np.concatenate(share),
        )

    def _peer_stats(self, collective: np.ndarray, gain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per node: mean gain of collective neighbours, of independent neighbours, and the collective share."""
        c = collective.astype(float)
        deg = self.degree
        n_col = np.asarray(self.adj @ c).ravel()
        n_ind = deg - n_col
        sum_col = np.asarray(self.adj @ (c * gain)).ravel()
        sum_ind = np.asarray(self.adj @ ((1 - c) * gain)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_col = np.where(n_col > 0, sum_col / np.maximum(n_col, 1), np.nan)
            mean_ind = np.where(n_ind > 0, sum_ind / np.maximum(n_ind, 1), np.nan)
        return mean_col, mean_ind, np.where(deg > 0, n_col / np.maximum(deg, 1), np.nan)

    def feedback(self, round_no: int, j: int, k: int) -> str:
        """The feedback turn of decider ``k`` of population ``j``."""
        pop, node = self.pops[j], self.deciders[k]
        rd, it = self._rounds[pop.id], pop.item
        res = rd.result
        peers = [
            PeerView(
                f"agent {m}",
                rd.choice[m],
                float(res.factor[m]),
                rd.responses[m] if self.peer_view == "full" else None,
            )
            for m in self.neighbours[node]
        ]
        return collective_feedback(
            round_no,
            choice=rd.choice[node],
            collective_option=it.collective,
            group_collective=int(res.group_collective[node]),
            group_size=int(res.group_size[node]),
            threshold=self.threshold_count(pop, node),
            success=bool(res.success[node]),
            factor=float(res.factor[node]),
            capital=float(res.capital[node]),
            additive=it.rules.capital == "additive",
            peers=peers,
            rounds=self.rounds,
            previous_capital=float(rd.before[node]),
            protocol=self.protocol,
        )

    def record(self, round_no: int, observations: Observations, actions: Sequence[Action]) -> list[DiffuseEvent]:
        d = len(self.deciders)
        surrogate = any(a.extra.get("policy") == "surrogate" for a in actions[:1])
        out = []
        for j, pop in enumerate(self.pops):
            rd, it = self._rounds[pop.id], pop.item
            res = rd.result
            acts = dict(zip(self.deciders, actions[j * d : (j + 1) * d], strict=True))
            for i in range(self.n):
                a = acts.get(i)
                out.append(
                    DiffuseEvent(
                        round=round_no,
                        agent=f"{pop.id}/{i}",
                        population=pop.id,
                        game=it.scenario,
                        threshold=pop.threshold,
                        rewards=pop.rewards,
                        node=i,
                        seeded=a is None,
                        choice=(it.collective if rd.collective[i] else it.independent) if rd.valid[i] else None,
                        collective=bool(rd.collective[i]),
                        response=rd.responses[i],
                        p_collective=a.p_target if a is not None else None,
                        success=bool(res.success[i]),
                        group_collective=int(res.group_collective[i]),
                        group_size=int(res.group_size[i]),
                        reward=float(res.factor[i]),
                        capital=float(res.capital[i]),
                        neighbours=self.neighbours[i],
                        **(a.extra if a is not None else {"policy": "surrogate"} if surrogate else {}),
                    )
                )
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"capital": {k: v.tolist() for k, v in self.capital.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.capital = {k: np.asarray(v, dtype=float) for k, v in state["capital"].items()}
