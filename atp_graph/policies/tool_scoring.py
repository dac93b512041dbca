"""Tool calls on a local Hugging Face model (:class:`~.hf.HFPolicy`): generate and score mode.

Rendering: a chat template that uses ``tools=`` (Qwen3, Llama 3.1, Hermes-style templates) gets the tools and the
conversation's calls natively; a template without tool support (SmolLM2, the tiny test model) gets the tool list
after the last user turn and calls in :data:`~.tool_calls.JSON_CALL_FORMAT`, with results as user turns
(:func:`~.tool_calls.plain_messages`). :func:`native_tools` tells which by rendering with and without a tool.

Generate mode: one batched generation (prefix reuse and continuous batching as in :class:`~.hf.HFPolicy`), then the
calls are read from the text (:func:`~.tool_calls.parse_tool_calls`).

Score mode: p(forbidden) = softmax over the log-likelihoods of the two candidate calls, the allowed tool's and the
forbidden tool's (each with the scenario's ``example`` arguments), written as the model writes calls: through its chat
template (the text it renders after the assistant turn opens) where the template supports tools, else in the JSON
call format. Both orders of the two tools in the tool list are scored in one packed pass
(:meth:`~.hf.HFPolicy.option_logprobs`) and averaged, so the tool listed first gains nothing; the round's call is
drawn from p with the request's seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .hf import HFPolicy
from .kvcache import release_freed_memory
from .scoring import score_choice
from .tool_calls import ToolReply, ToolRequest, json_call, parse_tool_calls, plain_messages

__all__ = ["candidate_tokens", "hf_tool_generate", "hf_tool_score", "native_tools"]

_PROBE_TOOL = {"type": "function", "function": {"name": "probe_tool", "description": "x", "parameters": {}}}


def native_tools(policy: HFPolicy) -> bool:
    """Whether the model's chat template renders tools (rendering a conversation with one tool changes it)."""
    known = getattr(policy, "_atp_native_tools", None)
    if known is None:
        msgs = [{"role": "user", "content": "hello"}]
        try:
            plain = policy.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            tooled = policy.tokenizer.apply_chat_template(
                msgs, tools=[_PROBE_TOOL], tokenize=False, add_generation_prompt=True
            )
            known = plain != tooled
        except Exception:  # a template that fails on tools does not support them
            known = False
        policy._atp_native_tools = known  # type: ignore[attr-defined]
    return known


def _prompt(policy: HFPolicy, r: ToolRequest, tools: Sequence[Mapping[str, Any]], *, cut: bool) -> Any:
    """Token ids of the conversation with the assistant turn opened (``cut``: and its message ends, for reuse)."""
    if native_tools(policy):
        msgs, kw = list(r.messages), {"tools": list(tools), "enable_thinking": False}
    else:
        msgs, kw = plain_messages(r.messages, tools), {"enable_thinking": False}
    return policy._render_cut(msgs, **kw) if cut else policy._render(msgs, **kw)


def hf_tool_generate(policy: HFPolicy, requests: Sequence[ToolRequest]) -> list[ToolReply]:
    """Generate every request's answer in one batched call; read its tool calls."""
    rendered = [_prompt(policy, r, r.tools, cut=True) for r in requests]
    outs = policy._generate(
        [p for p, _ in rendered], [r.seed for r in requests], policy.max_new_tokens, [b for _, b in rendered]
    )
    release_freed_memory(policy.device)
    return [ToolReply(o.text, tuple(parse_tool_calls(o.text)), o.finish, o.tokens) for o in outs]


def candidate_tokens(policy: HFPolicy, r: ToolRequest, name: str) -> list[int]:
    """Token ids of the call of tool ``name`` (with its example arguments) as the model would write it after the
    assistant turn opens."""
    args = dict(r.examples.get(name) or {})
    text = None
    if native_tools(policy):
        call = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}],
        }
        kw = {"tools": list(r.tools), "tokenize": False, "enable_thinking": False}
        try:
            opened = policy.tokenizer.apply_chat_template(list(r.messages), add_generation_prompt=True, **kw)
            full = policy.tokenizer.apply_chat_template([*r.messages, call], **kw)
            text = full[len(opened) :] if full.startswith(opened) else None
        except Exception:  # a template that cannot render a call: the JSON call format below
            text = None
    if not text:
        text = json_call(name, args)
    return list(policy.tokenizer(text, add_special_tokens=False)["input_ids"])


def _swapped(tools: Sequence[Mapping[str, Any]], pair: tuple[str, str]) -> list[Mapping[str, Any]]:
    """The tool list with the two candidates' positions exchanged."""
    names = [t["function"]["name"] for t in tools]
    i, j = names.index(pair[0]), names.index(pair[1])
    out = list(tools)
    out[i], out[j] = out[j], out[i]
    return out


def hf_tool_score(policy: HFPolicy, requests: Sequence[ToolRequest]) -> list[ToolReply]:
    """p(forbidden) for every request in one packed forward pass per group; the call drawn from it."""
    prefixes, bounds, conts = [], [], []
    for r in requests:
        if r.pair is None:
            raise ValueError("score mode needs the request's candidate pair")
        first, cut = _prompt(policy, r, r.tools, cut=True)
        prefixes.append([first, _prompt(policy, r, _swapped(r.tools, r.pair), cut=False)])
        bounds.append(cut)
        conts.append((candidate_tokens(policy, r, r.pair[0]), candidate_tokens(policy, r, r.pair[1])))
    pairs = [r.pair for r in requests]
    logps = policy.option_logprobs(prefixes, pairs, bounds, continuations=conts)  # type: ignore[arg-type]
    release_freed_memory(policy.device)
    out = []
    for r, lp in zip(requests, logps, strict=True):
        allowed, forbidden = r.pair  # type: ignore[misc]
        choice, p, _ = score_choice((allowed, forbidden), forbidden, r.seed, lp)
        args = dict(r.examples.get(choice) or {})
        out.append(ToolReply(json_call(choice, args), ((choice, args),), p_target=p))
    return out
