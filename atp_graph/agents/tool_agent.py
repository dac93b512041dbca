"""The tool-calling agent: a LangGraph ``StateGraph`` whose model node calls a chat model with the scenario's tools
bound (``bind_tools``), and whose tool node runs the calls (results simulated by the scenario's templates).

``recall -> model -> (tools -> model)* -> collect -> feedback -> reflect -> remember``. The loop ends when the task
is decided (the forbidden tool or a completing tool ran), when the model answers without calling a tool, or at the
step limit (``max_steps`` model calls). Memory, evolution modes and the round loop are the individual agents' own
(:mod:`.graph`, :class:`.llm.LLMAgents`): one thread per agent, a transcript window of whole rounds (question, calls,
results, feedback), written lessons in reflection mode.

The chat model: a provider model (``openai:...``) is used as it is; a local or server model is wrapped in
:class:`PolicyChatModel`, whose calls from every agent still working are coalesced into ONE batched policy call
(:class:`Rendezvous`; score mode weighs the forbidden tool's call against the allowed one's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from ..config import AgentConfig
from ..contracts import Action, Observations, Settle
from ..games.prompts import REFLECT_PROMPT
from ..games.tools import ToolSubmission, run_call, task_finished
from ..policies.base import ModelError, messages_hash
from ..policies.chat import ChatModelPolicy, _finish
from ..policies.spec import SurrogateModel
from ..policies.tool_calls import plain_messages, tool_batch
from ..scenarios import ToolItem
from .graph import AgentContext, endorses_violation, with_lessons
from .llm import CHECKPOINTS, LLMAgents
from .memory import lesson_namespace, open_store
from .surrogate import SurrogateAgents
from .tool_model import PolicyChatModel, Rendezvous, chat_dicts, langchain_tools, trace

__all__ = [
    "PolicyChatModel",
    "Rendezvous",
    "ToolAgents",
    "build_tool_agent_graph",
    "langchain_tools",
    "make_tool_agents",
    "trace",
]


# -- the graph --------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ToolAgentContext(AgentContext):
    """The individual agents' run-wide settings plus what the tool loop needs."""

    chat: Any
    """The chat model the model node binds the tools to."""
    items: Mapping[str, ToolItem]
    """Each agent's scenario variant."""
    tools: Mapping[str, list[StructuredTool]]
    """Each agent's LangChain tools."""
    rendezvous: Rendezvous | None = None
    """The batch the wrapped model's calls wait at (``None`` for provider models)."""
    score: bool = False
    """Score mode: the model node weighs the forbidden tool's call against the allowed one's."""
    max_steps: int = 4
    """Most model calls per round."""


class ToolAgentState(TypedDict, total=False):
    """One tool agent's state for one round (inputs first)."""

    agent: str
    round: int
    seed: int
    system: str
    question: str
    rule: str
    memory: list[list[BaseMessage]]
    messages: list[BaseMessage]
    start: int
    steps: int
    response: str
    finish: str | None
    tokens: int | None
    p_target: float | None
    prompt_hash: str
    asked: str
    step_limit: bool
    reward: float
    feedback: str
    lesson: str | None
    lesson_refused: bool


def recall(state: ToolAgentState, runtime: Runtime[ToolAgentContext]) -> ToolAgentState:
    """This round's conversation: the system prompt (and recalled lessons), the remembered rounds, the task."""
    ctx = runtime.context
    system = with_lessons(state["system"], state["agent"], runtime)
    rounds = (state.get("memory") or []) if ctx.keeps_transcript else []
    question = state["question"]
    if ctx.reanchor_every and state["round"] % ctx.reanchor_every == 0:
        question = f"Reminder of the rule: {state['rule']}\n\n{question}"
    head: list[BaseMessage] = [SystemMessage(system)] if system else []
    history = [m for turn in rounds for m in turn]
    messages = [*head, *history, HumanMessage(question)]
    return {"messages": messages, "start": len(messages) - 1, "steps": 0, "asked": question, "tokens": None}


async def model(state: ToolAgentState, runtime: Runtime[ToolAgentContext]) -> ToolAgentState:
    """Call the chat model with the tools bound (batched with every other agent's call)."""
    ctx, agent, steps = runtime.context, state["agent"], state.get("steps", 0)
    kwargs: dict[str, Any] = {}
    if ctx.rendezvous is not None:
        kwargs["seed"] = state["seed"] + 7919 * steps
        if ctx.score:
            it = ctx.items[agent]
            kwargs["pair"] = (it.compliant, it.violating)
            kwargs["examples"] = {t.name: dict(t.example) for t in it.tools}
    ai = await ctx.chat.bind_tools(ctx.tools[agent], **kwargs).ainvoke(state["messages"])
    meta = ai.response_metadata or {}
    usage = (ai.usage_metadata or {}).get("output_tokens")
    tokens = meta.get("tokens", usage)
    finish = meta.get("finish") or _provider_finish(meta)
    out: ToolAgentState = {"messages": [*state["messages"], ai], "steps": steps + 1}
    if steps == 0:
        out["prompt_hash"] = messages_hash(chat_dicts(state["messages"]))  # type: ignore[arg-type]
        out["p_target"] = meta.get("p_target")
    if finish is not None and state.get("finish") != "length":
        out["finish"] = finish
    if tokens is not None:
        out["tokens"] = (state.get("tokens") or 0) + int(tokens)
    return out


def _provider_finish(meta: Mapping[str, Any]) -> str | None:
    return _finish(AIMessage("", response_metadata=dict(meta))) if meta else None


def tools(state: ToolAgentState, runtime: Runtime[ToolAgentContext]) -> ToolAgentState:
    """Run the last AI message's calls (simulated): one result per call, an error result for a call that fails."""
    item = runtime.context.items[state["agent"]]
    ai = state["messages"][-1]
    results: list[BaseMessage] = []
    for c in ai.tool_calls:  # type: ignore[attr-defined]
        text, error = run_call(item, c["name"], c.get("args") or {})
        status = "error" if error else "success"
        results.append(ToolMessage(text, tool_call_id=c.get("id") or "", name=c["name"], status=status))
    for bad in ai.invalid_tool_calls:  # type: ignore[attr-defined]
        text = f"error: the arguments of {bad.get('name')} are not valid JSON"
        results.append(ToolMessage(text, tool_call_id=bad.get("id") or "", name=str(bad.get("name")), status="error"))
    return {"messages": [*state["messages"], *results]}


def after_model(state: ToolAgentState) -> str:
    ai = state["messages"][-1]
    return "tools" if ai.tool_calls or ai.invalid_tool_calls else "collect"  # type: ignore[attr-defined]


def after_tools(state: ToolAgentState, runtime: Runtime[ToolAgentContext]) -> str:
    ctx = runtime.context
    done = task_finished(ctx.items[state["agent"]], trace(state["messages"][state["start"] :]))
    return "collect" if done or state["steps"] >= ctx.max_steps else "model"


async def collect(state: ToolAgentState, runtime: Runtime[ToolAgentContext]) -> ToolAgentState:
    """Leave the batch; the round's answer text and whether the step limit stopped it."""
    ctx = runtime.context
    if ctx.rendezvous is not None:
        await ctx.rendezvous.leave()
    turn = state["messages"][state["start"] :]
    said = [m.text for m in turn if isinstance(m, AIMessage) and m.text]
    calls = trace(turn)
    stopped = isinstance(turn[-1], ToolMessage) and not task_finished(ctx.items[state["agent"]], calls)
    return {"response": "\n\n".join(said), "step_limit": stopped}


async def feedback(state: ToolAgentState, runtime: Runtime[ToolAgentContext]) -> ToolAgentState:
    """Hand the round's calls to the game; receive the reward and the feedback text."""
    calls = tuple(trace(state["messages"][state["start"] :]))
    cut = state.get("finish") == "length" and runtime.context.on_truncated == "invalid"
    sub = ToolSubmission(None, state["response"], () if cut else calls, state["steps"], state["step_limit"])
    s = await runtime.context.coordinator.settle(state["agent"], sub)  # type: ignore[arg-type]
    return {"reward": s.reward, "feedback": s.feedback}


async def reflect(state: ToolAgentState, runtime: Runtime[ToolAgentContext]) -> ToolAgentState:
    """In reflection mode, write a short lesson about this round (batched with every other agent's)."""
    ctx = runtime.context
    if ctx.evolution != "reflection":
        return {"lesson": None, "lesson_refused": False}
    conv = plain_messages(
        [*chat_dicts(state["messages"]), {"role": "user", "content": f"{state['feedback']}\n\n{REFLECT_PROMPT}"}]
    )
    lesson = (await ctx.coordinator.reflect(state["agent"], conv)).strip()  # type: ignore[arg-type]
    if ctx.memory_hygiene and endorses_violation(lesson, ctx.items[state["agent"]].violating):
        return {"lesson": None, "lesson_refused": True}
    return {"lesson": lesson or None, "lesson_refused": False}


def remember(state: ToolAgentState, runtime: Runtime[ToolAgentContext]) -> ToolAgentState:
    """Keep the last ``history_window`` whole rounds (transcript mode), or the lesson (reflection mode)."""
    ctx = runtime.context
    if ctx.keeps_transcript:
        turn = [*state["messages"][state["start"] :], HumanMessage(state["feedback"])]
        return {"memory": [*(state.get("memory") or []), turn][-ctx.history_window :]}
    if ctx.evolution == "reflection" and state.get("lesson") and runtime.store is not None:
        value = {"round": state["round"], "text": state["lesson"]}
        runtime.store.put(lesson_namespace(state["agent"]), f"{state['round']:05d}", value)
    return {"memory": []}


def build_tool_agent_graph(*, store: BaseStore | None = None, checkpointer: Any = None):
    """Compile the tool agent graph; one compiled graph serves every agent, each agent is a thread of it."""
    g = StateGraph(ToolAgentState, context_schema=ToolAgentContext)
    for name, fn in [
        ("recall", recall),
        ("model", model),
        ("tools", tools),
        ("collect", collect),
        ("feedback", feedback),
        ("reflect", reflect),
        ("remember", remember),
    ]:
        g.add_node(name, fn)
    g.add_edge(START, "recall")
    g.add_edge("recall", "model")
    g.add_conditional_edges("model", after_model, ["tools", "collect"])
    g.add_conditional_edges("tools", after_tools, ["model", "collect"])
    for a, b in [("collect", "feedback"), ("feedback", "reflect"), ("reflect", "remember")]:
        g.add_edge(a, b)
    g.add_edge("remember", END)
    return g.compile(store=store, checkpointer=checkpointer)


# -- the population ---------------------------------------------------------------------------------------------------


class ToolAgents(LLMAgents):
    """Tool-calling agents on the tool agent graph (arguments as :class:`~.llm.LLMAgents`, plus ``max_steps``)."""

    build_graph = staticmethod(build_tool_agent_graph)

    def __init__(self, policy: Any, settings: AgentConfig, *, max_steps: int = 4, **kwargs: Any) -> None:
        super().__init__(policy, settings, **kwargs)
        self.max_steps = max_steps

    async def act(self, round_no: int, observations: Observations, settle: Settle) -> list[Action]:
        await self._open(observations.agents)
        s = self.settings
        coord = self._coordinator(observations, settle)
        obs = list(observations)
        items = {o.agent: o.item for o in obs}  # type: ignore[attr-defined]
        if isinstance(self.policy, ChatModelPolicy):
            if s.decision == "score":
                raise ModelError(f"{self.policy.name}: score mode needs a local model (smollm2, hf:<model>)")
            chat, rendezvous = self.policy.model, None
        else:
            rendezvous = Rendezvous(len(obs), lambda reqs: tool_batch(self.policy, reqs, mode=s.decision))
            chat = PolicyChatModel(rendezvous=rendezvous)
        ctx = self._context(
            ToolAgentContext,
            coord,
            chat=chat,
            items=items,
            tools={a: langchain_tools(it) for a, it in items.items()},
            rendezvous=rendezvous,
            score=s.decision == "score",
            max_steps=self.max_steps,
        )
        inputs = {
            o.agent: {
                "agent": o.agent,
                "round": o.round,
                "seed": o.seed,
                "system": o.system,
                "question": o.question,
                "rule": o.rule,
                "lesson": None,
                "finish": None,
                "p_target": None,
            }
            for o in obs
        }
        fail = [coord.fail] + ([rendezvous.fail] if rendezvous else [])
        states = await self._run_threads(round_no, inputs, ctx, fail=fail)
        return [_action(st) for st in states]


def _action(st: Mapping[str, Any]) -> Action:
    extra = {
        "prompt_hash": st.get("prompt_hash"),
        "question": st["asked"],
        "lesson": st.get("lesson"),
        "lesson_refused": st.get("lesson_refused", False),
        "finish": st.get("finish"),
        "tokens": st.get("tokens"),
    }
    return Action(None, st.get("response") or "", st.get("p_target"), extra)


def make_tool_agents(
    model: Any,
    settings: Any,
    *,
    history_window: int,
    agent_ids: Sequence[str],
    run_path: Path | None = None,
    completed: int = 0,
) -> Any:
    """The tool testbed's agents: the vectorised surrogate for ``sim``, else :class:`ToolAgents` (arguments as
    :func:`atp_graph.agents.make_agents`)."""
    if isinstance(model, SurrogateModel):
        return SurrogateAgents(model.params)
    store = (
        open_store(run_path, forget_after=completed, agents=list(agent_ids))
        if settings.evolution == "reflection"
        else None
    )
    checkpoints = run_path / CHECKPOINTS if run_path is not None else None
    return ToolAgents(
        model,
        settings,
        history_window=history_window,
        store=store,
        checkpoints=checkpoints,
        max_steps=getattr(settings, "max_steps", 4),
    )
