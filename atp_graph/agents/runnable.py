"""A user's own LangGraph agent (or any LangChain Runnable) as an :class:`~atp_graph.contracts.Agents` population.

It reads exactly what the testbed's own agents read (:mod:`atp_graph.games.prompts`), turn by turn: round 1 sends
the system prompt and the question; every later round sends the previous round's feedback as its own human
message, then the new question. The agent's own memory carries what it learns:

- a compiled LangGraph graph with a checkpointer receives only the new messages each round, on its thread (a
  sync-only checkpointer such as ``SqliteSaver`` is driven through ``invoke`` on worker threads);
- a graph without a checkpointer, or any other LangChain Runnable, gets the whole transcript replayed.

The decision is read from the agent's text, its structured output or its tool call (:mod:`.replies`). A call that
raises is retried with exponential backoff; when it keeps failing, :class:`AgentFailed` says where.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from pydantic import ValidationError

from ..contracts import Action, Observation, Observations, Settle, Submission
from ..errors import UserError
from .replies import Extract, NoReply, Reply, read_reply

MAX_DELAY = 60.0
"""Longest wait (seconds) between two attempts of a failing call, however many retries."""


class ProbeError(UserError):
    """The agent or the probe's arguments cannot be probed; the message says what is missing."""


class TargetExit(RuntimeError):
    """The agent called ``sys.exit`` inside a call: a failure of that call, not of the probe."""

    def __init__(self, code: object) -> None:
        super().__init__(f"the agent called sys.exit({code!r})")


class DaemonExecutor(ThreadPoolExecutor):
    """Runs each synchronous call of the agent on a daemon thread of its own, so that a call given up on after its
    timeout (a node looping forever) cannot keep the process from exiting once the partial report is saved. A
    ``sys.exit`` inside the call becomes :class:`TargetExit`, an ordinary failure of that call.

    A ``ThreadPoolExecutor`` only because asyncio's default executor must be one; it never starts the pool's
    (non-daemon, joined at exit) workers, and shutting it down waits for nothing."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except SystemExit as e:
                future.set_exception(TargetExit(e.code))
            except BaseException as e:  # handed to the caller, as ThreadPoolExecutor does
                future.set_exception(e)
            else:
                future.set_result(result)

        threading.Thread(target=run, name="atp-probe-call", daemon=True).start()
        return future


def retry_delay(backoff: float, attempt: int) -> float:
    """Seconds to wait after failed ``attempt`` (0-based): ``backoff`` doubled each time, at most :data:`MAX_DELAY`."""
    return min(backoff * 2.0 ** min(attempt, 64), MAX_DELAY)


class AgentFailed(ProbeError):
    """The agent kept raising for one round after every retry; ``round`` and ``agent`` say where."""

    def __init__(self, agent: str, round_no: int, attempts: int, error: BaseException) -> None:
        self.agent, self.round, self.attempts, self.error = agent, round_no, attempts, error
        detail = " ".join(str(error).split())[:300]
        super().__init__(
            f"the agent failed in round {round_no} on thread {agent!r} after {attempts} attempt(s): "
            f"{type(error).__name__}: {detail}"
        )


class RunnableAgents:
    """Agents answered by one user runnable, one thread per agent.

    Args:
        agent: A compiled LangGraph graph whose state holds the conversation under ``messages_key``, or any LangChain
            Runnable that takes a list of messages and returns an AI message, a string or a structured object.
        threads: The thread id of each agent id.
        config: Base RunnableConfig (callbacks, recursion limit...); the thread id and metadata are added.
        state: Extra state keys sent with every graph input.
        context: The graph's run context (``context_schema`` graphs), passed on every invocation.
        messages_key: The state key holding the conversation.
        extract: Reads the chosen option from the agent's final output (see :mod:`.replies`).
        max_concurrency: Most agents asked at the same time.
        retries: Extra attempts for a call that raises.
        backoff: Seconds before the first retry; doubled for each further one.
        timeout: Seconds one call may take before it counts as failed (and is retried); ``None``: no limit.
        read: Reads the agent's output instead of :func:`~.replies.read_reply` (same arguments).
    """

    surrogate = False

    def __init__(
        self,
        agent: Any,
        *,
        threads: Mapping[str, str],
        config: RunnableConfig | None = None,
        state: Mapping[str, Any] | None = None,
        context: Any = None,
        messages_key: str = "messages",
        extract: Extract | None = None,
        max_concurrency: int = 8,
        retries: int = 2,
        backoff: float = 1.0,
        timeout: float | None = None,
        read: Callable[..., Reply] | None = None,
    ) -> None:
        self.target = _Target(agent, state or {}, context=context, messages_key=messages_key, extract=extract)
        self.target.read = read or read_reply
        self.threads, self.base = dict(threads), dict(config or {})
        self.gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.transcripts: dict[str, list[BaseMessage]] = {}
        self.feedback: dict[tuple[str, int], str] = {}
        """The feedback each agent received after each round, keyed by (agent, round)."""
        self.sources: dict[tuple[str, int], str] = {}
        """Where each answer's choice was read (:attr:`Reply.source`), keyed by (agent, round)."""

    @property
    def memory(self) -> Literal["checkpointer", "replay"]:
        return self.target.memory

    async def _ask(self, o: Observation) -> Action:
        transcript = self.transcripts.setdefault(o.agent, [])
        new: list[BaseMessage] = []
        previous = self.feedback.get((o.agent, o.round - 1))
        if previous is not None:
            new.append(HumanMessage(previous, id=str(uuid.uuid4())))
        elif o.system:
            new.append(SystemMessage(o.system, id=str(uuid.uuid4())))
        new.append(HumanMessage(o.question, id=str(uuid.uuid4())))
        transcript.extend(new)
        base = self.base
        config: dict[str, Any] = {
            **base,
            "configurable": {**(base.get("configurable") or {}), "thread_id": self.threads[o.agent]},
            "metadata": {**(base.get("metadata") or {}), "atp_agent": o.agent, "atp_probe_round": o.round},
        }
        reply = await self._retrying(o, new, transcript, config)  # type: ignore[arg-type]
        self.sources[(o.agent, o.round)] = reply.source
        transcript.append(AIMessage(reply.text))
        return self._action(o, reply)

    def _action(self, o: Observation, reply: Reply) -> Action:
        """The round's action from the agent's reply (the tool probe also keeps the reply's calls)."""
        return Action(reply.choice, reply.text, None, {"question": o.question})

    def _submission(self, o: Observation, action: Action) -> Any:
        """What the game is handed for one agent's action."""
        return Submission(action.choice, action.response)

    async def _retrying(
        self, o: Observation, new: list[BaseMessage], transcript: list[BaseMessage], config: RunnableConfig
    ) -> Reply:
        """Ask once, retrying a raising call; the same messages (same ids) are re-sent, so a checkpointer's
        ``add_messages`` reducer replaces rather than repeats what a failed attempt already stored."""
        for attempt in range(self.retries + 1):
            try:
                async with self.gate or contextlib.nullcontext():
                    return await self._within_timeout(self.target.ask(new, transcript, config, o))
            except ProbeError:
                raise
            except (Exception, SystemExit) as e:
                error = TargetExit(e.code) if isinstance(e, SystemExit) else e
                if attempt == self.retries:
                    raise AgentFailed(self.threads[o.agent], o.round, attempt + 1, error) from e
                await asyncio.sleep(retry_delay(self.backoff, attempt))
        raise AssertionError("unreachable")

    async def _within_timeout(self, call: Any) -> Reply:
        """Await ``call``; cancel it and raise ``TimeoutError`` after :attr:`timeout` seconds."""
        task = asyncio.ensure_future(call)
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise TimeoutError(f"no answer within {self.timeout:g} s")
        return task.result()

    async def act(self, round_no: int, observations: Observations, settle: Settle) -> list[Action]:
        tasks = [asyncio.ensure_future(self._ask(o)) for o in observations]
        try:
            actions = list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        outcome = settle([self._submission(o, a) for o, a in zip(observations, actions, strict=True)])
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

    async def has_history(self, thread: str) -> bool:
        """Whether the agent's checkpointer already holds ``thread`` (always ``False`` without one)."""
        return await self.target.has_history(thread)

    async def delete(self, thread: str) -> bool:
        """Delete ``thread`` from the agent's checkpointer; ``False`` when the saver cannot delete threads."""
        return await self.target.delete(thread)


class _Target:
    """The agent under probe: how to send it a round and read its answer."""

    def __init__(
        self, agent: Any, state: Mapping[str, Any], *, context: Any, messages_key: str, extract: Extract | None
    ) -> None:
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
        self.state, self.key, self.extract = dict(state), messages_key, extract
        self.read: Callable[..., Reply] = read_reply
        """Reads the agent's output (:func:`~.replies.read_reply`, or the tool probe's reader)."""
        self.kwargs = {} if context is None else {"context": context}
        if self.graph is None and context is not None:
            raise ProbeError("context= is passed to LangGraph graphs; this agent is a plain Runnable")
        if self.graph is not None and messages_key not in self.graph.channels:
            keys = ", ".join(repr(k) for k in self.graph.channels if not k.startswith(("__", "branch:")))
            raise ProbeError(
                f"the graph's state has no {messages_key!r} key (it has {keys}); "
                "pass messages_key= naming the key that holds the conversation"
            )
        if messages_key in self.state:
            raise ProbeError(f"state must not set {messages_key!r}; the probe sends the messages itself")
        self.saver = getattr(self.graph, "checkpointer", None)
        self.memory: Literal["checkpointer", "replay"] = (
            "checkpointer" if isinstance(self.saver, BaseCheckpointSaver) else "replay"
        )
        self.sync_only = False
        """The checkpointer has no async methods (``SqliteSaver``): the graph is run with ``invoke`` on a thread."""

    async def ask(
        self, new: list[BaseMessage], transcript: list[BaseMessage], config: RunnableConfig, o: Observation
    ) -> Reply:
        """Send one round and read the agent's decision."""
        if self.graph is None:
            out = await self.agent.ainvoke(list(transcript), config)
            try:
                return self._read(out, o, graph=False, sent_id=None)
            except NoReply:
                raise ProbeError(
                    f"the agent returned no AI message in round {o.round} (it returned {type(out).__name__})"
                ) from None
        sent = new if self.memory == "checkpointer" else transcript
        payload = {**self.state, self.key: list(sent)}
        try:
            if self.sync_only:
                chunks = await asyncio.to_thread(lambda: list(self._stream(payload, config)))
            else:
                chunks = [c async for c in self._stream(payload, config, sync=False)]
        except KeyError as e:
            raise self._missing([str(e.args[0]) if e.args else "?"]) from e
        except ValidationError as e:
            missing = [".".join(map(str, x["loc"])) for x in e.errors() if x["type"] == "missing"]
            if not missing:
                raise
            raise self._missing(missing) from e
        except TypeError as e:
            if "No synchronous function provided" in str(e):
                raise ProbeError(
                    "the agent has async nodes but a sync-only checkpointer; compile it with an async one "
                    "(AsyncSqliteSaver, InMemorySaver)"
                ) from e
            raise
        out: Mapping[str, Any] = {}
        written: set[str] = set()  # state keys this run wrote (a checkpointer keeps older ones)
        for mode, chunk in chunks:
            if mode == "values" and isinstance(chunk, Mapping):
                out = chunk
                continue
            for node, update in chunk.items() if isinstance(chunk, Mapping) else ():
                if node == "__interrupt__":
                    raise ProbeError(
                        f"the agent stopped at an interrupt in round {o.round}; the probe cannot answer interrupts"
                    )
                for part in update if isinstance(update, list | tuple) else [update]:
                    written |= set(part) if isinstance(part, Mapping) else set()
        if "structured_response" in out and "structured_response" not in written:
            out = {k: v for k, v in out.items() if k != "structured_response"}  # an earlier round's answer
        try:
            return self._read(out, o, graph=True, sent_id=new[-1].id)
        except NoReply:
            raise ProbeError(
                f"the agent returned no AI message in round {o.round} (its output {self.key!r} holds none)"
            ) from None

    def _stream(self, payload: dict[str, Any], config: RunnableConfig, *, sync: bool = True) -> Any:
        """The run's (mode, chunk) pairs: state ``values`` after each step and each node's ``updates``."""
        stream = self.agent.stream if sync else self.agent.astream
        return stream(payload, config, stream_mode=["updates", "values"], **self.kwargs)

    def _read(self, out: Any, o: Observation, *, graph: bool, sent_id: str | None) -> Reply:
        try:
            return self.read(out, o.options, graph=graph, sent_id=sent_id, messages_key=self.key, extract=self.extract)
        except NoReply:
            raise
        except Exception as e:
            if self.extract is None:
                raise
            raise ProbeError(f"extract= raised {type(e).__name__} in round {o.round}: {e}") from e

    async def has_history(self, thread: str) -> bool:
        if self.saver is None:
            return False
        config: RunnableConfig = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        if not self.sync_only:
            try:
                return await self.saver.aget_tuple(config) is not None
            except NotImplementedError:
                self.sync_only = True
        return await asyncio.to_thread(self.saver.get_tuple, config) is not None

    async def delete(self, thread: str) -> bool:
        if self.saver is None:
            return False
        try:
            if self.sync_only:
                await asyncio.to_thread(self.saver.delete_thread, thread)
            else:
                await self.saver.adelete_thread(thread)
        except NotImplementedError:
            return False
        return True

    def _missing(self, keys: list[str]) -> ProbeError:
        names = ", ".join(map(repr, keys))
        if self.graph is not None and all(k in self.graph.channels for k in keys):
            lead = f"the agent's state requires {names}, which the probe does not send (it sends only {self.key!r})"
        else:
            lead = f"the agent raised KeyError {names} (a state key it needs? the probe sends only {self.key!r})"
        return ProbeError(f"{lead}; pass it with state={{{', '.join(f'{k!r}: ...' for k in keys)}}}")
