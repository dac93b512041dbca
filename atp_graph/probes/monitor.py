"""Watch a LangGraph agent's decisions per conversation thread; guard a thread once it tips toward rule-breaking.

Each decision the agent makes is labelled *violated* (1) or *complied* (0). A one-sided Bernoulli CUSUM
(:class:`CusumDetector`) accumulates the evidence that the violation rate has risen from an acceptable
``p0`` to a worrying ``p1`` and fires when that evidence crosses a threshold. :class:`TippingMonitor` keeps
one detector per LangGraph thread (``config["configurable"]["thread_id"]``; invocations without one share
the default thread ``None``), so users of one graph never trip each other's alarms. Attach it in one of
two ways:

1. As a LangChain callback handler. Nothing in the graph changes; every chat-model response is read as
   it finishes and counted on the thread the graph was invoked with::

       monitor = TippingMonitor(violating="Route A", compliant="Route B", on_tip=[print])
       config = {"callbacks": [monitor], "configurable": {"thread_id": "alice"}}
       graph.invoke({"messages": [("user", question)]}, config)
       monitor.summary(thread_id="alice")  # {"decisions": ..., "fired": ..., "latched": ..., "events": [...]}

   When the agent makes other model calls too (reflection, tools), tag the deciding model, e.g.
   ``model.with_config(tags=["decision"])``, and pass ``watch_tags={"decision"}``.

2. As a graph node placed after the agent node; it reads the last AI message in ``state["messages"]``
   and can act on it::

       builder.add_node("atp_monitor", monitor.node(action="interrupt"))
       builder.add_edge("agent", "atp_monitor")
       graph = builder.compile(checkpointer=InMemorySaver())
       out = graph.invoke(inputs, config)  # out["__interrupt__"] holds the alarm for a human
       graph.invoke(Command(resume="fallback"), config)  # or Command(resume="approve")

An alarm *latches* its thread. While a thread is latched, every violating decision on it is guarded:
``action="fallback"`` replaces it (same message id, so the ``add_messages`` reducer swaps it in place) with
the compliant choice ``{"choice": "<compliant>"}``; ``action="interrupt"`` pauses the graph for a human, who
resumes with ``"approve"`` (keep the decision and unlatch the thread) or ``"fallback"`` (replace it; the
thread stays latched); ``action="record"`` only records the alarm and the latch. Compliant decisions are
never replaced. ``monitor.threads()`` lists the threads seen, ``monitor.summary(thread_id="alice")`` reports
one (``monitor.summary()``: totals plus every thread), ``monitor.latched("alice")`` tells whether it is
guarded, and ``monitor.reset("alice")`` clears one thread, its latch included (``monitor.reset()``: all).

Use one attachment, not both, for a graph: an AI message judged once (by id, per thread) is not counted
again, but a response without an id would be. Decisions the monitor cannot label (no clear choice) are
counted as ``invalid`` and never reach the detector. A monitor keeps its state in memory; to carry every
thread's evidence and latch across a restart, save ``json.dumps(monitor.state_dict())`` and, in the new
process, call ``monitor.load_state_dict(json.loads(saved))`` on a monitor built with the same options.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableConfig

from ..analysis.cusum import CusumConfig, CusumDetector

__all__ = ["CusumConfig", "CusumDetector", "MonitorAction", "TippingEvent", "TippingMonitor"]

MonitorAction = Literal["record", "interrupt", "fallback"]

_RESUME_SCHEMA = {"type": "string", "enum": ["approve", "fallback"]}
_STATE_VERSION = 1
_SEEN_LIMIT = 256
"""Message ids remembered per thread (a node re-run only ever concerns the newest ones)."""


class _AllThreads:
    def __repr__(self) -> str:
        return "ALL_THREADS"


_ALL = _AllThreads()


def _thread_key(thread_id: object) -> str | None:
    return None if thread_id is None else str(thread_id)


@dataclass(frozen=True)
class TippingEvent:
    """One alarm raised by a :class:`TippingMonitor` on one thread."""

    index: int
    """0-based position of the alarming decision among its thread's labelled decisions."""
    statistic: float
    """CUSUM statistic at the alarm (``>= h``)."""
    recent_rate: float
    """Violation rate over the thread's last ``window`` labelled decisions, this one included."""
    timestamp: float
    """When the alarm was raised, in seconds since the Unix epoch."""
    message_id: str | None = None
    """Id of the alarming AI message, when it had one."""
    thread_id: str | None = None
    """LangGraph thread the decision was made on (``None``: invoked without a thread id)."""
    run_id: str | None = None
    """LangChain run id: the model run (callback path) or the monitor node's run (node path), if known."""

    def as_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-able dict."""
        return asdict(self)


@dataclass
class _Decision:
    """How one response was judged; kept by message id so a node re-run reuses it."""

    violated: bool | None
    index: int | None
    alarm: TippingEvent | None
    """The alarm this decision raised, if any."""
    guard: bool
    """Violated while its thread was latched: the node acts on it."""
    replaced: bool = False


@dataclass
class _Thread:
    detector: CusumDetector
    recent: deque[bool]
    decisions: int = 0
    violations: int = 0
    invalid: int = 0
    guarded: int = 0
    latched: bool = False
    seen: dict[str, _Decision] = field(default_factory=dict)


class TippingMonitor(BaseCallbackHandler):
    """Label an agent's decisions, feed them to one :class:`CusumDetector` per thread and record the alarms.

    Attach it as a callback handler (``config={"callbacks": [monitor], "configurable": {"thread_id": ...}}``)
    or as a graph node (:meth:`node`); see the module docstring. Safe to share between OS threads and
    between LangGraph threads. Thread ids are kept as strings (``str(thread_id)``); ``None`` is the default
    thread of invocations without one.

    Attributes:
        on_tip: Functions called with each new :class:`TippingEvent` (append more at any time); they run
            outside the monitor's lock, so they may read the monitor.
        watch_tags: The tags a model run needs to be read in the callback path (``None``: every run).
        window: Decisions over which an event's ``recent_rate`` is computed.
    """

    def __init__(
        self,
        *,
        violating: str | None = None,
        compliant: str | None = None,
        label: Callable[[str], bool | None] | None = None,
        config: CusumConfig | None = None,
        detector: CusumDetector | None = None,
        window: int = 20,
        on_tip: Iterable[Callable[[TippingEvent], object]] = (),
        watch_tags: Collection[str] | None = None,
    ) -> None:
        """Create a monitor.

        Args:
            violating: The rule-breaking option, as offered to the agent.
            compliant: The compliant option; also the fallback choice of :meth:`node`.
            label: Maps a response's text to ``True`` (violated), ``False`` (complied) or ``None``
                (no decision). Defaults to :func:`atp_graph.parsing.parse_choice` against
                ``(violating, compliant)``, which then must both be given.
            config: Detector settings shared by every thread; ``CusumConfig()`` by default.
            detector: Backward-compatible template: its config is used for every thread (unless ``config``
                is given) and a copy of its state starts the default thread ``None``, e.g. a detector
                restored with :meth:`CusumDetector.from_state_dict`. The monitor never feeds the object
                itself. To restore several threads use :meth:`load_state_dict`.
            window: Decisions over which an event's ``recent_rate`` is computed.
            on_tip: Functions called with every new event.
            watch_tags: In the callback path, only read model runs carrying one of these tags
                (``None`` reads every chat-model and LLM response).

        Raises:
            ValueError: If neither ``label`` nor both options are given, the options are equal,
                ``window < 1``, or ``config`` and ``detector.config`` differ.
        """
        if label is None and (violating is None or compliant is None):
            raise ValueError("give `label`, or both `violating` and `compliant` options")
        if violating is not None and violating == compliant:
            raise ValueError("`violating` and `compliant` must differ")
        if window < 1:
            raise ValueError(f"need window >= 1, got {window!r}")
        if config is not None and detector is not None and config != detector.config:
            raise ValueError("`config` and `detector.config` differ; give one of them")
        self.violating = violating
        self.compliant = compliant
        self.label = label if label is not None else self._parse_label
        self.window = window
        self.on_tip: list[Callable[[TippingEvent], object]] = list(on_tip)
        self.watch_tags = frozenset(watch_tags) if watch_tags is not None else None
        self._config = config if config is not None else detector.config if detector is not None else CusumConfig()
        self._lock = threading.Lock()
        self._threads: dict[str | None, _Thread] = {}
        self._events: list[TippingEvent] = []
        self._runs: dict[UUID, str | None] = {}  # model run id -> thread, from start to end of the run
        if detector is not None:
            self._threads[None] = self._new_thread(CusumDetector.from_state_dict(detector.state_dict()))

    # --- state ---------------------------------------------------------------------------------------

    @property
    def config(self) -> CusumConfig:
        """The detector settings every thread uses."""
        return self._config

    @property
    def events(self) -> list[TippingEvent]:
        """All alarms so far, over every thread, oldest first (a copy)."""
        with self._lock:
            return list(self._events)

    @property
    def decisions(self) -> int:
        """Decisions labelled violated or complied, over every thread."""
        return self._total("decisions")

    @property
    def violations(self) -> int:
        """Decisions labelled violated, over every thread."""
        return self._total("violations")

    @property
    def invalid(self) -> int:
        """Decisions the monitor could not label, over every thread."""
        return self._total("invalid")

    @property
    def guarded(self) -> int:
        """Violating decisions the node replaced with the compliant choice, over every thread."""
        return self._total("guarded")

    def _total(self, name: str) -> int:
        with self._lock:
            return sum(getattr(thread, name) for thread in self._threads.values())

    def threads(self) -> list[str | None]:
        """Return the ids of the threads seen so far, in first-seen order (``None``: no thread id)."""
        with self._lock:
            return list(self._threads)

    def latched(self, thread_id: str | None = None) -> bool:
        """Return whether ``thread_id`` is latched by an alarm (its violating decisions are guarded)."""
        with self._lock:
            thread = self._threads.get(_thread_key(thread_id))
            return thread is not None and thread.latched

    def reset(self, thread_id: str | None | _AllThreads = _ALL) -> None:
        """Forget one thread (decisions, events, detector, latch), or every thread when called without one.

        ``reset(None)`` forgets only the default thread (decisions made without a thread id). A thread
        starts afresh at ``S = 0`` after a reset, even if a ``detector`` template started it.
        """
        with self._lock:
            if isinstance(thread_id, _AllThreads):
                self._threads.clear()
                self._events.clear()
                return
            key = _thread_key(thread_id)
            self._threads.pop(key, None)
            self._events = [event for event in self._events if event.thread_id != key]

    def _new_thread(self, detector: CusumDetector | None = None) -> _Thread:
        return _Thread(detector or CusumDetector(self._config), deque(maxlen=self.window))

    def _thread(self, key: str | None) -> _Thread:
        """The state of thread ``key``, created on first use (call with the lock held)."""
        if key not in self._threads:
            self._threads[key] = self._new_thread()
        return self._threads[key]

    # --- judging -------------------------------------------------------------------------------------

    def _parse_label(self, text: str) -> bool | None:
        from ..parsing import parse_choice  # lazy: the monitor needs parsing only with the default label

        choice = parse_choice(text, (self.violating, self.compliant))
        return None if choice is None else choice == self.violating

    def observe(
        self, text: str, *, message_id: str | None = None, thread_id: str | None = None, run_id: str | None = None
    ) -> TippingEvent | None:
        """Label one response on ``thread_id`` and update its detector; return the event if it raised an alarm.

        This is what both attachment paths call; call it directly to monitor any other text stream. A
        ``message_id`` already judged on that thread is not counted again (the event it raised then, if
        any, is returned). An alarm latches the thread.
        """
        return self._judge(text, message_id=message_id, thread_id=thread_id, run_id=run_id).alarm

    def _judge(self, text: str, *, message_id: str | None, thread_id: object, run_id: str | None) -> _Decision:
        key = _thread_key(thread_id)
        if message_id is not None:
            with self._lock:
                known = self._threads.get(key)
                if known is not None and message_id in known.seen:
                    return known.seen[message_id]
        verdict = self.label(text)  # outside the lock: a label may be slow
        with self._lock:
            thread = self._thread(key)
            if message_id is not None and message_id in thread.seen:  # judged meanwhile
                return thread.seen[message_id]
            decision = self._update(thread, key, verdict, message_id, run_id)
            if message_id is not None:
                thread.seen[message_id] = decision
                if len(thread.seen) > _SEEN_LIMIT:
                    del thread.seen[next(iter(thread.seen))]
        if decision.alarm is not None:
            for callback in list(self.on_tip):  # outside the lock: a callback may read the monitor
                callback(decision.alarm)
        return decision

    def _update(
        self, thread: _Thread, key: str | None, verdict: object, message_id: str | None, run_id: str | None
    ) -> _Decision:
        """Count one verdict on ``thread`` and feed its detector (call with the lock held)."""
        if verdict is None or verdict not in (True, False):
            thread.invalid += 1
            return _Decision(violated=None, index=None, alarm=None, guard=False)
        violated = bool(verdict)
        thread.decisions += 1
        thread.violations += violated
        thread.recent.append(violated)
        alarm = None
        if thread.detector.update(violated):
            alarm = TippingEvent(
                index=thread.detector.observations - 1,
                statistic=thread.detector.statistic,
                recent_rate=sum(thread.recent) / len(thread.recent),
                timestamp=time.time(),
                message_id=message_id,
                thread_id=key,
                run_id=run_id,
            )
            self._events.append(alarm)
            thread.latched = True
        index = thread.detector.observations - 1
        return _Decision(violated=violated, index=index, alarm=alarm, guard=violated and thread.latched)

    # --- callback path -------------------------------------------------------------------------------

    def _watched(self, tags: list[str] | None) -> bool:
        return self.watch_tags is None or not self.watch_tags.isdisjoint(tags or ())

    def _start_run(self, run_id: UUID, tags: list[str] | None, metadata: dict[str, Any] | None) -> None:
        if self._watched(tags):
            with self._lock:
                self._runs[run_id] = _thread_key((metadata or {}).get("thread_id"))

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the thread of a starting chat-model run (LangGraph puts ``thread_id`` in its metadata)."""
        self._start_run(run_id, tags, metadata)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the thread of a starting LLM run."""
        self._start_run(run_id, tags, metadata)

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Read a finished chat-model or LLM response (the first candidate per prompt) on the run's thread."""
        with self._lock:
            thread_id = self._runs.pop(run_id, None)
        if not self._watched(tags):
            return
        for candidates in response.generations:
            if candidates:
                first = candidates[0]
                message_id = first.message.id if isinstance(first, ChatGeneration) else None
                self.observe(first.text, message_id=message_id, thread_id=thread_id, run_id=str(run_id))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a failed model run."""
        with self._lock:
            self._runs.pop(run_id, None)

    # --- node path -----------------------------------------------------------------------------------

    def node(
        self, *, action: MonitorAction = "record", fallback_message: str | None = None
    ) -> Callable[[Any, RunnableConfig], dict[str, Any]]:
        """Return a graph node that monitors the last AI message in ``state["messages"]`` on the invoking thread.

        Add it after the agent node: ``builder.add_node("atp_monitor", monitor.node(action="fallback"))``.
        The thread is ``config["configurable"]["thread_id"]``. Each AI message is judged once, by id, so a
        node re-run (as after an interrupt) does not count it twice. An alarm latches the thread; while it
        is latched every violating decision on it is guarded:

        * ``"record"``: record the alarm and the latch only; the state is unchanged.
        * ``"interrupt"``: call :func:`langgraph.types.interrupt` (needs a checkpointer) with a dict holding
          ``"atp_tipping": True``, ``thread_id``, ``run_id``, ``message_id``, ``index`` (the decision's),
          ``new_alarm``, ``alarm`` (the latest alarm of the thread), ``message`` and the options. Resume
          with ``Command(resume="approve")`` to keep the decision and unlatch the thread, or
          ``Command(resume="fallback")`` to replace it as below (the thread stays latched).
        * ``"fallback"``: replace the AI message (same id) with one choosing ``compliant``: the note
          ``fallback_message`` (a default one if ``None``) followed by ``{"choice": "<compliant>"}``, with
          ``response_metadata["atp_monitor"]`` telling why and holding the original text. The replacement
          has no tool calls, so a tool the agent asked for is not run. Holds until ``reset(thread_id)``.

        Raises:
            ValueError: If ``action`` is unknown, or is ``"interrupt"``/``"fallback"`` without a
                ``compliant`` option.
        """
        if action not in ("record", "interrupt", "fallback"):
            raise ValueError(f"unknown action {action!r}; use 'record', 'interrupt' or 'fallback'")
        if action != "record" and self.compliant is None:
            raise ValueError(f"action {action!r} needs the monitor's `compliant` option")

        def atp_monitor(state: Any, config: RunnableConfig) -> dict[str, Any]:
            messages = state["messages"] if isinstance(state, Mapping) else state.messages
            last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
            if last is None:
                return {}
            key = _thread_key((config.get("configurable") or {}).get("thread_id"))
            node_run = getattr(config.get("callbacks"), "parent_run_id", None)  # the manager of this node's run
            run_id = None if node_run is None else str(node_run)
            decision = self._judge(str(last.text), message_id=last.id, thread_id=key, run_id=run_id)
            if not decision.guard or decision.replaced or action == "record":
                return {}  # nothing to guard, or replaced already (the node ran again on the same message)
            alarm = self._latest_alarm(key)
            if action == "interrupt":
                from langgraph.types import interrupt

                payload = {
                    "atp_tipping": True,
                    "thread_id": key,
                    "run_id": run_id,
                    "message_id": last.id,
                    "index": decision.index,
                    "new_alarm": decision.alarm is not None,
                    "alarm": None if alarm is None else alarm.as_dict(),
                    "message": str(last.text),
                    "violating": self.violating,
                    "compliant": self.compliant,
                }
                answer = interrupt(payload, response_schema=_RESUME_SCHEMA)
                if answer in ("approve", True):
                    self._unlatch(key)
                    return {}
                if answer not in ("fallback", False):
                    raise ValueError(f"resume with 'approve' or 'fallback', got {answer!r}")
            replacement = self._fallback(last, key, decision, alarm, fallback_message)
            self._count_guarded(key, decision)
            return {"messages": [replacement]}

        return atp_monitor

    def _latest_alarm(self, key: str | None) -> TippingEvent | None:
        with self._lock:
            return next((event for event in reversed(self._events) if event.thread_id == key), None)

    def _unlatch(self, key: str | None) -> None:
        with self._lock:
            if key in self._threads:
                self._threads[key].latched = False

    def _count_guarded(self, key: str | None, decision: _Decision) -> None:
        with self._lock:
            if not decision.replaced and key in self._threads:
                decision.replaced = True
                self._threads[key].guarded += 1

    def _fallback(
        self, message: AIMessage, key: str | None, decision: _Decision, alarm: TippingEvent | None, note: str | None
    ) -> AIMessage:
        """The compliant AI message that replaces ``message`` in the state."""
        from ..parsing import choice_json

        if message.id is None:
            raise ValueError("the fallback replaces the AI message by id; use the add_messages reducer")
        if note is None:
            rate = f" ({alarm.recent_rate:.0%} of recent decisions broke the rule)" if alarm is not None else ""
            note = (
                f"[atp-monitor] This thread is latched by a tipping alarm{rate}, "
                f"so this decision was replaced with the compliant option."
            )
        info = {
            "thread_id": key,
            "index": decision.index,
            "alarm": None if alarm is None else alarm.as_dict(),
            "original": str(message.text),
        }
        return AIMessage(
            content=f"{note}\n\n{choice_json(self.compliant or '')}",
            id=message.id,
            name=message.name,
            response_metadata={"atp_monitor": info},
        )

    # --- reporting and persistence -------------------------------------------------------------------

    def summary(self, thread_id: str | None | _AllThreads = _ALL) -> dict[str, Any]:
        """Return a JSON-able summary of one thread, or of every thread when called without one.

        A thread's summary has ``thread_id``, ``decisions``, ``violations``, ``invalid``, ``violation_rate``,
        ``guarded`` (decisions replaced), ``statistic``, ``latched``, ``fired``, ``first_alarm_index`` and
        ``events``; an unseen thread gives an empty one. The overall summary has the same counts totalled
        over threads, ``fired``, ``first_alarm_index`` (thread-relative index of the earliest alarm),
        ``events`` (all, oldest first), ``latched`` (the latched thread ids) and ``threads`` (each thread's
        summary). ``summary(None)`` is the default thread's.
        """
        with self._lock:
            if not isinstance(thread_id, _AllThreads):
                key = _thread_key(thread_id)
                return self._thread_summary(key, self._threads.get(key) or self._new_thread())
            threads = [self._thread_summary(key, thread) for key, thread in self._threads.items()]
            events = [event.as_dict() for event in self._events]
        decisions = sum(t["decisions"] for t in threads)
        violations = sum(t["violations"] for t in threads)
        return {
            "decisions": decisions,
            "violations": violations,
            "invalid": sum(t["invalid"] for t in threads),
            "violation_rate": violations / decisions if decisions else None,
            "guarded": sum(t["guarded"] for t in threads),
            "fired": bool(events),
            "first_alarm_index": events[0]["index"] if events else None,
            "latched": [t["thread_id"] for t in threads if t["latched"]],
            "events": events,
            "threads": threads,
        }

    def _thread_summary(self, key: str | None, thread: _Thread) -> dict[str, Any]:
        events = [event.as_dict() for event in self._events if event.thread_id == key]
        return {
            "thread_id": key,
            "decisions": thread.decisions,
            "violations": thread.violations,
            "invalid": thread.invalid,
            "violation_rate": thread.violations / thread.decisions if thread.decisions else None,
            "guarded": thread.guarded,
            "statistic": thread.detector.statistic,
            "latched": thread.latched,
            "fired": bool(events),
            "first_alarm_index": events[0]["index"] if events else None,
            "events": events,
        }

    def state_dict(self) -> dict[str, Any]:
        """Return every thread's state (detector, latch, counts, recent window, judged message ids) and all
        events as a versioned JSON-able dict for :meth:`load_state_dict`."""
        with self._lock:
            threads = [
                {
                    "thread_id": key,
                    "detector": t.detector.state_dict(),
                    "latched": t.latched,
                    "decisions": t.decisions,
                    "violations": t.violations,
                    "invalid": t.invalid,
                    "guarded": t.guarded,
                    "recent": [int(x) for x in t.recent],
                    "seen": [[mid, d.violated, d.index, d.guard, d.replaced] for mid, d in t.seen.items()],
                }
                for key, t in self._threads.items()
            ]
            return {
                "version": _STATE_VERSION,
                "config": asdict(self._config),
                "window": self.window,
                "threads": threads,
                "events": [event.as_dict() for event in self._events],
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace this monitor's threads and events with a :meth:`state_dict`; it continues exactly where the
        saved monitor stopped. The saved detector config and window replace this monitor's; its labelling,
        options, callbacks and tags stay.

        Raises:
            ValueError: If the state is from another version or is malformed (nothing is changed then).
        """
        try:
            config, window, threads, events = self._parse_state(state)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"malformed TippingMonitor state: {exc!r}") from exc
        with self._lock:
            self._config, self.window, self._threads, self._events = config, window, threads, events

    @staticmethod
    def _parse_state(
        state: Mapping[str, Any],
    ) -> tuple[CusumConfig, int, dict[str | None, _Thread], list[TippingEvent]]:
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError("unsupported TippingMonitor state version")
        config, window = CusumConfig(**state["config"]), state["window"]
        if not _is_count(window) or window < 1:
            raise ValueError(f"invalid window {window!r}")
        names = {f.name for f in fields(TippingEvent)}
        events = []
        for raw in state["events"]:
            if set(raw) != names:
                raise ValueError(f"invalid event {raw!r}")
            events.append(TippingEvent(**raw))
        threads: dict[str | None, _Thread] = {}
        for raw in state["threads"]:
            key = raw["thread_id"]
            if not (key is None or isinstance(key, str)) or key in threads:
                raise ValueError(f"invalid or repeated thread id {key!r}")
            detector = CusumDetector.from_state_dict(raw["detector"])
            counts = [raw[name] for name in ("decisions", "violations", "invalid", "guarded")]
            recent = raw["recent"]
            if detector.config != config:
                raise ValueError(f"thread {key!r}: detector config differs from the monitor's")
            if not all(map(_is_count, counts)) or counts[1] > counts[0]:
                raise ValueError(f"thread {key!r}: invalid counts {counts!r}")
            if len(recent) > window or any(x not in (0, 1) or isinstance(x, float) for x in recent):
                raise ValueError(f"thread {key!r}: invalid recent window {recent!r}")
            thread = _Thread(detector, deque((bool(x) for x in recent), maxlen=window), *counts)
            if not isinstance(raw["latched"], bool):
                raise ValueError(f"thread {key!r}: invalid latch {raw['latched']!r}")
            thread.latched = raw["latched"]
            alarms = {(e.message_id, e.index): e for e in events if e.thread_id == key}
            for mid, violated, index, guard, replaced in raw["seen"]:
                if not isinstance(mid, str) or violated not in (None, True, False):
                    raise ValueError(f"thread {key!r}: invalid judged message {mid!r}")
                alarm = alarms.get((mid, index))
                thread.seen[mid] = _Decision(violated, index, alarm, bool(guard), bool(replaced))
            threads[key] = thread
        if any(event.thread_id not in threads for event in events):
            raise ValueError("an event belongs to no saved thread")
        return config, window, threads, events


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
