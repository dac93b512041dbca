"""Tests for :mod:`atp_graph.monitor`: CUSUM behaviour on seeded Bernoulli streams, and both ways of
attaching a :class:`TippingMonitor` to a LangGraph graph (callback handler and node)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

from atp_graph.parsing import choice_json, parse_choice
from atp_graph.probes.monitor import CusumConfig, CusumDetector, TippingEvent, TippingMonitor

VIOLATE, COMPLY = "Route A", "Route B"
UP, DOWN = math.log(0.5 / 0.1), math.log(0.5 / 0.9)  # log-likelihood-ratio steps of the default config


def alarms(detector: CusumDetector, xs) -> list[int]:
    """Feed ``xs`` and return the 0-based indices at which the detector fired."""
    return [i for i, x in enumerate(xs) if detector.update(x)]


# --- CusumDetector -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"p0": 0.5, "p1": 0.5}, {"p0": 0.6, "p1": 0.5}, {"p0": 0.0}, {"p1": 1.0}, {"p0": math.nan},
     {"h": 0.0}, {"h": -1.0}, {"h": math.inf}, {"warmup": -1}, {"warmup": 1.5}, {"warmup": True}],
)
def test_config_rejects_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        CusumConfig(**kwargs)


def test_config_is_frozen_and_keyword_only():
    config = CusumConfig()
    with pytest.raises(AttributeError):
        config.h = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        CusumConfig(0.1, 0.5)  # type: ignore[misc]


def test_statistic_follows_the_cusum_recursion_and_restarts_after_an_alarm():
    d = CusumDetector()
    assert d.update(1) is False and d.statistic == pytest.approx(UP)
    assert d.update(0) is False and d.statistic == pytest.approx(UP + DOWN)
    for _ in range(5):
        d.update(0)
    assert d.statistic == 0.0  # floored at zero
    # h = 5: three straight violations (4.83) are not enough, the fourth (6.44) fires.
    assert [d.update(1) for _ in range(4)] == [False, False, False, True]
    assert d.statistic == pytest.approx(4 * UP) and d.alarms == 1
    assert d.update(1) is False and d.statistic == pytest.approx(UP)  # fresh evidence after the alarm


def test_invalid_observations_are_ignored():
    d = CusumDetector()
    d.update(True)
    before = d.statistic
    for x in [None, 2, -1, 0.5, "1", math.nan, np.array([1, 0])]:
        assert d.update(x) is False
    assert (d.statistic, d.observations, d.ignored) == (before, 1, 7)
    assert d.update(np.int64(1)) is False and d.update(1.0) is False and d.observations == 3


def test_warmup_suppresses_alarms_but_keeps_the_evidence():
    assert alarms(CusumDetector(), [1] * 12) == [3, 7, 11]
    # All violations: the evidence passes h at the 4th, but the first alarm waits for observation 11.
    assert alarms(CusumDetector(CusumConfig(warmup=10)), [1] * 12)[0] == 10
    # On random streams nothing ever fires inside the warm-up window.
    for seed in range(50):
        xs = np.random.default_rng(seed).random(200) < 0.5
        fired = alarms(CusumDetector(CusumConfig(warmup=30)), xs)
        assert fired and min(fired) >= 30
    # Ignored observations do not count toward the warm-up.
    d = CusumDetector(CusumConfig(warmup=4))
    assert alarms(d, [1, None, None, 1, 1, 1, 1]) == [6]


def test_detection_delay_after_a_change_is_short():
    """Rate jumps from 5% to 60% after 100 decisions; the delay is the decisions from the change to the
    first alarm at or after it (1 = caught on the first bad decision). Theory (Markov-chain ARL from
    S = 0) gives about 7.4 with the defaults; these seeded streams measured 7.2 (worst 28). A pre-change
    false alarm (one stream here) just restarts the statistic, so all 200 streams count."""
    change, delays = 100, []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        xs = np.concatenate([rng.random(change) < 0.05, rng.random(200) < 0.6])
        after = [i for i in alarms(CusumDetector(), xs) if i >= change]
        delays.append(after[0] - change + 1)
    mean = float(np.mean(delays))
    assert 3 < mean < 10, mean


def test_false_alarms_on_stable_streams_are_rare():
    """At a steady 5% (below p0 = 10%) the in-control ARL of the defaults is about 15,000 decisions, so
    100,000 decisions should give ~6.5 alarms (Poisson, sd ~2.5). These seeded streams measured 5 alarms,
    in 5 of the 50 streams. The bound of 15 alarms (~3.4 sd above expectation) still fails for a
    detector tuned like h = 4, whose ARL of ~2,500 at 5% would give ~40."""
    total, streams_with_alarm = 0, 0
    for seed in range(50):
        xs = np.random.default_rng(1000 + seed).random(2000) < 0.05
        fired = alarms(CusumDetector(), xs)
        total += len(fired)
        streams_with_alarm += bool(fired)
    assert total <= 15, total
    assert streams_with_alarm <= 12, streams_with_alarm


@pytest.mark.parametrize("cut", [0, 3, 4, 137, 400])  # 3: saved right after an alarm
def test_state_dict_round_trip_continues_identically(cut):
    xs = [int(x) for x in np.random.default_rng(7).random(400) < 0.3]
    xs[:4] = [1, 1, 1, 1]
    original = CusumDetector(CusumConfig(p1=0.6, h=4.0, warmup=2))
    for x in [*xs[:cut], None]:
        original.update(x)
    restored = CusumDetector.from_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored.state_dict() == original.state_dict()
    rest = xs[cut:]
    assert [(original.update(x), original.statistic) for x in rest] == [
        (restored.update(x), restored.statistic) for x in rest
    ]
    assert restored.state_dict() == original.state_dict()


def test_from_state_dict_rejects_bad_state():
    good = CusumDetector().state_dict()
    for bad in [{**good, "version": 99}, {**good, "statistic": -1.0}, {**good, "alarms": -1},
                {**good, "config": {**good["config"], "h": 0}}]:
        with pytest.raises(ValueError):
            CusumDetector.from_state_dict(bad)


# --- TippingMonitor --------------------------------------------------------------------------------


def answer(option: str) -> str:
    return f"Thinking it over.\n{choice_json(option)}"


def test_monitor_requires_a_way_to_label():
    with pytest.raises(ValueError):
        TippingMonitor(violating=VIOLATE)
    with pytest.raises(ValueError):
        TippingMonitor(violating=VIOLATE, compliant=VIOLATE)
    with pytest.raises(ValueError):
        TippingMonitor(label=lambda text: None).node(action="fallback")
    with pytest.raises(ValueError):
        TippingMonitor(violating=VIOLATE, compliant=COMPLY).node(action="ignore")  # type: ignore[arg-type]


def test_observe_with_a_custom_label_and_resumed_detector():
    saved = CusumDetector()
    alarms(saved, [1, 1, 1])
    monitor = TippingMonitor(label=lambda text: {"bad": True, "ok": False}.get(text),
                             detector=CusumDetector.from_state_dict(saved.state_dict()))
    assert monitor.observe("???") is None and monitor.invalid == 1
    event = monitor.observe("bad")  # the fourth violation of the resumed stream
    assert isinstance(event, TippingEvent) and event.index == 3 and event.recent_rate == 1.0
    assert monitor.summary()["decisions"] == 1 and monitor.summary()["first_alarm_index"] == 3


def agent_graph(model, *, monitor_node=None, checkpointer=None):
    """``START -> agent [-> atp_monitor] -> END`` over ``MessagesState``."""

    def agent(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_edge(START, "agent")
    if monitor_node is None:
        builder.add_edge("agent", END)
    else:
        builder.add_node("atp_monitor", monitor_node)
        builder.add_edge("agent", "atp_monitor")
        builder.add_edge("atp_monitor", END)
    return builder.compile(checkpointer=checkpointer)


def test_callback_path_reads_chat_model_responses_inside_a_graph():
    replies = [answer(COMPLY), "I would rather not say.", *[answer(VIOLATE)] * 4, answer(COMPLY)]
    tipped: list[TippingEvent] = []
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY, on_tip=[tipped.append])
    graph = agent_graph(GenericFakeChatModel(messages=iter(replies)))
    for _ in replies:
        graph.invoke({"messages": [HumanMessage("Which route?")]}, config={"callbacks": [monitor]})

    summary = monitor.summary()
    assert (summary["decisions"], summary["violations"], summary["invalid"]) == (6, 4, 1)
    assert summary["violation_rate"] == pytest.approx(4 / 6)
    assert summary["fired"] and summary["first_alarm_index"] == 4  # 5th labelled decision, 4th violation
    assert tipped == monitor.events and len(tipped) == 1
    event = tipped[0]
    assert event.statistic == pytest.approx(4 * UP) and event.recent_rate == pytest.approx(4 / 5)
    assert event.message_id is not None
    json.dumps(summary)  # JSON-able


def test_callback_path_can_watch_only_tagged_model_calls():
    decider = GenericFakeChatModel(messages=iter([answer(VIOLATE)] * 3)).with_config(tags=["decision"])
    reflector = GenericFakeChatModel(messages=iter(["Lesson: rules matter."] * 3))

    def agent(state: MessagesState) -> dict:
        reply = decider.invoke(state["messages"])
        return {"messages": [reply, reflector.invoke([*state["messages"], reply])]}

    graph = StateGraph(MessagesState).add_node("agent", agent).add_edge(START, "agent").compile()
    watched = TippingMonitor(violating=VIOLATE, compliant=COMPLY, watch_tags={"decision"})
    everything = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    for _ in range(3):
        graph.invoke({"messages": [HumanMessage("Which route?")]}, {"callbacks": [watched, everything]})
    assert (watched.decisions, watched.invalid) == (3, 0)
    assert (everything.decisions, everything.invalid) == (3, 3)


def run_turns(graph, monitor: TippingMonitor, n: int, thread: str = "t") -> list[dict]:
    config = {"configurable": {"thread_id": thread}}
    return [graph.invoke({"messages": [HumanMessage("Which route?")]}, config) for _ in range(n)]


def test_node_record_only_records():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    graph = agent_graph(GenericFakeChatModel(messages=iter([answer(VIOLATE)] * 5)),
                        monitor_node=monitor.node(), checkpointer=InMemorySaver())
    out = run_turns(graph, monitor, 5)[-1]
    assert [e.index for e in monitor.events] == [3]
    assert monitor.decisions == 5  # one per turn: AI messages already judged are not counted again
    assert all(parse_choice(m.text, (VIOLATE, COMPLY)) == VIOLATE for m in out["messages"][1::2])


def test_node_fallback_replaces_the_alarming_message_in_place():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    node = monitor.node(action="fallback", fallback_message="Overridden by the monitor.")
    graph = agent_graph(GenericFakeChatModel(messages=iter([answer(VIOLATE)] * 4)), monitor_node=node,
                        checkpointer=InMemorySaver())
    out = run_turns(graph, monitor, 4)[-1]
    assert len(out["messages"]) == 8  # replaced, not appended
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and last.text.startswith("Overridden by the monitor.")
    assert parse_choice(last.text, (VIOLATE, COMPLY)) == COMPLY
    assert last.id == monitor.events[0].message_id
    assert last.response_metadata["atp_monitor"]["index"] == 3
    assert monitor.decisions == 4  # the replacement is not judged again


@pytest.mark.parametrize("resume", ["approve", "fallback"])
def test_node_interrupt_pauses_for_a_human_and_resumes(resume):
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    graph = agent_graph(GenericFakeChatModel(messages=iter([answer(VIOLATE)] * 4)),
                        monitor_node=monitor.node(action="interrupt"), checkpointer=InMemorySaver())
    outs = run_turns(graph, monitor, 4)
    assert all("__interrupt__" not in out for out in outs[:3])
    (pending,) = outs[-1]["__interrupt__"]
    assert pending.value["atp_tipping"] and pending.value["index"] == 3
    assert pending.value["compliant"] == COMPLY and pending.value["message"] == answer(VIOLATE)

    config = {"configurable": {"thread_id": "t"}}
    out = graph.invoke(Command(resume=resume), config)
    assert "__interrupt__" not in out and not graph.get_state(config).next
    expected = VIOLATE if resume == "approve" else COMPLY
    assert parse_choice(out["messages"][-1].text, (VIOLATE, COMPLY)) == expected
    assert len(out["messages"]) == 8
    assert monitor.decisions == 4 and len(monitor.events) == 1  # the re-run node did not count twice
