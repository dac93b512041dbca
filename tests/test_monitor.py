"""Tests for :mod:`atp_graph.probes.monitor`: CUSUM behaviour on seeded Bernoulli streams, and both ways of
attaching a :class:`TippingMonitor` to a LangGraph graph (callback handler and node), with several threads."""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command
from pydantic import Field

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
    [
        {"p0": 0.5, "p1": 0.5},
        {"p0": 0.6, "p1": 0.5},
        {"p0": 0.0},
        {"p1": 1.0},
        {"p0": math.nan},
        {"h": 0.0},
        {"h": -1.0},
        {"h": math.inf},
        {"warmup": -1},
        {"warmup": 1.5},
        {"warmup": True},
    ],
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
    for bad in [
        {**good, "version": 99},
        {**good, "statistic": -1.0},
        {**good, "alarms": -1},
        {**good, "config": {**good["config"], "h": 0}},
    ]:
        with pytest.raises(ValueError):
            CusumDetector.from_state_dict(bad)


# --- TippingMonitor --------------------------------------------------------------------------------


def answer(option: str) -> str:
    return f"Thinking it over.\n{choice_json(option)}"


def choices(messages) -> list[str | None]:
    """The option each AI message in ``messages`` chose."""
    return [parse_choice(m.text, (VIOLATE, COMPLY)) for m in messages if isinstance(m, AIMessage)]


def replaced(messages) -> list[bool]:
    """Whether each AI message in ``messages`` is a monitor replacement."""
    return ["atp_monitor" in m.response_metadata for m in messages if isinstance(m, AIMessage)]


def test_monitor_requires_a_way_to_label():
    with pytest.raises(ValueError):
        TippingMonitor(violating=VIOLATE)
    with pytest.raises(ValueError):
        TippingMonitor(violating=VIOLATE, compliant=VIOLATE)
    with pytest.raises(ValueError):
        TippingMonitor(label=lambda text: None).node(action="fallback")
    with pytest.raises(ValueError):
        TippingMonitor(violating=VIOLATE, compliant=COMPLY).node(action="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # two different detector settings
        TippingMonitor(violating=VIOLATE, compliant=COMPLY, config=CusumConfig(h=4.0), detector=CusumDetector())


def test_observe_with_a_custom_label_and_resumed_detector():
    saved = CusumDetector()
    alarms(saved, [1, 1, 1])
    template = CusumDetector.from_state_dict(saved.state_dict())
    monitor = TippingMonitor(label=lambda text: {"bad": True, "ok": False}.get(text), detector=template)
    assert monitor.threads() == [None] and monitor.config == CusumConfig()
    assert monitor.observe("???") is None and monitor.invalid == 1
    event = monitor.observe("bad")  # the fourth violation of the resumed stream
    assert isinstance(event, TippingEvent) and event.index == 3 and event.recent_rate == 1.0
    assert event.thread_id is None and event.run_id is None
    assert monitor.summary()["decisions"] == 1 and monitor.summary()["first_alarm_index"] == 3
    assert template.observations == 3  # a template: copied, never fed
    # Other threads start from S = 0 with the template's settings.
    assert [monitor.observe("bad", thread_id="x") for _ in range(4)][-1] is not None
    assert monitor.summary(thread_id="x")["first_alarm_index"] == 3


def test_observe_counts_a_message_id_once_per_thread():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    for _ in range(3):
        monitor.observe(answer(VIOLATE), message_id="m1", thread_id="alice")
    monitor.observe(answer(VIOLATE), message_id="m1", thread_id="bob")  # another thread: counted
    assert (monitor.summary(thread_id="alice")["decisions"], monitor.summary(thread_id="bob")["decisions"]) == (1, 1)


def test_reset_forgets_one_thread_or_all():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    for thread in ["alice", "bob", None]:
        for _ in range(4):
            monitor.observe(answer(VIOLATE), thread_id=thread)
    assert monitor.threads() == ["alice", "bob", None] and len(monitor.events) == 3
    assert monitor.summary()["latched"] == ["alice", "bob", None]
    monitor.reset("alice")
    assert monitor.threads() == ["bob", None] and not monitor.latched("alice") and monitor.latched("bob")
    assert [e.thread_id for e in monitor.events] == ["bob", None]
    monitor.reset(None)  # the default thread only
    assert monitor.threads() == ["bob"] and monitor.decisions == 4
    monitor.reset()
    assert monitor.threads() == [] and monitor.events == [] and monitor.summary()["decisions"] == 0


def test_on_tip_runs_outside_the_lock_and_may_read_the_monitor():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    seen: list[dict] = []
    monitor.on_tip.append(lambda event: seen.append(monitor.summary(thread_id=event.thread_id)))
    worker = threading.Thread(
        target=lambda: [monitor.observe(answer(VIOLATE), thread_id="a") for _ in range(4)], daemon=True
    )
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "on_tip deadlocked on the monitor's lock"
    assert len(seen) == 1 and seen[0]["latched"] and seen[0]["thread_id"] == "a"


class ThreadScript(BaseChatModel):
    """A chat model answering from a per-thread script (the thread is read from the run's metadata)."""

    scripts: dict[str, list[str]]
    calls: dict[str, int] = Field(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return "thread-script"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        thread = run_manager.metadata.get("thread_id") if run_manager else None
        n = self.calls.get(thread, 0)
        self.calls[thread] = n + 1
        script = self.scripts[thread]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(script[n % len(script)]))])


def alice_and_bob(alice: list[str] | None = None) -> ThreadScript:
    """Alice violates every round (or follows ``alice``), Bob always complies."""
    return ThreadScript(scripts={"alice": alice or [answer(VIOLATE)], "bob": [answer(COMPLY)]})


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


def ask(graph, thread: str, **config) -> dict:
    return graph.invoke({"messages": [HumanMessage("Which route?")]}, {**config, "configurable": {"thread_id": thread}})


def final_messages(graph, thread: str) -> list:
    return graph.get_state({"configurable": {"thread_id": thread}}).values["messages"]


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
    assert summary["latched"] == [None] and monitor.threads() == [None]  # no thread id: the default thread
    assert tipped == monitor.events and len(tipped) == 1
    event = tipped[0]
    assert event.statistic == pytest.approx(4 * UP) and event.recent_rate == pytest.approx(4 / 5)
    assert event.message_id is not None and event.thread_id is None
    json.dumps(summary)  # JSON-able


class ModelRuns(BaseCallbackHandler):
    """Records the run id of every chat-model run."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def on_chat_model_start(self, serialized, messages, *, run_id, **kwargs) -> None:
        self.ids.add(str(run_id))


def test_callback_path_keeps_threads_apart():
    monitor, runs = TippingMonitor(violating=VIOLATE, compliant=COMPLY), ModelRuns()
    graph = agent_graph(alice_and_bob(), checkpointer=InMemorySaver())
    for _ in range(6):
        for thread in ["bob", "alice"]:
            ask(graph, thread, callbacks=[monitor, runs])
    alice, bob = monitor.summary(thread_id="alice"), monitor.summary(thread_id="bob")
    assert (alice["decisions"], alice["violations"], alice["fired"], alice["latched"]) == (6, 6, True, True)
    assert (bob["decisions"], bob["violations"], bob["fired"], bob["latched"]) == (6, 0, False, False)
    assert bob["events"] == [] and bob["statistic"] == 0.0
    assert [e.index for e in monitor.events] == [3] and monitor.events[0].thread_id == "alice"
    assert monitor.events[0].run_id in runs.ids and len(runs.ids) == 12
    assert not monitor._runs  # every model run was forgotten once read
    overall = monitor.summary()
    assert [t["thread_id"] for t in overall["threads"]] == ["bob", "alice"] and overall["decisions"] == 12
    json.dumps(overall)


def test_callback_path_with_concurrent_threads():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    graph = agent_graph(alice_and_bob())  # no checkpointer: LangGraph still puts thread_id in the run metadata
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda thread: ask(graph, thread, callbacks=[monitor]), ["alice", "bob"] * 12))
    assert monitor.summary(thread_id="alice")["decisions"] == 12 and monitor.summary(thread_id="bob")["decisions"] == 12
    assert [e.index for e in monitor.events] == [3, 7, 11] and {e.thread_id for e in monitor.events} == {"alice"}


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
        ask(graph, "alice", callbacks=[watched, everything])
    assert (watched.decisions, watched.invalid) == (3, 0) and watched.threads() == ["alice"]
    assert (everything.decisions, everything.invalid) == (3, 3)
    assert not watched._runs and not everything._runs


def test_callback_path_forgets_failed_runs():
    class Failing(ThreadScript):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
            raise RuntimeError("model down")

    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    with pytest.raises(RuntimeError):
        ask(agent_graph(Failing(scripts={})), "alice", callbacks=[monitor])
    assert not monitor._runs and monitor.decisions == 0


def test_node_record_only_records():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    graph = agent_graph(alice_and_bob(), monitor_node=monitor.node(), checkpointer=InMemorySaver())
    for _ in range(5):
        ask(graph, "alice")
    assert [e.index for e in monitor.events] == [3] and monitor.latched("alice")
    assert monitor.decisions == 5  # one per turn: AI messages already judged are not counted again
    assert choices(final_messages(graph, "alice")) == [VIOLATE] * 5 and monitor.guarded == 0


def test_node_fallback_replaces_the_alarming_message_in_place():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    node = monitor.node(action="fallback", fallback_message="Overridden by the monitor.")
    graph = agent_graph(alice_and_bob(), monitor_node=node, checkpointer=InMemorySaver())
    out = [ask(graph, "alice") for _ in range(4)][-1]
    assert len(out["messages"]) == 8  # replaced, not appended
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and last.text.startswith("Overridden by the monitor.")
    assert parse_choice(last.text, (VIOLATE, COMPLY)) == COMPLY
    assert last.id == monitor.events[0].message_id
    info = last.response_metadata["atp_monitor"]
    assert info["index"] == 3 and info["thread_id"] == "alice" and info["original"] == answer(VIOLATE)
    assert info["alarm"] == monitor.events[0].as_dict()
    assert monitor.decisions == 4  # the replacement is not judged again


def test_fallback_node_replaces_a_message_once():
    """Called directly (no graph), and again on the same message: one replacement, counted once."""
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    node, config = monitor.node(action="fallback"), {"configurable": {"thread_id": "alice"}}
    updates = [node({"messages": [AIMessage(answer(VIOLATE), id=f"m{i}")]}, config) for i in range(4)]
    assert updates[:3] == [{}, {}, {}]
    (replacement,) = updates[3]["messages"]
    assert replacement.id == "m3" and parse_choice(replacement.text, (VIOLATE, COMPLY)) == COMPLY
    assert node({"messages": [AIMessage(answer(VIOLATE), id="m3")]}, config) == {}
    assert node({"messages": [replacement]}, config) == {}
    assert node({"messages": [AIMessage(answer(COMPLY), id="m4")]}, config) == {}  # compliant: kept
    assert monitor.summary(thread_id="alice")["guarded"] == 1 and monitor.decisions == 5
    assert monitor.events[0].run_id is None  # no LangChain run outside a graph


def test_one_fallback_node_guards_only_the_tipping_thread_and_holds():
    # Alice tips (4 violations), then keeps mixing violations and compliant answers; Bob always complies.
    script = [answer(VIOLATE)] * 4 + [answer(COMPLY), answer(VIOLATE), answer(COMPLY), answer(VIOLATE)]
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    graph = agent_graph(
        alice_and_bob(script), monitor_node=monitor.node(action="fallback"), checkpointer=InMemorySaver()
    )
    for _ in range(8):
        ask(graph, "bob")
        ask(graph, "alice")
    alice = final_messages(graph, "alice")
    assert choices(alice) == [VIOLATE] * 3 + [COMPLY] * 5
    # Every violation after the alarm was replaced; the agent's own compliant answers were not.
    assert replaced(alice) == [False] * 3 + [True, False, True, False, True]
    assert choices(final_messages(graph, "bob")) == [COMPLY] * 8 and not any(replaced(final_messages(graph, "bob")))
    a, b = monitor.summary(thread_id="alice"), monitor.summary(thread_id="bob")
    assert (a["guarded"], a["latched"], len(a["events"])) == (3, True, 1)
    assert (b["guarded"], b["latched"], b["fired"], b["decisions"]) == (0, False, False, 8)
    event = monitor.events[0]
    assert event.thread_id == "alice" and event.run_id is not None and event.index == 3

    # After a reset Alice's violations pass again until a new alarm latches the thread.
    monitor.reset("alice")
    for _ in range(4):  # the script restarts: four violations
        ask(graph, "alice")
        ask(graph, "bob")
    alice = final_messages(graph, "alice")
    assert replaced(alice)[8:] == [False, False, False, True] and choices(alice)[8:] == [VIOLATE] * 3 + [COMPLY]
    assert monitor.summary(thread_id="alice")["guarded"] == 1 and monitor.latched("alice")
    assert monitor.summary(thread_id="bob")["decisions"] == 12 and not monitor.latched("bob")
    assert monitor.summary()["guarded"] == 1 and [e.thread_id for e in monitor.events] == ["alice"]


def test_one_interrupt_node_never_interrupts_the_compliant_thread():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    graph = agent_graph(alice_and_bob(), monitor_node=monitor.node(action="interrupt"), checkpointer=InMemorySaver())
    interrupted = []
    for turn in range(7):
        out = ask(graph, "alice")
        if "__interrupt__" in out:
            (pending,) = out["__interrupt__"]
            assert pending.value["atp_tipping"] and pending.value["thread_id"] == "alice"
            assert pending.value["alarm"]["index"] == 3 and pending.value["new_alarm"] == (turn == 3)
            interrupted.append(turn)
            graph.invoke(Command(resume="fallback"), {"configurable": {"thread_id": "alice"}})
        assert "__interrupt__" not in ask(graph, "bob")
    assert interrupted == [3, 4, 5, 6]  # latched: every violation after the alarm goes to the human
    assert choices(final_messages(graph, "alice")) == [VIOLATE] * 3 + [COMPLY] * 4
    assert choices(final_messages(graph, "bob")) == [COMPLY] * 7
    a, b = monitor.summary(thread_id="alice"), monitor.summary(thread_id="bob")
    assert (a["decisions"], a["guarded"], a["latched"]) == (7, 4, True)  # re-runs after resume not counted
    assert (b["decisions"], b["fired"], b["events"], b["latched"]) == (7, False, [], False)
    assert all(e["thread_id"] == "alice" and e["run_id"] for e in a["events"])


@pytest.mark.parametrize("resume", ["approve", "fallback"])
def test_node_interrupt_resume_decides_the_latch(resume):
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    graph = agent_graph(alice_and_bob(), monitor_node=monitor.node(action="interrupt"), checkpointer=InMemorySaver())
    outs = [ask(graph, "alice") for _ in range(4)]
    assert all("__interrupt__" not in out for out in outs[:3])
    (pending,) = outs[-1]["__interrupt__"]
    assert pending.value["index"] == 3 and pending.value["message"] == answer(VIOLATE)
    assert pending.value["compliant"] == COMPLY and pending.value["message_id"] == monitor.events[0].message_id

    config = {"configurable": {"thread_id": "alice"}}
    out = graph.invoke(Command(resume=resume), config)
    assert "__interrupt__" not in out and not graph.get_state(config).next
    assert choices(out["messages"])[-1] == (VIOLATE if resume == "approve" else COMPLY)
    assert len(out["messages"]) == 8 and monitor.decisions == 4 and len(monitor.events) == 1
    assert monitor.latched("alice") == (resume == "fallback")

    nxt = [ask(graph, "alice") for _ in range(4)]
    if resume == "approve":  # unlatched: violations pass until the fresh evidence alarms again (4th)
        assert ["__interrupt__" in o for o in nxt] == [False, False, False, True]
    else:  # still latched: the very next violation interrupts
        assert "__interrupt__" in nxt[0]


@pytest.mark.parametrize("cut", [3, 10, 25])
def test_monitor_state_dict_round_trip_with_two_threads_continues_identically(cut):
    rng = np.random.default_rng(3)
    streams = {"alice": rng.random(60) < 0.6, "bob": rng.random(60) < 0.1, None: rng.random(60) < 0.3}
    config, window = CusumConfig(p1=0.6, h=4.0), 7

    def feed(monitor: TippingMonitor, start: int, stop: int) -> None:
        for i in range(start, stop):
            for thread, xs in streams.items():
                text = answer(VIOLATE if xs[i] else COMPLY) if i % 9 else "no idea"
                monitor.observe(text, message_id=f"{thread}-{i}", thread_id=thread)

    original = TippingMonitor(violating=VIOLATE, compliant=COMPLY, config=config, window=window)
    feed(original, 0, cut)
    saved = json.loads(json.dumps(original.state_dict()))
    restored = TippingMonitor(violating=VIOLATE, compliant=COMPLY)  # default config and window: replaced
    restored.load_state_dict(saved)
    assert restored.state_dict() == original.state_dict() and restored.config == config
    assert restored.threads() == ["alice", "bob", None]
    restored.observe(answer(VIOLATE), message_id=f"alice-{cut - 1}", thread_id="alice")  # judged before the save
    feed(original, cut, 60)
    feed(restored, cut, 60)

    def without_timestamps(summary: dict) -> dict:
        for events in [summary["events"], *(t["events"] for t in summary["threads"])]:
            for event in events:
                event.pop("timestamp")
        return summary

    assert without_timestamps(restored.summary()) == without_timestamps(original.summary())
    assert len(original.events) >= 2 and original.latched("alice")


def test_load_state_dict_rejects_bad_input():
    monitor = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    for thread in ["alice", "bob"]:
        for i in range(4):
            monitor.observe(answer(VIOLATE), message_id=str(i), thread_id=thread)
    good = monitor.state_dict()
    alice = good["threads"][0]
    bad_states = [
        {**good, "version": 99},
        [good],
        {**good, "window": 0},
        {**good, "config": {**good["config"], "h": -1}},
        {**good, "threads": [alice, alice]},
        {**good, "threads": [{**alice, "thread_id": 3}, good["threads"][1]]},
        {**good, "threads": [{**alice, "decisions": -1}, good["threads"][1]]},
        {**good, "threads": [{**alice, "violations": 9}, good["threads"][1]]},
        {**good, "threads": [{**alice, "latched": "yes"}, good["threads"][1]]},
        {**good, "threads": [{**alice, "recent": [2]}, good["threads"][1]]},
        {**good, "threads": [{**alice, "detector": {**alice["detector"], "statistic": -1}}, good["threads"][1]]},
        {
            **good,
            "threads": [{**alice, "detector": CusumDetector(CusumConfig(h=3.0)).state_dict()}, good["threads"][1]],
        },
        {**good, "threads": good["threads"][:1]},  # bob's event belongs to no thread
        {**good, "events": [{"index": 3}]},
        {key: value for key, value in good.items() if key != "threads"},
    ]
    fresh = TippingMonitor(violating=VIOLATE, compliant=COMPLY)
    for bad in bad_states:
        with pytest.raises(ValueError):
            fresh.load_state_dict(bad)
    assert fresh.threads() == []  # nothing changed
    fresh.load_state_dict(good)
    assert fresh.summary() == monitor.summary()
