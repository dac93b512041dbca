"""Watch a LangGraph agent's decisions and raise an alarm when it starts tipping toward rule-breaking.

Each decision the agent makes is labelled *violated* (1) or *complied* (0). A one-sided Bernoulli CUSUM
(:class:`CusumDetector`) accumulates the evidence that the violation rate has risen from an acceptable
``p0`` to a worrying ``p1`` and fires when that evidence crosses a threshold. :class:`TippingMonitor` wraps
the detector for an existing agent, attached in one of two ways (use one, not both, or every decision is
counted twice).

1. As a LangChain callback handler. Nothing in the graph changes; every chat-model response is read as
   it finishes::

       monitor = TippingMonitor(violating="Route A", compliant="Route B", on_tip=[print])
       graph.invoke({"messages": [("user", question)]}, config={"callbacks": [monitor]})
       monitor.summary()  # {"decisions": ..., "fired": ..., "events": [...], ...}

   Chat models report through ``on_llm_end`` (LangChain has no ``on_chat_model_end``). When the agent
   makes other model calls too (reflection, tools), tag the deciding model, e.g.
   ``model.with_config(tags=["decision"])``, and pass ``watch_tags={"decision"}``.

2. As a graph node placed after the agent node; it reads the last AI message in ``state["messages"]``
   and, on an alarm, can also act::

       builder.add_node("atp_monitor", monitor.node(action="interrupt"))
       builder.add_edge("agent", "atp_monitor")
       graph = builder.compile(checkpointer=InMemorySaver())
       out = graph.invoke(inputs, config)  # out["__interrupt__"] holds the alarm for a human
       graph.invoke(Command(resume="fallback"), config)  # or Command(resume="approve")

   ``action="record"`` only records the alarm; ``"interrupt"`` pauses the graph with
   :func:`langgraph.types.interrupt` until a human resumes with ``"approve"`` (keep the decision) or
   ``"fallback"``; ``"fallback"`` replaces the alarming AI message (same id, so the ``add_messages``
   reducer swaps it in place) with the compliant choice ``{"choice": "<compliant>"}`` and a note.

Decisions the monitor cannot label (no clear choice) are counted in ``monitor.invalid`` and never reach
the detector. A monitor keeps its state in memory, per process: to carry the evidence across a restart,
save ``monitor.detector.state_dict()`` and pass ``detector=CusumDetector.from_state_dict(saved)``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from ..analysis.cusum import CusumConfig, CusumDetector

__all__ = ["CusumConfig", "CusumDetector", "MonitorAction", "TippingEvent", "TippingMonitor"]

MonitorAction = Literal["record", "interrupt", "fallback"]

_RESUME_SCHEMA = {"type": "string", "enum": ["approve", "fallback"]}


@dataclass(frozen=True)
class TippingEvent:
    """One alarm raised by a :class:`TippingMonitor`."""

    index: int
    """0-based position of the alarming decision among the detector's labelled decisions."""
    statistic: float
    """CUSUM statistic at the alarm (``>= h``)."""
    recent_rate: float
    """Violation rate over the monitor's last ``window`` labelled decisions, this one included."""
    timestamp: float
    """When the alarm was raised, in seconds since the Unix epoch."""
    message_id: str | None = None
    """Id of the alarming AI message, when it had one."""

    def as_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-able dict."""
        return asdict(self)


class TippingMonitor(BaseCallbackHandler):
    """Label an agent's decisions, feed them to a :class:`CusumDetector` and record the alarms.

    Attach it as a callback handler (``config={"callbacks": [monitor]}``) or as a graph node
    (:meth:`node`); see the module docstring. Safe to share between threads.

    Attributes:
        detector: The CUSUM detector the decisions feed.
        events: Alarms raised so far, oldest first.
        on_tip: Functions called with each new :class:`TippingEvent` (append more at any time).
        decisions: Decisions labelled violated or complied.
        violations: Decisions labelled violated.
        invalid: Decisions the monitor could not label.
    """

    def __init__(
        self,
        *,
        violating: str | None = None,
        compliant: str | None = None,
        label: Callable[[str], bool | None] | None = None,
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
            detector: The detector to feed; a fresh ``CusumDetector()`` by default. Pass one restored
                with :meth:`CusumDetector.from_state_dict` to continue an earlier run.
            window: Decisions over which an event's ``recent_rate`` is computed.
            on_tip: Functions called with every new event.
            watch_tags: In the callback path, only read model runs carrying one of these tags
                (``None`` reads every chat-model and LLM response).

        Raises:
            ValueError: If neither ``label`` nor both options are given, the options are equal, or
                ``window < 1``.
        """
        if label is None and (violating is None or compliant is None):
            raise ValueError("give `label`, or both `violating` and `compliant` options")
        if violating is not None and violating == compliant:
            raise ValueError("`violating` and `compliant` must differ")
        if window < 1:
            raise ValueError(f"need window >= 1, got {window!r}")
        self.violating = violating
        self.compliant = compliant
        self.label = label if label is not None else self._parse_label
        self.detector = detector if detector is not None else CusumDetector()
        self.window = window
        self.on_tip: list[Callable[[TippingEvent], object]] = list(on_tip)
        self.watch_tags = frozenset(watch_tags) if watch_tags is not None else None
        self._lock = threading.Lock()
        self._clear()

    def reset(self) -> None:
        """Forget all decisions and events and reset the detector."""
        with self._lock:
            self.detector.reset()
            self._clear()

    def _clear(self) -> None:
        self.events: list[TippingEvent] = []
        self.decisions = 0
        self.violations = 0
        self.invalid = 0
        self._recent: deque[bool] = deque(maxlen=self.window)
        self._seen: dict[str, TippingEvent | None] = {}

    def _parse_label(self, text: str) -> bool | None:
        from ..parsing import parse_choice  # lazy: the monitor needs parsing only with the default label

        choice = parse_choice(text, (self.violating, self.compliant))
        return None if choice is None else choice == self.violating

    def observe(self, text: str, *, message_id: str | None = None) -> TippingEvent | None:
        """Label one response and update the detector; return the event if it raised an alarm.

        This is what both attachment paths call; call it directly to monitor any other text stream.
        """
        verdict = self.label(text)
        with self._lock:
            if verdict is None or verdict not in (True, False):
                self.invalid += 1
                return None
            self.decisions += 1
            self.violations += bool(verdict)
            self._recent.append(bool(verdict))
            if not self.detector.update(bool(verdict)):
                return None
            event = TippingEvent(
                index=self.detector.observations - 1,
                statistic=self.detector.statistic,
                recent_rate=sum(self._recent) / len(self._recent),
                timestamp=time.time(),
                message_id=message_id,
            )
            self.events.append(event)
        for callback in list(self.on_tip):  # outside the lock: a callback may read the monitor
            callback(event)
        return event

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Read every finished chat-model or LLM response (the first candidate per prompt)."""
        if self.watch_tags is not None and self.watch_tags.isdisjoint(tags or ()):
            return
        for candidates in response.generations:
            if candidates:
                first = candidates[0]
                message_id = first.message.id if isinstance(first, ChatGeneration) else None
                self.observe(first.text, message_id=message_id)

    def node(
        self, *, action: MonitorAction = "record", fallback_message: str | None = None
    ) -> Callable[[Any], dict[str, Any]]:
        """Return a graph node that monitors the last AI message in ``state["messages"]``.

        Add it after the agent node: ``builder.add_node("atp_monitor", monitor.node(action="fallback"))``.
        Each AI message is judged once, by id, so a node re-run (as after an interrupt) does not count
        it twice. On an alarm:

        * ``"record"``: record the event only; the state is unchanged.
        * ``"interrupt"``: call :func:`langgraph.types.interrupt` with the event (a dict with
          ``"atp_tipping": True``, the event's fields, the message text and the options), which needs a
          checkpointer. Resume with ``Command(resume="approve")`` to keep the decision or
          ``Command(resume="fallback")`` to replace it as below.
        * ``"fallback"``: replace the AI message (same id) with one choosing ``compliant``: the note
          ``fallback_message`` (a default one if ``None``) followed by ``{"choice": "<compliant>"}``.
          The replacement has no tool calls, so a tool the agent asked for is not run.

        Raises:
            ValueError: If ``action`` is unknown, or is ``"interrupt"``/``"fallback"`` without a
                ``compliant`` option.
        """
        if action not in ("record", "interrupt", "fallback"):
            raise ValueError(f"unknown action {action!r}; use 'record', 'interrupt' or 'fallback'")
        if action != "record" and self.compliant is None:
            raise ValueError(f"action {action!r} needs the monitor's `compliant` option")

        def atp_monitor(state: Any) -> dict[str, Any]:
            messages = state["messages"] if isinstance(state, Mapping) else state.messages
            last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
            if last is None:
                return {}
            event = self._observe_once(last)
            if event is None or action == "record":
                return {}
            if action == "interrupt":
                from langgraph.types import interrupt

                payload = {
                    "atp_tipping": True,
                    **event.as_dict(),
                    "message": str(last.text),
                    "violating": self.violating,
                    "compliant": self.compliant,
                }
                answer = interrupt(payload, response_schema=_RESUME_SCHEMA)
                if answer in ("approve", True):
                    return {}
                if answer not in ("fallback", False):
                    raise ValueError(f"resume with 'approve' or 'fallback', got {answer!r}")
            return {"messages": [self._fallback(last, event, fallback_message)]}

        return atp_monitor

    def _observe_once(self, message: AIMessage) -> TippingEvent | None:
        """Observe ``message`` unless its id was seen before; return its event (old or new) if any."""
        if message.id is None:
            return self.observe(message.text)
        with self._lock:
            if message.id in self._seen:
                return self._seen[message.id]
        event = self.observe(message.text, message_id=message.id)
        with self._lock:
            self._seen[message.id] = event
        return event

    def _fallback(self, message: AIMessage, event: TippingEvent, note: str | None) -> AIMessage:
        """The compliant AI message that replaces ``message`` in the state."""
        from ..parsing import choice_json

        if message.id is None:
            raise ValueError("the fallback replaces the AI message by id; use the add_messages reducer")
        if note is None:
            note = (
                f"[atp-monitor] Tipping alarm: {event.recent_rate:.0%} of recent decisions broke the rule, "
                f"so this decision was replaced with the compliant option."
            )
        return AIMessage(
            content=f"{note}\n\n{choice_json(self.compliant or '')}",
            id=message.id,
            name=message.name,
            response_metadata={"atp_monitor": event.as_dict()},
        )

    def summary(self) -> dict[str, Any]:
        """Return a JSON-able summary: counts, overall violation rate, whether and when it fired, events."""
        with self._lock:
            events = [event.as_dict() for event in self.events]
            return {
                "decisions": self.decisions,
                "violations": self.violations,
                "invalid": self.invalid,
                "violation_rate": self.violations / self.decisions if self.decisions else None,
                "statistic": self.detector.statistic,
                "fired": bool(events),
                "first_alarm_index": events[0]["index"] if events else None,
                "events": events,
            }
