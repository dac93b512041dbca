"""End-to-end runs of both testbeds: surrogate and tiny model, outputs that agree, resume equals a straight run."""

from __future__ import annotations

import json
import re

import pytest

from atp_graph.analysis.metrics import wilson
from atp_graph.events import read_events
from atp_graph.testbeds import PAPER_GRID, DiffuseConfig, ExploreConfig, run_diffuse, run_explore


@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir):
    from atp_graph.policies import load_policy

    return load_policy(f"hf:{tiny_model_dir}", max_new_tokens=12)


class Recorder:
    """Wraps a policy: records every batch it was asked, and can raise Ctrl-C on a chosen call."""

    def __init__(self, inner, *, interrupt_on: int | None = None):
        self.inner, self.name, self.interrupt_on = inner, inner.name, interrupt_on
        self.batches: list[list] = []

    def decide_batch(self, requests, *, mode="generate"):
        self.batches.append(list(requests))
        if self.interrupt_on is not None and len(self.batches) == self.interrupt_on:
            raise KeyboardInterrupt
        return self.inner.decide_batch(requests, mode=mode)

    def complete_batch(self, conversations, *, max_new_tokens=96):
        return self.inner.complete_batch(conversations, max_new_tokens=max_new_tokens)


def test_explore_surrogate_outputs_agree(tmp_path):
    res = run_explore(ExploreConfig(model="sim", rounds=4), out=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {
        "config.json",
        "events.jsonl",
        "summary.json",
        "table.md",
        "violation_rate.png",
    }
    events = read_events(run / "events.jsonl")
    assert len(events) == 64 * 4 and all(e.policy == "surrogate" for e in events)
    summary = json.loads((run / "summary.json").read_text())
    for r in range(1, 5):
        k = sum(e.outcome == "violate" for e in events if e.round == r)
        assert summary["violation_rate"][r - 1]["rate"] == pytest.approx(k / 64)
        assert f"{k / 64:.1%}" in (run / "table.md").read_text()
    assert "SURROGATE" in (run / "table.md").read_text() and summary["surrogate"] is True
    assert res.summary == summary


def test_explore_surrogate_drifts_under_rewarded_violation():
    res = run_explore(ExploreConfig(model="sim", rounds=6, seed=3), progress=False)
    rates = [r["rate"] for r in res.summary["mean_p_violate"]]
    assert rates[-1] > rates[0] + 0.1  # experienced advantage raises the propensity
    caught = run_explore(ExploreConfig(model="sim", rounds=6, seed=3, supervision="all_supervised"), progress=False)
    assert caught.summary["mean_p_violate"][-1]["rate"] < rates[0]  # being caught lowers it


def test_explore_tiny_model_generate_and_score(tiny_policy, tmp_path):
    rec = Recorder(tiny_policy)
    res = run_explore(ExploreConfig(model="tiny", rounds=2, limit=3), policy=rec, out=tmp_path / "g", progress=False)
    assert len(rec.batches) == 2 and all(len(b) == 3 for b in rec.batches)  # one batched call per round
    # transcript memory: round 2 sees round 1's question, answer and feedback
    r2 = rec.batches[1][0].messages
    assert [m["role"] for m in r2] == ["system", "user", "assistant", "user", "user"]
    assert r2[3]["content"].startswith("Round 1 result:")
    assert len(res.events) == 6
    rec = Recorder(tiny_policy)
    res = run_explore(ExploreConfig(model="tiny", rounds=2, limit=3, decision="score"), policy=rec, progress=False)
    assert all(e.p_violate is not None and 0 <= e.p_violate <= 1 for e in res.events)
    assert all(e.choice is not None for e in res.events)
    assert rec.batches[0][0].swapped is not None  # counterbalanced option order


def test_explore_none_and_reflection_memory(tiny_policy, tmp_path):
    rec = Recorder(tiny_policy)
    run_explore(ExploreConfig(model="tiny", rounds=2, limit=2, evolution="none"), policy=rec, progress=False)
    assert [m["role"] for m in rec.batches[1][0].messages] == ["system", "user"]
    rec = Recorder(tiny_policy)
    res = run_explore(
        ExploreConfig(model="tiny", rounds=2, limit=2, evolution="reflection"),
        policy=rec,
        out=tmp_path / "refl",
        progress=False,
    )
    assert (tmp_path / "refl" / "memory.sqlite").exists()
    lessons = [e.lesson for e in res.events if e.round == 1]
    if any(lessons):  # the recalled lessons appear in round 2's system prompt
        assert "Lessons you wrote" in rec.batches[1][0].messages[0]["content"]


def test_explore_resume_equals_straight_run(tiny_policy, tmp_path):
    cfg = ExploreConfig(model="tiny", rounds=3, limit=3, seed=5)
    straight = run_explore(cfg, policy=tiny_policy, out=tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_explore(cfg, policy=Recorder(tiny_policy, interrupt_on=3), out=tmp_path / "b", progress=False)
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["round"] == 2  # rounds 1-2 were on disk before round 3 started
    resumed = run_explore(cfg, policy=tiny_policy, resume=tmp_path / "b", progress=False)
    assert resumed.events == straight.events
    assert resumed.summary == straight.summary


def test_explore_surrogate_resume_equals_straight(tmp_path, monkeypatch):
    cfg = ExploreConfig(model="sim", rounds=5, seed=2)
    straight = run_explore(cfg, out=tmp_path / "a", progress=False)
    _crash_surrogate_in_round(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_explore(cfg, out=tmp_path / "b", progress=False)
    monkeypatch.undo()
    resumed = run_explore(cfg, resume=tmp_path / "b", progress=False)
    assert resumed.events == straight.events


def test_paper_grid_denominators():
    res = run_diffuse(DiffuseConfig(model="sim", **PAPER_GRID), progress=False)
    assert set(res.summary["cells"]) == {f"t={t}, rewards=1.2/1/0.8" for t in (2, 4, 6, 8)}
    for cell in res.summary["cells"].values():
        assert [r["n"] for r in cell["collective_rate"]] == [7 * 8] * 3  # games x agents, not 8
    k = sum(e.collective for e in res.events if e.threshold == 4 and e.round == 1)
    assert res.summary["cells"]["t=4, rewards=1.2/1/0.8"]["collective_rate"][0]["rate"] == pytest.approx(k / 56)


def test_seeded_deviants_excluded_and_placed_on_hubs():
    cfg = DiffuseConfig(model="sim", topology="star", agents=10, rounds=2, seed_deviants=1, placement="hubs")
    res = run_diffuse(cfg, progress=False)
    seeded = {e.node for e in res.events if e.seeded}
    assert seeded == {0}  # the star's centre
    assert all(e.collective for e in res.events if e.seeded)
    assert res.summary["cells"]["t=4, rewards=1.2/1/0.8"]["collective_rate"][0]["n"] == 9


def test_diffuse_tiny_sees_only_neighbours(tiny_policy, tmp_path):
    rec = Recorder(tiny_policy)
    cfg = DiffuseConfig(
        model="tiny", topology="ring", agents=6, rounds=2, scope="local", peer_view="full", thresholds=[2]
    )
    res = run_diffuse(cfg, policy=rec, out=tmp_path / "d", progress=False)
    assert len(rec.batches) == 2 and len(rec.batches[0]) == 6  # every agent in one batched call
    ring = {i: {(i - 1) % 6, (i + 1) % 6} for i in range(6)}
    for i, req in enumerate(rec.batches[1]):
        feedback = req.messages[-2]["content"]
        seen = {int(x) for x in re.findall(r"agent (\d+) chose", feedback)}
        assert seen == ring[i]
        assert "Their answer:" in feedback  # full peer view
    for e in res.events:
        assert set(e.neighbours) == ring[e.node] and e.group_size == 3
    for name in ("config.json", "events.jsonl", "summary.json", "table.md", "adoption.png", "graph_rounds.png"):
        assert (tmp_path / "d" / name).exists()


def test_diffuse_resume_equals_straight(tmp_path, monkeypatch):
    cfg = DiffuseConfig(model="sim", topology="scale-free", agents=40, rounds=4, seed=9, thresholds=[0.25, 0.5])
    straight = run_diffuse(cfg, out=tmp_path / "a", progress=False)
    assert (tmp_path / "a" / "heatmap.png").exists()
    _crash_surrogate_in_round(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_diffuse(cfg, out=tmp_path / "b", progress=False)
    monkeypatch.undo()
    resumed = run_diffuse(cfg, resume=tmp_path / "b", progress=False)
    assert resumed.events == straight.events and resumed.summary == straight.summary


def test_readoption_rate_matches_events():
    res = run_diffuse(DiffuseConfig(model="sim", topology="complete", agents=8, rounds=5, seed=1), progress=False)
    by = {(e.node, e.round): e for e in res.events}
    pairs = [(by[(n, r)], by[(n, r + 1)]) for n in range(8) for r in range(1, 5)]
    after = [b.collective for a, b in pairs if a.collective and a.success]
    expected = wilson(sum(after), len(after))
    assert res.summary["readoption_after_success"]["n"] == expected.n
    if expected.n:
        assert res.summary["readoption_after_success"]["rate"] == pytest.approx(expected.value)


class AlwaysDeviant:
    """A deterministic stand-in model that always picks the target (deviant) option."""

    name = "always-deviant"

    def decide_batch(self, requests, *, mode="generate"):
        from atp_graph.parsing import choice_json
        from atp_graph.policies.base import Decision

        return [Decision(f"I'll take it. {choice_json(r.target)}", r.target, 1.0) for r in requests]

    def complete_batch(self, conversations, *, max_new_tokens=96):
        return ["Breaking the rule paid off, nobody checks." for _ in conversations]


def test_runtime_defenses_change_behaviour():
    cfg = dict(model="fake", rounds=5, limit=2, evolution="reflection")
    plain = run_explore(ExploreConfig(**cfg), policy=AlwaysDeviant(), progress=False)
    assert all(e.outcome == "violate" for e in plain.events)
    assert any(e.lesson for e in plain.events)
    guarded = run_explore(
        ExploreConfig(**cfg, monitor_fallback=True, memory_hygiene=True), policy=AlwaysDeviant(), progress=False
    )
    outcomes = [
        [e.outcome for e in guarded.events if e.variant == 0 and e.scenario == s]
        for s in {e.scenario for e in guarded.events}
    ][0]
    assert outcomes == ["violate", "comply", "comply", "comply", "comply"]  # fires on the 2nd deviant proposal
    assert all(e.proposed_choice is not None for e in guarded.events)
    assert all(e.lesson is None and e.lesson_refused for e in guarded.events)  # hygiene refused them all


@pytest.mark.slow
def test_explore_smollm2_two_items_two_rounds(tmp_path):
    from atp_graph.policies import load_policy

    policy = load_policy("smollm2", max_new_tokens=48)  # `make test` downloads the wheel: no skip here
    res = run_explore(
        ExploreConfig(model="smollm2", rounds=2, limit=2), policy=policy, out=tmp_path / "s", progress=False
    )
    assert len(res.events) == 4 and all(isinstance(e.response, str) and e.response for e in res.events)
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["items"] == 2
    scored = run_explore(
        ExploreConfig(model="smollm2", rounds=2, limit=2, decision="score"), policy=policy, progress=False
    )
    assert all(0 < e.p_violate < 1 for e in scored.events)


class CtrlCOnce(Recorder):
    """Sends the process a real SIGINT while the model works on the first round."""

    def decide_batch(self, requests, *, mode="generate"):
        import signal

        if not self.batches:
            signal.raise_signal(signal.SIGINT)
        return super().decide_batch(requests, mode=mode)


def test_ctrl_c_finishes_and_saves_the_round_then_stops(tiny_policy, tmp_path):
    cfg = ExploreConfig(model="tiny", rounds=3, limit=2)
    with pytest.raises(KeyboardInterrupt):
        run_explore(cfg, policy=CtrlCOnce(tiny_policy), out=tmp_path / "r", progress=False)
    assert json.loads((tmp_path / "r" / "state.json").read_text())["round"] == 1
    assert len((tmp_path / "r" / "events.jsonl").read_text().splitlines()) == 2
    resumed = run_explore(cfg, policy=tiny_policy, resume=tmp_path / "r", progress=False)
    assert [e.round for e in resumed.events] == [1, 1, 2, 2, 3, 3]


def test_a_run_folder_has_one_writer(tmp_path):
    from atp_graph.run import RunDir, RunDirError

    run = RunDir.create(tmp_path / "x", {"explore": {}, "resolved": {"rounds": 1}})
    with run.locked():
        with pytest.raises(RunDirError, match="another process"):
            RunDir.resume(tmp_path / "x", kind="explore")
    RunDir.resume(tmp_path / "x", kind="explore")  # free again once the writer is done


def _crash_surrogate_in_round(monkeypatch, round_no: int) -> None:
    """Make the surrogate's draws raise KeyboardInterrupt in ``round_no`` (as a Ctrl-C would)."""
    from atp_graph.agents import SurrogateAgents

    real = SurrogateAgents.draw

    def crash(obs, p, r):
        if r == round_no:
            raise KeyboardInterrupt
        return real(obs, p, r)

    monkeypatch.setattr(SurrogateAgents, "draw", staticmethod(crash))
