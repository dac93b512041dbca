"""The joining layer: one round loop behind the Game/Agents contracts, typed events, memory on LangGraph threads."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda

from atp_graph.agents import CHECKPOINTS, LLMAgents, SurrogateAgents, build_agent_graph
from atp_graph.contracts import Agents, Game
from atp_graph.events import EventError, ExploreEvent, dump_event, read_events
from atp_graph.games import IndividualGame, ThresholdGame
from atp_graph.parsing import choice_json
from atp_graph.policies.base import Decision, DecisionRequest, Message, as_chat
from atp_graph.probes import probe
from atp_graph.testbeds import DiffuseConfig, ExploreConfig, render_run, run_diffuse, run_explore


class Answering:
    """A policy that always names the first option, and records every conversation it is asked."""

    name = "answering"

    def __init__(self) -> None:
        self.seen: list[tuple[Message, ...]] = []
        self.requests: list[DecisionRequest] = []

    def decide_batch(self, requests: Sequence[DecisionRequest], *, mode: str = "generate") -> list[Decision]:
        self.seen.extend(r.messages for r in requests)
        self.requests.extend(requests)
        return [Decision(text=f"ok {choice_json(r.options[0])}", choice=r.options[0]) for r in requests]

    def complete_batch(self, conversations, *, max_new_tokens: int = 96) -> list[str]:
        return ["lesson" for _ in conversations]


def test_games_and_agents_meet_their_contracts():
    assert isinstance(SurrogateAgents(), Agents)
    assert isinstance(LLMAgents(Answering(), ExploreConfig()), Agents)  # type: ignore[arg-type]
    from atp_graph.testbeds.diffuse import diffuse_game
    from atp_graph.testbeds.explore import explore_game

    individual, _ = explore_game(ExploreConfig(model="sim", limit=3))
    threshold, _ = diffuse_game(DiffuseConfig(model="sim", agents=6, topology="ring"))
    assert isinstance(individual, IndividualGame) and isinstance(individual, Game)
    assert isinstance(threshold, ThresholdGame) and isinstance(threshold, Game)


def test_probe_reads_exactly_what_an_explore_agent_reads():
    """Same game, same words, same turn layout: the probe's agent and explore's LLM agent see equal conversations."""
    policy = Answering()
    run_explore(ExploreConfig(model="x", scenarios="baker", limit=1, rounds=3), policy=policy, progress=False)  # type: ignore[arg-type]
    seen: list[list[BaseMessage]] = []

    def reply(msgs: list[BaseMessage]) -> AIMessage:
        seen.append(list(msgs))
        return AIMessage(policy.decide_batch([_request(msgs)])[0].text)

    probe(RunnableLambda(reply), "baker", variant=0, rounds=3)
    explore_round3, probe_round3 = policy.seen[2], as_chat(seen[2])
    assert probe_round3 == explore_round3
    roles = ["system", "user", "assistant", "user", "user", "assistant", "user", "user"]
    assert [m["role"] for m in probe_round3] == roles


@pytest.mark.parametrize("evolution", ["transcript", "reflection"])
def test_a_request_says_whether_its_conversation_continues(evolution: str):
    """Transcript memory brings every conversation back next round (a KV-reusing backend keeps it from round 1 on);
    reflection memory starts afresh each round."""
    policy = Answering()
    cfg = ExploreConfig(model="x", scenarios="baker", limit=1, rounds=2, evolution=evolution)  # type: ignore[arg-type]
    run_explore(cfg, policy=policy, progress=False)  # type: ignore[arg-type]
    assert len(policy.requests) == 2
    assert {r.continues for r in policy.requests} == {evolution == "transcript"}
    if evolution == "transcript":  # what round 1 asked is where round 2 starts
        assert policy.requests[1].messages[: len(policy.requests[0].messages)] == policy.requests[0].messages


def _request(msgs: list[BaseMessage]) -> DecisionRequest:
    import re

    options = tuple(re.findall(r'\{"choice": "([^"]+)"\}', msgs[-1].content)[:2])
    return DecisionRequest(messages=as_chat(msgs), options=options, target=options[1])  # type: ignore[arg-type]


def test_events_are_typed_and_a_run_folder_re_renders(tmp_path: Path):
    res = run_diffuse(DiffuseConfig(model="sim", agents=12, rounds=3, seed_deviants=1), out=tmp_path / "d")
    events = read_events(tmp_path / "d" / "events.jsonl")
    assert events == res.events and all(e.testbed == "diffuse" for e in events)
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    (tmp_path / "d" / "summary.json").unlink()
    (tmp_path / "d" / "adoption.png").unlink()
    again = render_run(tmp_path / "d")
    assert again.summary == summary == res.summary
    assert json.loads((tmp_path / "d" / "summary.json").read_text()) == summary
    assert (tmp_path / "d" / "adoption.png").exists()
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["schema_version"] == 2 and config["resolved"]["rounds"] == 3


def test_events_file_errors_name_the_line(tmp_path: Path):
    good = ExploreEvent(
        round=1, agent="a#0", scenario="a", variant=0, supervised=False, choice="x", outcome="comply", reward=1.0
    )
    f = tmp_path / "events.jsonl"
    f.write_text(dump_event(good) + "\n" + '{"testbed": "explore", "round": 0}\n' + dump_event(good) + "\n")
    with pytest.raises(EventError, match=r"events.jsonl:2: "):
        read_events(f)
    f.write_text(dump_event(good) + "\n" + dump_event(good)[:40])  # torn last line: ignored
    assert read_events(f) == [good]


def test_agent_memory_lives_on_langgraph_threads(tiny_model_dir, tmp_path: Path):
    """Each agent is a thread of the checkpointer in the run folder; its history opens with the LangGraph API."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from atp_graph.policies import load_policy

    tiny_policy = load_policy(f"hf:{tiny_model_dir}", max_new_tokens=12)
    cfg = ExploreConfig(model="tiny", limit=2, rounds=3, decision="score")
    res = run_explore(cfg, policy=tiny_policy, out=tmp_path / "run", progress=False)
    agent = res.events[0].agent
    conn = sqlite3.connect(tmp_path / "run" / CHECKPOINTS, check_same_thread=False)
    graph = build_agent_graph(checkpointer=SqliteSaver(conn))
    history = list(graph.get_state_history({"configurable": {"thread_id": agent}}))
    assert [h.metadata["atp_round"] for h in history] == [3, 2, 1]  # one checkpoint per round
    memory = history[0].values["memory"]
    assert len(memory) == 9 and memory[-1].content.startswith("Round 3 result")
    assert history[0].values["messages"][-1].content == res.events[-2].question  # events are in agent order
    assert history[0].values["asked"] == res.events[-2].question


def _interrupt_recording_round(monkeypatch, round_no: int) -> None:
    """Ctrl-C after every agent finished ``round_no`` (threads checkpointed) but before the round was committed."""
    real = IndividualGame.record

    def record(self, r, observations, actions):
        if r == round_no:
            raise KeyboardInterrupt
        return real(self, r, observations, actions)

    monkeypatch.setattr(IndividualGame, "record", record)


def test_resume_forks_threads_back_to_the_last_committed_round(tiny_model_dir, tmp_path: Path, monkeypatch):
    from atp_graph.policies import load_policy

    policy = load_policy(f"hf:{tiny_model_dir}", max_new_tokens=12)
    cfg = ExploreConfig(model="tiny", rounds=3, limit=3, seed=5, decision="score")
    straight = run_explore(cfg, policy=policy, out=tmp_path / "a", progress=False)
    _interrupt_recording_round(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_explore(cfg, policy=policy, out=tmp_path / "b", progress=False)
    monkeypatch.undo()
    assert json.loads((tmp_path / "b" / "state.json").read_text())["round"] == 2  # threads already hold round 3
    resumed = run_explore(cfg, policy=policy, resume=tmp_path / "b", progress=False)
    assert resumed.events == straight.events and resumed.summary == straight.summary


def test_resume_refuses_lost_agent_memory(tiny_model_dir, tmp_path: Path, monkeypatch):
    """A run folder whose agent threads are gone must not resume with blank memories (numbers would look fine)."""
    from atp_graph.errors import UserError
    from atp_graph.policies import load_policy

    policy = load_policy(f"hf:{tiny_model_dir}", max_new_tokens=12)
    cfg = ExploreConfig(model="tiny", rounds=3, limit=2, decision="score")
    _interrupt_recording_round(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_explore(cfg, policy=policy, out=tmp_path / "b", progress=False)
    monkeypatch.undo()
    (tmp_path / "b" / CHECKPOINTS).unlink()
    with pytest.raises(UserError, match="has no memory of round 2"):
        run_explore(cfg, policy=policy, resume=tmp_path / "b", progress=False)


def test_two_agents_never_share_a_thread():
    from atp_graph.errors import UserError
    from atp_graph.scenarios import individual_items, resolve

    items = individual_items(resolve("baker", kind="individual")[0])[:2]
    game = IndividualGame(items, pattern="all_unsupervised", rounds=1, agent_ids=["same", "same"])
    with pytest.raises(UserError, match="'same' appears twice"):
        game.observe(1)
