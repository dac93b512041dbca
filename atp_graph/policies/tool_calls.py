"""Tool calling behind the policies: one round's model calls of every tool agent, in one batch.

A :class:`ToolRequest` is one agent's conversation (OpenAI-style chat dicts: ``assistant`` turns may carry
``tool_calls``, ``tool`` turns carry results) plus the tools bound to it; :func:`tool_batch` answers a whole batch:

- ``hf:``, ``smollm2`` and ``tiny:`` models (:class:`~.hf.HFPolicy`, see :mod:`.tool_scoring`): generate mode renders
  the tools through the model's chat template (``tools=``) when the template uses them (Qwen3, Llama 3.1...), and
  otherwise in the documented JSON call format (:data:`JSON_CALL_FORMAT`); score mode weighs the forbidden tool's
  call against the allowed one's.
- ``server:`` models (:class:`~.server.ServerPolicy`): the OpenAI ``tools`` field and the answer's ``tool_calls``
  (vLLM needs ``--enable-auto-tool-choice`` and a tool parser); no score mode.

Provider models (``openai:...``) need none of this: the agent binds the tools with LangChain's ``bind_tools``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import ModelError

__all__ = [
    "JSON_CALL_FORMAT",
    "ToolReply",
    "ToolRequest",
    "json_call",
    "parse_tool_calls",
    "plain_messages",
    "tool_batch",
    "tools_block",
]

JSON_CALL_FORMAT = (
    'To call a tool, answer with one JSON object per call on its own line: {"tool": "<name>", "arguments": {...}}.'
)
"""How a model whose chat template has no tool support is told to call tools (after the tool list)."""


@dataclass(frozen=True)
class ToolRequest:
    """One agent's model call: its conversation, its tools, and (score mode) the two candidate calls."""

    messages: tuple[dict[str, Any], ...]
    """OpenAI-style chat dicts (``tool_calls[i].function.arguments`` as a mapping)."""
    tools: tuple[dict[str, Any], ...]
    """The bound tools in the OpenAI function format, in the order shown."""
    seed: int = 0
    """Sampling seed (generate), or the seed of the drawn call (score)."""
    pair: tuple[str, str] | None = None
    """Score mode: (allowed tool, forbidden tool); p(forbidden) is averaged over both orders of the two in the list."""
    examples: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Score mode: each candidate's call arguments."""


@dataclass(frozen=True)
class ToolReply:
    """A model's answer to one :class:`ToolRequest`."""

    text: str
    """What the model wrote (generate mode: the raw answer, calls included)."""
    calls: tuple[tuple[str, Any], ...]
    """``(tool name, arguments)`` per call; arguments that were not a JSON object are kept as they came."""
    finish: str | None = None
    tokens: int | None = None
    p_target: float | None = None
    """Score mode: p(forbidden tool's call), order-counterbalanced."""


def tool_batch(policy: Any, requests: Sequence[ToolRequest], *, mode: str = "generate") -> list[ToolReply]:
    """Answer every request in one batched call of ``policy`` (see the module docstring)."""
    from .hf import HFPolicy
    from .server import ServerPolicy

    if isinstance(policy, HFPolicy):
        from .tool_scoring import hf_tool_generate, hf_tool_score

        return hf_tool_score(policy, requests) if mode == "score" else hf_tool_generate(policy, requests)
    if isinstance(policy, ServerPolicy):
        if mode == "score":
            raise ModelError(f"{policy.name}: score mode over tool calls needs a local model (smollm2, hf:<model>)")
        return _server_generate(policy, requests)
    raise ModelError(f"{getattr(policy, 'name', policy)!r} cannot call tools: use hf:, smollm2, server: or a provider")


# -- formats ---------------------------------------------------------------------------------------------------------


def json_call(name: str, arguments: Any) -> str:
    """One call in the documented JSON call format."""
    return json.dumps({"tool": name, "arguments": arguments}, ensure_ascii=False)


def tools_block(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tool list as text, for chat templates without tool support: one line per tool, then the call format."""
    lines = ["You can call these tools:"]
    for t in tools:
        f = t["function"]
        lines.append(
            f"- {f['name']}: {f.get('description', '')} Arguments (JSON schema): {json.dumps(f['parameters'])}"
        )
    return "\n".join([*lines, JSON_CALL_FORMAT])


def plain_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()) -> list[dict]:
    """``role``/``content`` messages for a model without tool support: calls written in :data:`JSON_CALL_FORMAT`,
    results as user turns, and the tool list (:func:`tools_block`) after the last user turn, so that the
    conversation before it, which the next round repeats, never changes (its KV is reused) and the two tool orders
    of score mode differ only at the end."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant":
            lines = [m.get("content") or ""]
            lines += [json_call(c["function"]["name"], c["function"]["arguments"]) for c in m.get("tool_calls") or ()]
            out.append({"role": "assistant", "content": "\n".join(x for x in lines if x)})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"Result of {m.get('name', 'the tool')}: {m['content']}"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    if tools:
        last = max((i for i, m in enumerate(out) if m["role"] == "user"), default=None)
        block = tools_block(tools)
        if last is None:
            out.append({"role": "user", "content": block})
        else:
            out[last] = {"role": "user", "content": f"{out[last]['content']}\n\n{block}"}
    return out


_THINKING = re.compile(r"<think(?:ing)?>.*?(?:</think(?:ing)?>|$)", re.DOTALL | re.IGNORECASE)
_DECODER = json.JSONDecoder()


def parse_tool_calls(text: str) -> list[tuple[str, Any]]:
    """The tool calls written in ``text``, outside thinking, in order: JSON objects of the form
    ``{"tool": name, "arguments": {...}}`` (:data:`JSON_CALL_FORMAT`), ``{"name": name, "arguments": {...}}``
    (Hermes/Qwen ``<tool_call>``) or ``{"name": name, "parameters": {...}}`` (Llama 3.1). Arguments given as a JSON
    string are decoded."""
    text = _THINKING.sub("", text)
    calls: list[tuple[str, Any]] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        call = _as_call(obj)
        if call is not None:
            calls.append(call)
            i = text.find("{", end)
        else:
            i = text.find("{", i + 1)
    return calls


def _as_call(obj: Any) -> tuple[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    name = obj.get("tool", obj.get("name"))
    if not isinstance(name, str) or not ({"arguments", "parameters"} & obj.keys()):
        return None
    args = obj.get("arguments", obj.get("parameters"))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    return name, args


# -- server ----------------------------------------------------------------------------------------------------------


def _openai_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The chat dicts as the OpenAI API takes them (call arguments as JSON strings)."""
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [
                {**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                for c in m["tool_calls"]
            ]
        out.append(m)
    return out


def _server_generate(policy: Any, requests: Sequence[ToolRequest]) -> list[ToolReply]:
    bodies = []
    for r in requests:
        body = policy._chat(r.messages, policy.max_new_tokens, r.seed)
        bodies.append({**body, "messages": _openai_messages(r.messages), "tools": list(r.tools)})
    replies = []
    for answer in policy._post_all("/chat/completions", bodies):
        text, finish, tokens = policy._reply(answer)
        message = answer["choices"][0]["message"]
        calls = []
        for c in message.get("tool_calls") or ():
            f = c.get("function") or {}
            calls.append(_as_call({"name": f.get("name"), "arguments": f.get("arguments") or "{}"}))
        found = tuple(c for c in calls if c is not None) or tuple(parse_tool_calls(text))
        replies.append(ToolReply(text, found, finish, tokens))
    return replies
