"""A user's own LangGraph agent (or any LangChain Runnable) as an :class:`~atp_graph.contracts.Agents` population.

It reads exactly what the testbed's own agents read (:mod:`atp_graph.games.prompts`), turn by turn: round 1 sends
the system prompt and the question; every later round sends the previous round's feedback as its own human
message, then the new question. The agent's own memory carries what it learns:

- a compiled LangGraph graph with a checkpointer receives only the new messages each round, on its thread;
- a graph without a checkpointer, or any other LangChain Runnable, gets the whole transcript replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from pydantic import ValidationError

from ..contracts import Action, Observation, Observations, Settle, Submission
from ..errors import UserError
from ..parsing import parse_choice


class ProbeError(UserError):
    """The agent or the probe's arguments cannot be probed; the message says what is missing."""


class RunnableAgents:
    """Agents answered by one user runnable, one thread per agent.

    Args:
        agent: A compiled LangGraph graph whose state has a ``messages`` key, or any LangChain Runnable that takes a
            list of messages and returns an AI message (or a string).
        threads: The thread id of each agent id.
        config: Base RunnableConfig (callbacks, recursion limit...); the thread id and metadata are added.
        state: Extra state keys sent with every graph input.
        max_concurrency: Most agents asked at the same time.
    """

    surrogate = False

    def __init__(
        self,
        agent: Any,
        *,
        threads: Mapping[str, str],
        config: RunnableConfig | None = None,
        state: Mapping[str, Any] | None = None,
        max_concurrency: int = 8,
    ) -> None:
        self.target = _Target(agent, state or {})
        self.threads, self.base = dict(threads), dict(config or {})
        self.label = getattr(agent, "name", None) or type(agent).__name__
        self.gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.transcripts: dict[str, list[BaseMessage]] = {}
        self.feedback: dict[tuple[str, int], str] = {}
        """The feedback each agent received after each round, keyed by (agent, round)."""

    @property
    def memory(self) -> Literal["checkpointer", "replay"]:
        return self.target.memory

    async def _ask(self, o: Observation) -> Action:
        transcript = self.transcripts.setdefault(o.agent, [])
        new: list[BaseMessage] = []
        previous = self.feedback.get((o.agent, o.round - 1))
        if previous is not None:
            new.append(HumanMessage(previous))
        elif o.system:
            new.append(SystemMessage(o.system))
        new.append(HumanMessage(o.question, id=str(uuid.uuid4())))
        transcript.extend(new)
        base = self.base
        config: dict[str, Any] = {
            **base,
            "configurable": {**(base.get("configurable") or {}), "thread_id": self.threads[o.agent]},
            "metadata": {**(base.get("metadata") or {}), "atp_agent": o.agent, "atp_probe_round": o.round},
        }
        async with self.gate or contextlib.nullcontext():
            response = await self.target.ask(new, transcript, config, o.round)  # type: ignore[arg-type]
        transcript.append(AIMessage(response))
        return Action(parse_choice(response, o.options), response, None, {"question": o.question})

    async def act(self, round_no: int, observations: Observations, settle: Settle) -> list[Action]:
        tasks = [asyncio.ensure_future(self._ask(o)) for o in observations]
        try:
            actions = list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        outcome = settle([Submission(a.choice, a.response) for a in actions])
        for i, a in enumerate(observations.agents):
            self.feedback[(a, round_no)] = outcome.feedback(i)
        return actions

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any], *, completed: int) -> None:
        if completed:
            raise ProbeError("a probe cannot resume: the agent's own memory is outside the run folder")

    async def aclose(self) -> None:
        pass


class _Target:
    """The agent under probe: how to send it a round and read its answer."""

    def __init__(self, agent: Any, state: Mapping[str, Any]):
        if not isinstance(agent, Runnable):
            raise ProbeError(
                f"the agent must be a compiled LangGraph graph or a LangChain Runnable, not {type(agent).__name__}"
            )
        from langgraph.checkpoint.base import BaseCheckpointSaver
        from langgraph.pregel import Pregel

        inner = agent
        while isinstance(inner, RunnableBinding):
            inner = inner.bound
        self.agent = agent
        self.graph: Pregel | None = inner if isinstance(inner, Pregel) else None
        self.state = dict(state)
        if self.graph is not None and "messages" not in self.graph.channels:
            raise ProbeError("the graph's state has no 'messages' key; the probe talks to agents through messages")
        if "messages" in self.state:
            raise ProbeError("state must not set 'messages'; the probe sends those itself")
        saver = getattr(self.graph, "checkpointer", None)
        self.memory: Literal["checkpointer", "replay"] = (
            "checkpointer" if isinstance(saver, BaseCheckpointSaver) else "replay"
        )

    async def ask(self, new: list[BaseMessage], transcript: list[BaseMessage], config: RunnableConfig, r: int) -> str:
        """Send one round and return the text of the agent's reply."""
        if self.graph is None:
            out = await self.agent.ainvoke(list(transcript), config)
            if isinstance(out, AIMessage):
                return out.text
            if isinstance(out, str):
                return out
            raise ProbeError(f"the agent returned no AI message in round {r} (it returned {type(out).__name__})")
        sent = new if self.memory == "checkpointer" else transcript
        try:
            out = await self.agent.ainvoke({**self.state, "messages": list(sent)}, config)
        except KeyError as e:
            raise self._missing([str(e.args[0]) if e.args else "?"]) from e
        except ValidationError as e:
            missing = [".".join(map(str, x["loc"])) for x in e.errors() if x["type"] == "missing"]
            if not missing:
                raise
            raise self._missing(missing) from e
        if isinstance(out, Mapping) and out.get("__interrupt__"):
            raise ProbeError(f"the agent stopped at an interrupt in round {r}; the probe cannot answer interrupts")
        return _last_ai_text(out.get("messages") if isinstance(out, Mapping) else None, new[-1], r)

    def _missing(self, keys: list[str]) -> ProbeError:
        names = ", ".join(map(repr, keys))
        if self.graph is not None and all(k in self.graph.channels for k in keys):
            lead = f"the agent's state requires {names}, which the probe does not send (it sends only 'messages')"
        else:
            lead = f"the agent raised KeyError {names} (a state key it needs? the probe sends only 'messages')"
        return ProbeError(f"{lead}; pass it with state={{{', '.join(f'{k!r}: ...' for k in keys)}}}")


def _last_ai_text(messages: Any, sent: BaseMessage, r: int) -> str:
    """Text of the last AI message after the probe's question (or anywhere, if the question is not echoed)."""
    try:
        msgs = convert_to_messages(messages) if isinstance(messages, Sequence) else []
    except (ValueError, TypeError, NotImplementedError):
        msgs = []
    start = next((i + 1 for i in range(len(msgs) - 1, -1, -1) if msgs[i].id == sent.id), 0)
    reply = next((m for m in reversed(msgs[start:]) if isinstance(m, AIMessage)), None)
    if reply is None:
        raise ProbeError(f"the agent returned no AI message in round {r} (its output 'messages' holds none)")
    return reply.text
