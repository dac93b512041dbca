"""What the tool agent graph (:mod:`.tool_agent`) talks to: LangChain tools over a scenario's simulated tools, the
message and trace conversions, and :class:`PolicyChatModel`, a LangChain chat model over a policy whose calls from
every agent still in its tool loop are coalesced into ONE batched policy call (:class:`Rendezvous`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from ..games.tools import Call, run_call
from ..policies.tool_calls import ToolReply, ToolRequest
from ..scenarios import ToolItem

__all__ = ["PolicyChatModel", "Rendezvous", "chat_dicts", "langchain_tools", "trace"]


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
