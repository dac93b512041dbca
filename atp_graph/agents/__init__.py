"""Populations behind the :class:`~atp_graph.contracts.Agents` contract: LLM agents on the LangGraph agent graph,
the surrogate, and a user's own runnable (the probe target)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from langgraph.store.base import BaseStore

from ..config import AgentConfig
from ..contracts import Agents
from ..policies.base import Policy, messages_hash
from ..policies.spec import SurrogateModel
from .graph import AgentContext, AgentState, build_agent_graph
from .llm import CHECKPOINTS, LLMAgents
from .memory import open_store
from .runnable import ProbeError, RunnableAgents
from .surrogate import SurrogateAgents

__all__ = [
    "CHECKPOINTS",
    "AgentContext",
    "AgentState",
    "LLMAgents",
    "ProbeError",
    "RunnableAgents",
    "SurrogateAgents",
    "build_agent_graph",
    "make_agents",
    "messages_hash",
]


def make_agents(
    model: Policy | SurrogateModel,
    settings: AgentConfig,
    *,
    history_window: int,
    agent_ids: Sequence[str],
    run_path: Path | None = None,
    completed: int = 0,
) -> Agents:
    """The agents a model asks for: vectorised surrogate agents, or LLM agents on the agent graph.

    Args:
        model: A language-model policy, or the surrogate.
        settings: Evolution, decision and runtime-defense settings.
        history_window: Transcript rounds shown (resolved).
        agent_ids: Every agent of the run (reflection lessons written after ``completed`` are forgotten on resume).
        run_path: The run folder: LLM agents keep their threads in ``agents.sqlite`` and lessons in
            ``memory.sqlite`` there; ``None`` keeps both in memory.
        completed: Rounds already played (resume).
    """
    if isinstance(model, SurrogateModel):
        return SurrogateAgents(model.params)
    store: BaseStore | None = None
    if settings.evolution == "reflection":
        store = open_store(run_path, forget_after=completed, agents=list(agent_ids))
    checkpoints = run_path / CHECKPOINTS if run_path is not None else None
    return LLMAgents(model, settings, history_window=history_window, store=store, checkpoints=checkpoints)
