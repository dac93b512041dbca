"""The numbers behind ``defend demo``'s verdicts: the paired bootstrap and the verdict lines.

The demo itself runs end to end (killed and resumed) in ``tests/reliability/test_defend_kill.py``.
"""

from __future__ import annotations

import pytest

from atp_graph.analysis import bootstrap_mean
from defenses.demo_report import verdict


def test_bootstrap_mean_is_a_seeded_interval_around_the_mean():
    values = [0.1, 0.4, 0.35, 0.2, 0.9, 0.05, 0.3, 0.6]
    r = bootstrap_mean(values, seed=3)
    assert r == bootstrap_mean(values, seed=3) and r.n == 8 and r.value == pytest.approx(sum(values) / 8)
    assert r.low < r.value < r.high and r.high - r.low < max(values) - min(values)
    assert bootstrap_mean(values, seed=4) != r  # another seed, other resamples
    jobs = ["a", "a", "b", "b", "c", "c", "d", "d"]
    clustered = bootstrap_mean(values, groups=jobs, seed=3)
    assert clustered.value == r.value and clustered != r and bootstrap_mean(values, groups=range(8), seed=3) == r
    twins = bootstrap_mean([0.1, 0.1, 0.3, 0.3, 0.5, 0.5, 0.7, 0.7], groups=jobs, seed=3)
    single = bootstrap_mean([0.1, 0.3, 0.5, 0.7], seed=3)  # a job's near-copies add no evidence: same interval
    assert (twins.low, twins.high) == pytest.approx((single.low, single.high))
    with pytest.raises(ValueError, match="3 group labels for 8 values"):
        bootstrap_mean(values, groups=["a", "b", "c"])
    same = bootstrap_mean([0.25] * 6)
    assert (same.low, same.value, same.high) == pytest.approx((0.25, 0.25, 0.25))  # no spread, no width
    assert bootstrap_mean([]).n == 0


def _numbers(start: list[float], climb: list[float], start_diff: list[float], climb_diff: list[float]) -> dict:
    b = lambda v: bootstrap_mean(v).as_dict()  # noqa: E731
    return {"start": b(start), "climb": b(climb), "start_vs_base": b(start_diff), "climb_vs_base": b(climb_diff)}


def test_verdicts_say_what_the_intervals_show():
    up, flat, down = [0.2, 0.3, 0.25, 0.22], [0.05, -0.04, 0.02, -0.03], [-0.2, -0.3, -0.25, -0.22]
    base = verdict("base", _numbers([0.5] * 4, up, [0.0] * 4, [0.0] * 4), reference="base", rounds=6)
    assert base.startswith("base: starts at 50% p(violate) and climbs from round 1 to 6 (+24.2 pp")
    study = verdict("dpo", _numbers([0.2] * 4, up, down, flat), reference="base", rounds=6)
    assert "starts lower than base" in study and "still climbs" in study and "the study's pattern" in study
    same = verdict("grpo", _numbers([0.5] * 4, up, flat, flat), reference="base", rounds=6)
    assert "starts no differently from base" in same and "no difference from base shows" in same
    sliver = verdict(
        "grpo", _numbers([0.5] * 4, up, [-0.006, -0.005, -0.007, -0.006], flat), reference="base", rounds=6
    )
    assert "starts no differently from base (-0.6 pp" in sliver and "pattern" not in sliver  # consistent but negligible
    fixed = verdict("grpo", _numbers([0.2] * 4, flat, down, down), reference="base", rounds=6)
    assert "shows no clear climb" in fixed and "less than base" in fixed and "pattern" not in fixed
