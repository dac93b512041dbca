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

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from pydantic import ConfigDict

from ..config import AgentConfig
from ..contracts import Action, Observations, Settle
from ..games.prompts import REFLECT_PROMPT
from ..games.tools import Call, ToolSubmission, run_call, task_finished
from ..policies.base import ModelError, messages_hash
from ..policies.chat import ChatModelPolicy, _finish
from ..policies.spec import SurrogateModel
from ..policies.tool_calls import ToolReply, ToolRequest, plain_messages, tool_batch
from ..scenarios import ToolItem
from .coordinator import Coordinator
from .graph import endorses_violation
from .llm import CHECKPOINTS, LLMAgents
from .memory import lesson_namespace, open_store
from .surrogate import SurrogateAgents

__all__ = [
    "PolicyChatModel",
    "Rendezvous",
    "ToolAgents",
    "build_tool_agent_graph",
    "langchain_tools",
    "make_tool_agents",
    "trace",
]


# -- tools, messages and traces --------------------------------------------------------------------------------------


def langchain_tools(item: ToolItem | Callable[[Any], ToolItem]) -> list[StructuredTool]:
    """The item's tools as LangChain tools (JSON-schema arguments, simulated results; a call that does not run
    raises :class:`ToolException`, which LangGraph's tool nodes return as an error result).

    ``item`` may be a function of the call's RunnableConfig, for tools shared by several threads (the probe)."""

    def make(name: str, description: str, parameters: Mapping[str, Any]) -> StructuredTool:
        def run(config: RunnableConfig, **arguments: Any) -> str:
            it = item(config) if callable(item) else item
            text, error = run_call(it, name, arguments)
            if error is not None:
                raise ToolException(text)
            return text

        return StructuredTool(
            name=name, description=description, args_schema=dict(parameters), func=run, handle_tool_error=True
        )

    first = item if isinstance(item, ToolItem) else item(None)
    return [make(t.name, t.description, t.parameters) for t in first.tools]


def trace(messages: Sequence[BaseMessage]) -> list[Call]:
    """The calls in a round's messages, in order: each AI tool call with the error its result reported (a tool
    message with ``status="error"``; a call without a result did not run); unparseable calls are errors too."""
    results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    calls: list[Call] = []
    for m in messages:
        if not isinstance(m, AIMessage):
            continue
        for c in m.tool_calls:
            result = results.get(c.get("id") or "")
            error = "no result" if result is None else (result.text if result.status == "error" else None)
            calls.append(Call(c["name"], dict(c.get("args") or {}), error))
        for bad in m.invalid_tool_calls:
            calls.append(Call(str(bad.get("name") or ""), {}, f"unparseable arguments: {bad.get('error') or ''}"))
    return calls


def chat_dicts(messages: Sequence[BaseMessage]) -> tuple[dict[str, Any], ...]:
    """LangChain messages as OpenAI-style chat dicts (calls with mapping arguments, results as ``tool`` turns)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": m.text})
        elif isinstance(m, HumanMessage):
            out.append({"role": "user", "content": m.text})
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "content": m.text, "tool_call_id": m.tool_call_id, "name": m.name or ""})
        elif isinstance(m, AIMessage):
            d: dict[str, Any] = {"role": "assistant", "content": m.text}
            if m.tool_calls:
                d["tool_calls"] = [
                    {"id": c.get("id"), "type": "function", "function": {"name": c["name"], "arguments": c["args"]}}
                    for c in m.tool_calls
                ]
            out.append(d)
    return tuple(out)


# -- the chat model over a policy ------------------------------------------------------------------------------------


class Rendezvous:
    """Coalesce the model calls of every agent still in its tool loop into one batched call of ``fn``.

    Each agent either waits here or has left the loop (:meth:`leave`); once every agent still in the loop is
    waiting, ``fn`` runs once on all their requests (in a worker thread)."""

    def __init__(self, active: int, fn: Callable[[list[Any]], list[Any]]) -> None:
        self.active, self.fn = active, fn
        self.items: list[Any] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def submit(self, item: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.items.append(item)
        self.futures.append(fut)
        await self._flush()
        return await fut

    async def leave(self) -> None:
        self.active -= 1
        await self._flush()

    async def _flush(self) -> None:
        if not self.items or len(self.items) < self.active:
            return
        items, futures = self.items, self.futures
        self.items, self.futures = [], []
        try:
            results = await asyncio.to_thread(self.fn, items)
            for f, r in zip(futures, results, strict=True):
                f.set_result(r)
        except BaseException as e:  # every waiting agent gets the failure
            for f in futures:
                if not f.done():
                    f.set_exception(e)

    def fail(self, exc: BaseException) -> None:
        for f in self.futures:
            if not f.done():
                f.set_exception(exc)


class PolicyChatModel(BaseChatModel):
    """A LangChain chat model over a policy's batched tool calls (local or server models).

    ``bind_tools`` binds the tools in the OpenAI format; the keyword arguments ``seed``, ``pair`` and ``examples``
    (bound per call) carry the sampling seed and, in score mode, the two candidate calls."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    rendezvous: Any
    """Where every agent's call of the round waits for the batch (a :class:`Rendezvous`)."""

    @property
    def _llm_type(self) -> str:
        return "atp-policy"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        raise NotImplementedError("PolicyChatModel batches concurrent calls: use ainvoke")

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        request = ToolRequest(
            messages=chat_dicts(messages),
            tools=tuple(kw.get("tools") or ()),
            seed=int(kw.get("seed") or 0),
            pair=kw.get("pair"),
            examples=kw.get("examples") or {},
        )
        reply: ToolReply = await self.rendezvous.submit(request)
        calls, bad = [], []
        for k, (name, args) in enumerate(reply.calls):
            if isinstance(args, dict):
                calls.append({"name": name, "args": args, "id": f"call_{k}", "type": "tool_call"})
            else:
                error = "the arguments are not a JSON object"
                raw = json.dumps(args) if not isinstance(args, str) else args
                bad.append({"name": name, "args": raw, "id": f"call_{k}", "error": error, "type": "invalid_tool_call"})
        meta = {"finish": reply.finish, "tokens": reply.tokens, "p_target": reply.p_target}
        message = AIMessage(reply.text, tool_calls=calls, invalid_tool_calls=bad, response_metadata=meta)
        return ChatResult(generations=[ChatGeneration(message=message)])


# -- the graph --------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ToolAgentContext:
    """Run-wide settings every tool agent graph reads through ``runtime.context``."""

    coordinator: Coordinator
    """Settles the round and batches reflections."""
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
    evolution: str = "transcript"
    history_window: int = 5
    lessons: int = 3
    memory_hygiene: bool = False
    reanchor_every: int = 0
    on_truncated: str = "parse"


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
    system = state["system"]
    if ctx.evolution == "reflection" and runtime.store is not None:
        found = runtime.store.search(lesson_namespace(state["agent"]), limit=1000)
        recent = sorted(found, key=lambda it: it.value["round"])[-ctx.lessons :]
        if recent:
            system += "\n\nLessons you wrote after earlier rounds:\n" + "\n".join(
                f"- {it.value['text']}" for it in recent
            )
    rounds = (state.get("memory") or []) if ctx.evolution == "transcript" and ctx.history_window > 0 else []
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
    if ctx.evolution == "transcript" and ctx.history_window > 0:
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
        ctx = ToolAgentContext(
            coordinator=coord,
            chat=chat,
            items=items,
            tools={a: langchain_tools(it) for a, it in items.items()},
            rendezvous=rendezvous,
            score=s.decision == "score",
            max_steps=self.max_steps,
            evolution=s.evolution,
            history_window=self.history_window,
            memory_hygiene=s.memory_hygiene,
            reanchor_every=s.reanchor_every,
            on_truncated=s.on_truncated,
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
