"""LLM agents: one compiled agent graph, one thread per agent, every rendezvous one batched model call."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.base import BaseStore

from ..config import AgentConfig
from ..contracts import Action, Observations, Settle, Settlement, Submission
from ..errors import UserError
from ..policies.base import Policy
from .coordinator import Coordinator
from .graph import AgentContext, build_agent_graph

CHECKPOINTS = "agents.sqlite"
"""The agents' LangGraph checkpoints inside a run folder."""


class LLMAgents:
    """Agents that decide with a language-model :class:`~atp_graph.policies.Policy`.

    Args:
        policy: The model; all decisions of a round go to it as one batch.
        settings: Decision, evolution and runtime-defense settings.
        history_window: Transcript rounds shown (the resolved value of ``settings.history_window``).
        reflection_tokens: Most tokens of a written lesson.
        store: Where reflection lessons live (``None``: reflection mode keeps none).
        checkpoints: SQLite file for the agents' threads (a run folder's ``agents.sqlite``); ``None`` keeps them
            in memory (:class:`~langgraph.checkpoint.memory.InMemorySaver`).
    """

    surrogate = False
    build_graph = staticmethod(build_agent_graph)
    """Compiles the agent graph every thread runs (``store=``, ``checkpointer=``)."""

    def __init__(
        self,
        policy: Policy,
        settings: AgentConfig,
        *,
        history_window: int = 5,
        reflection_tokens: int = 64,
        store: BaseStore | None = None,
        checkpoints: Path | None = None,
    ) -> None:
        self.policy, self.settings, self.store, self.checkpoints = policy, settings, store, checkpoints
        self.history_window, self.reflection_tokens = history_window, reflection_tokens
        self.label = policy.name
        self.saver: BaseCheckpointSaver | None = None
        self.graph: Any = None
        self._conn: Any = None
        self._resume_from: int | None = None
        self._fork: dict[str, str] = {}

    async def _open(self, agents: Sequence[str]) -> None:
        if self.saver is None:
            if self.checkpoints is None:
                self.saver = InMemorySaver()
            else:
                import aiosqlite
                from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
                from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

                self._conn = await aiosqlite.connect(str(self.checkpoints))
                # A run folder is untrusted input on resume: only LangGraph's allowlist of plain types (messages,
                # datetimes...) is rebuilt from agents.sqlite, never an arbitrary importable callable.
                self.saver = AsyncSqliteSaver(self._conn, serde=JsonPlusSerializer(allowed_msgpack_modules=None))
                await self.saver.setup()
                # One fsync per round (see _sync), not one per agent: a crash loses at most the round in flight,
                # which the run folder's checkpoint (state.json, written after the round) does not count yet.
                await self._conn.execute("PRAGMA synchronous=NORMAL")
            self.graph = self.build_graph(store=self.store, checkpointer=self.saver)
        if self._resume_from is not None:
            await self._rewind(agents, self._resume_from)
            self._resume_from = None

    async def _rewind(self, agents: Sequence[str], completed: int) -> None:
        """Continue every thread from its state after round ``completed`` (later, unfinished rounds are forked off).

        Raises:
            UserError: A thread has no checkpoint of round ``completed``: its memory is lost, and continuing would
                silently give that agent a blank memory.
        """
        assert self.saver is not None
        for a in agents:
            config = {"configurable": {"thread_id": a}}
            latest = await self.saver.aget_tuple(config)  # type: ignore[arg-type]
            last = latest.metadata.get("atp_round", 0) if latest is not None else 0
            if completed == 0:
                if latest is not None:
                    await self.saver.adelete_thread(a)
                continue
            if last == completed:
                continue
            if last > completed:
                async for c in self.saver.alist(config):  # type: ignore[arg-type]
                    if c.metadata.get("atp_round") == completed:
                        self._fork[a] = c.config["configurable"]["checkpoint_id"]
                        break
            if a not in self._fork:
                raise UserError(
                    f"{self.checkpoints or 'the checkpointer'}: agent {a!r} has no memory of round {completed} (its "
                    f"last checkpoint is round {last}); the run folder is damaged, start a new run"
                )

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn, self.saver, self.graph = None, None, None

    async def act(self, round_no: int, observations: Observations, settle: Settle) -> list[Action]:
        await self._open(observations.agents)
        s = self.settings
        coord = self._coordinator(observations, settle)
        ctx = self._context(AgentContext, coord)
        inputs = {
            o.agent: {
                "agent": o.agent,
                "round": o.round,
                "seed": o.seed,
                "system": o.system,
                "question": o.question,
                "swapped": o.swapped if s.decision == "score" else None,
                "options": o.options,
                "target": o.target,
                "rule": o.rule,
                "lesson": None,
                "proposed_choice": None,
            }
            for o in observations
        }
        states = await self._run_threads(round_no, inputs, ctx, fail=[coord.fail])
        return [_action(st) for st in states]

    def _context(self, cls: type[AgentContext], coordinator: Coordinator, **extra: Any) -> Any:
        """The run-wide settings every agent graph reads (``cls``: :class:`AgentContext` or a subclass)."""
        s = self.settings
        return cls(
            coordinator=coordinator,
            evolution=s.evolution,
            history_window=self.history_window,
            memory_hygiene=s.memory_hygiene,
            reanchor_every=s.reanchor_every,
            monitor_fallback=s.monitor_fallback,
            parse=s.parse,
            on_truncated=s.on_truncated,
            **extra,
        )

    def _coordinator(self, observations: Observations, settle: Settle) -> Coordinator:
        """The round's rendezvous points: decisions go to the policy in one batch, settlements to the game."""
        index = {a: i for i, a in enumerate(observations.agents)}

        def settle_all(subs: dict[str, Submission]) -> dict[str, Settlement]:
            outcome = settle([subs[a] for a in observations.agents])
            return {a: outcome.settlement(index[a]) for a in subs}

        return Coordinator(
            len(observations),
            decide=lambda reqs: self.policy.decide_batch(reqs, mode=self.settings.decision),
            settle=settle_all,
            complete=lambda convs: self.policy.complete_batch(convs, max_new_tokens=self.reflection_tokens),
        )

    async def _run_threads(
        self, round_no: int, inputs: Mapping[str, Mapping[str, Any]], ctx: Any, *, fail: Sequence[Any]
    ) -> list[Any]:
        """Invoke every agent's thread for one round concurrently; their final states in ``inputs``' order. If one
        thread fails, every rendezvous is released (``fail``) and the others are cancelled."""
        tasks = []
        for agent, x in inputs.items():
            configurable = {"thread_id": agent}
            if agent in self._fork:
                configurable["checkpoint_id"] = self._fork.pop(agent)
            config = {"configurable": configurable, "metadata": {"atp_round": round_no}}
            tasks.append(asyncio.ensure_future(self.graph.ainvoke(x, config, context=ctx, durability="exit")))
        try:
            states = list(await asyncio.gather(*tasks))
        except BaseException as e:
            for release in fail:
                release(e)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        await self._sync()
        return states

    async def _sync(self) -> None:
        """Make this round's thread checkpoints durable before the run folder records the round as complete."""
        if self._conn is not None:
            await self._conn.execute("PRAGMA wal_checkpoint(FULL)")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any], *, completed: int) -> None:
        self._resume_from = completed


def _action(st: Mapping[str, Any]) -> Action:
    extra: dict[str, Any] = {
        "prompt_hash": st["prompt_hash"],
        "question": st["asked"],
        "lesson": st.get("lesson"),
        "proposed_choice": st.get("proposed_choice"),
        "lesson_refused": st.get("lesson_refused", False),
        "finish": st.get("finish"),
        "tokens": st.get("tokens"),
    }
    return Action(st["choice"], st["response"], st.get("p_target"), extra)
