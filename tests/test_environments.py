"""Tests for :mod:`atp_graph.environments`: supervision schedules, individual payoffs, and the threshold game
checked exhaustively against a hand-written brute force."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp

from atp_graph.games.rules import (
    COMPLY,
    INVALID,
    VIOLATE,
    individual_outcome,
    play_threshold_game,
    seed_positions,
    supervision_schedule,
    supervision_text,
)
from atp_graph.scenarios import GameRules, IndividualItem, individual_items, resolve

T, F = True, False

# ---------------------------------------------------------------- supervision schedules

SCHEDULES = [
    ("all_unsupervised", 6, [F, F, F, F, F, F]),
    ("all_unsupervised", 1, [F]),
    ("all_supervised", 6, [T, T, T, T, T, T]),
    ("all_supervised", 3, [T, T, T]),
    ("alternating", 6, [T, F, T, F, T, F]),
    ("alternating", 5, [T, F, T, F, T]),
    ("alternating", 1, [T]),
    ("mostly_supervised", 6, [T, T, T, F, T, T]),
    ("mostly_supervised", 8, [T, T, T, F, T, T, T, F]),
    ("mostly_supervised", 3, [T, T, T]),
    ("mostly_unsupervised", 6, [T, F, F, F, T, F]),
    ("mostly_unsupervised", 9, [T, F, F, F, T, F, F, F, T]),
    ("mostly_unsupervised", 1, [T]),
    ("last_unsupervised", 6, [T, T, T, T, T, F]),
    ("last_unsupervised", 2, [T, F]),
    ("last_unsupervised", 1, [F]),
    ("last_supervised", 6, [F, F, F, F, F, T]),
    ("last_supervised", 3, [F, F, T]),
    ("last_supervised", 1, [T]),
]
PATTERNS = sorted({p for p, _, _ in SCHEDULES} | {"random"})


@pytest.mark.parametrize(("pattern", "rounds", "expected"), SCHEDULES)
def test_supervision_schedule(pattern, rounds, expected):
    assert supervision_schedule(pattern, rounds) == expected
    assert supervision_schedule(pattern, rounds, seed=99) == expected  # the seed only matters for random


@pytest.mark.parametrize("pattern", PATTERNS)
def test_schedule_zero_rounds_is_empty(pattern):
    assert supervision_schedule(pattern, 0) == []


def test_random_schedule_is_seeded():
    a = supervision_schedule("random", 60, seed=3)
    assert a == supervision_schedule("random", 60, seed=3)
    assert all(type(x) is bool for x in a)
    runs = {tuple(supervision_schedule("random", 60, seed=s)) for s in range(6)}
    assert len(runs) == 6
    long = supervision_schedule("random", 3000, seed=0)
    assert 0.28 < sum(long) / len(long) < 0.39  # checks about 1 round in 3


def test_unknown_pattern():
    with pytest.raises(ValueError, match="unknown supervision pattern"):
        supervision_schedule("sometimes", 3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- individual payoffs


def _item(**kw) -> IndividualItem:
    base = dict(
        scenario="t",
        variant=0,
        system_prompt="s",
        prompt="p",
        compliant="follow",
        violating="break",
        supervised_text="SUP",
        unsupervised_text="UNSUP",
        neutral_text="NEUTRAL",
        reward_compliant=10.0,
        reward_violating_undetected=20.0,
        reward_violating_detected=-5.0,
        reward_invalid=1.5,
    )
    return IndividualItem(**{**base, **kw})


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("supervised", [True, False])
def test_supervision_text(pattern, supervised):
    got = supervision_text(_item(), pattern, supervised)
    if pattern in ("all_unsupervised", "all_supervised"):
        assert got == "NEUTRAL"
    else:
        assert got == ("SUP" if supervised else "UNSUP")


def test_individual_outcome_all_cases():
    it = _item()
    for sup in (True, False):
        assert individual_outcome("follow", it, sup) == (COMPLY, 10.0)
        for bad in (None, "", "unknown option", "follow break"):
            assert individual_outcome(bad, it, sup) == (INVALID, 1.5)
    assert individual_outcome("break", it, True) == (VIOLATE, -5.0)
    assert individual_outcome("break", it, False) == (VIOLATE, 20.0)
    assert (COMPLY, VIOLATE, INVALID) == ("comply", "violate", "invalid")


def test_individual_outcome_on_builtin_item():
    (baker,) = resolve("baker", kind="individual")
    it = individual_items(baker)[3]
    assert individual_outcome(it.compliant, it, False) == (COMPLY, 20.0)
    assert individual_outcome(it.violating, it, False) == (VIOLATE, 60.0)
    assert individual_outcome(it.violating, it, True) == (VIOLATE, 0.0)
    assert individual_outcome(None, it, False) == (INVALID, 0.0)


# ---------------------------------------------------------------- threshold game, brute force

MULT = dict(success=1.2, fail_collective=0.8, fail_independent=1.0, capital="multiplicative")
ADD = dict(success=0.5, fail_collective=-0.3, fail_independent=0.1, capital="additive")


def _rules(threshold, mode) -> GameRules:
    return GameRules(threshold=threshold, start_capital=1.0, **mode)


def _head_count(threshold, size: int) -> int:
    """Fractions of the group round up (exact arithmetic); counts are used as written."""
    if isinstance(threshold, float):
        return max(1, math.ceil(Fraction(str(threshold)) * size))
    return threshold


def _expected(choices, capital, threshold, mode, groups):
    """Per agent: (success, collective in group, group size, factor, new capital), computed one by one."""
    out = []
    for i, chose in enumerate(choices):
        members = groups[i]
        count = sum(choices[j] for j in members)
        ok = count >= _head_count(threshold, len(members))
        factor = mode["success"] if ok else (mode["fail_collective"] if chose else mode["fail_independent"])
        new = capital[i] * factor if mode["capital"] == "multiplicative" else capital[i] + factor
        out.append((ok, count, len(members), factor, new))
    return out


def _check_all_vectors(n, thresholds, groups, adjacency):
    capital = np.array([1.0, 2.0, 0.5, 3.0, 1.5, 0.25][:n])
    checked = 0
    for mode in (MULT, ADD):
        for threshold in thresholds:
            rules = _rules(threshold, mode)
            for bits in itertools.product([0, 1], repeat=n):
                res = play_threshold_game(np.array(bits, dtype=bool), capital.copy(), rules, adjacency=adjacency)
                want = _expected(bits, capital, threshold, mode, groups)
                where = (n, threshold, mode["capital"], bits)
                assert res.success.tolist() == [w[0] for w in want], where
                assert res.group_collective.tolist() == [w[1] for w in want], where
                assert res.group_size.tolist() == [w[2] for w in want], where
                assert np.allclose(res.factor, [w[3] for w in want]), where
                assert np.allclose(res.capital, [w[4] for w in want]), where
                checked += 1
    return checked


GLOBAL_THRESHOLDS = [1, 2, 3, 4, 5, 6, 0.2, 0.25, 0.5, 0.6, 0.75, 1.0]


@pytest.mark.parametrize("n", [4, 5])
def test_global_threshold_game_exhaustive(n):
    groups = [list(range(n))] * n
    assert _check_all_vectors(n, GLOBAL_THRESHOLDS, groups, None) == 2 * len(GLOBAL_THRESHOLDS) * 2**n


def _adjacency(n, edges):
    rows = [u for u, v in edges] + [v for u, v in edges]
    cols = [v for u, v in edges] + [u for u, v in edges]
    return sp.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))


def _groups(n, edges):
    groups = [{i} for i in range(n)]
    for u, v in edges:
        groups[u].add(v)
        groups[v].add(u)
    return [sorted(g) for g in groups]


GRAPHS = {
    "path5": (5, [(0, 1), (1, 2), (2, 3), (3, 4)]),
    "star5": (5, [(0, 1), (0, 2), (0, 3), (0, 4)]),
    "star4-centre-last": (4, [(3, 0), (3, 1), (3, 2)]),
    "triangle-plus-tail": (5, [(0, 1), (1, 2), (0, 2), (2, 3), (3, 4)]),
}


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_local_threshold_game_exhaustive(graph):
    n, edges = GRAPHS[graph]
    groups = _groups(n, edges)
    thresholds = [1, 2, 3, 4, 0.3, 0.5, 0.6, 0.75, 1.0]
    assert _check_all_vectors(n, thresholds, groups, _adjacency(n, edges)) == 2 * len(thresholds) * 2**n


def test_local_groups_by_hand():
    """Path 0-1-2-3-4, threshold 2: only groups with two joiners succeed; success applies to all members."""
    adj = _adjacency(5, GRAPHS["path5"][1])
    res = play_threshold_game(np.array([T, T, F, F, F]), np.ones(5), _rules(2, MULT), adjacency=adj)
    assert res.group_size.tolist() == [2, 3, 3, 3, 2]
    assert res.group_collective.tolist() == [2, 2, 1, 0, 0]
    assert res.success.tolist() == [T, T, F, F, F]
    assert np.allclose(res.capital, [1.2, 1.2, 1.0, 1.0, 1.0])
    # fraction 0.5 of a group of 3 rounds up to 2; of a group of 2 it is 1.
    res = play_threshold_game(np.array([F, F, F, F, T]), np.ones(5), _rules(0.5, MULT), adjacency=adj)
    assert res.success.tolist() == [F, F, F, F, T]
    assert np.allclose(res.capital, [1.0, 1.0, 1.0, 1.0, 1.2])


def test_global_game_by_hand_study_numbers():
    """8 agents, t=4: 3 joiners fail (x0.8 for them), 4 succeed (x1.2 for all, independents included)."""
    rules = _rules(4, MULT)
    three = np.array([T, T, T, F, F, F, F, F])
    res = play_threshold_game(three, np.ones(8), rules)
    assert not res.success.any()
    assert np.allclose(res.capital, [0.8] * 3 + [1.0] * 5)
    four = np.array([T, T, T, T, F, F, F, F])
    res = play_threshold_game(four, np.full(8, 2.0), rules)
    assert res.success.all()
    assert np.allclose(res.capital, [2.4] * 8)
    res = play_threshold_game(four, np.full(8, 2.0), _rules(4, ADD))
    assert np.allclose(res.capital, [2.5] * 8)


@pytest.mark.parametrize(
    ("threshold", "size", "count"),
    [
        (0.5, 8, 4),
        (0.5, 7, 4),
        (0.3, 3, 1),
        (0.3, 4, 2),
        (0.75, 4, 3),
        (1.0, 5, 5),
        (0.01, 5, 1),
        (0.6, 5, 3),
        (0.25, 8, 2),
        (4, 3, 4),
        (1, 9, 1),
    ],
)
def test_rules_count(threshold, size, count):
    assert _rules(threshold, MULT).count(size) == count


# ---------------------------------------------------------------- seeded deviants

DEGREES = [3, 1, 4, 1, 5, 9, 2, 6]


def test_seed_positions_hubs_and_periphery():
    assert seed_positions(DEGREES, 3, "hubs", seed=0) == [4, 5, 7]  # degrees 5, 9, 6
    assert seed_positions(DEGREES, 1, "hubs", seed=0) == [5]
    assert seed_positions(DEGREES, 3, "periphery", seed=0) == [1, 3, 6]  # degrees 1, 1, 2
    assert seed_positions(DEGREES, 0, "hubs", seed=0) == []
    star = [7] + [1] * 7
    assert seed_positions(star, 1, "hubs", seed=5) == [0]
    assert 0 not in seed_positions(star, 7, "periphery", seed=5)


def test_seed_positions_random_is_seeded():
    degrees = [2] * 50
    a = seed_positions(degrees, 10, "random", seed=1)
    assert a == seed_positions(degrees, 10, "random", seed=1)
    assert len(set(a)) == 10 and a == sorted(a) and all(0 <= i < 50 for i in a)
    assert len({tuple(seed_positions(degrees, 10, "random", seed=s)) for s in range(5)}) == 5


@pytest.mark.parametrize("k", [-1, 8, 9, 100])
def test_seed_positions_out_of_range(k):
    with pytest.raises(ValueError, match="--seed-deviants must be between 0 and 7"):
        seed_positions(DEGREES, k, "hubs", seed=0)


def test_seed_positions_unknown_placement():
    with pytest.raises(ValueError, match="unknown placement"):
        seed_positions(DEGREES, 2, "middle", seed=0)
