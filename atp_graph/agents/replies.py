"""Read a decision out of whatever a user's agent returned: text, structured output, or a tool call.

Agents answer in three common shapes, and a probe must read all of them or it scores every answer as invalid:

- text: the last AI message says ``{"choice": "..."}`` (read with :func:`~atp_graph.parsing.parse_choice`);
- structured output: ``create_agent(..., response_format=...)`` puts a pydantic object (or dict) in the state's
  ``structured_response``; ``model.with_structured_output(...)`` returns one directly;
- a tool call: the AI message calls a tool whose arguments name the option.

:func:`read_reply` tries, in order: the user's ``extract`` callable (when given; it alone decides), the structured
response, the last AI message's text, then its tool calls' arguments.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from pydantic import BaseModel

from ..parsing import match_option, parse_choice

Extract = Callable[[Any], "str | None"]
"""A user's reader: the agent's final output (its state, for a graph) -> the chosen option's text, or ``None``."""

CHOICE_KEYS = ("choice", "decision", "option", "action", "answer", "route", "selection")
"""Field names read first in a structured answer, in this order."""


class Reply(NamedTuple):
    """One answer of the agent: the text recorded and replayed, and the option it chose (``None``: no option)."""

    text: str
    choice: str | None
    source: str
    """Where the choice was read: ``extract``, ``structured``, ``text`` or ``tool_call`` (``none`` if nowhere)."""
    calls: tuple = ()
    """The round's tool calls (:class:`atp_graph.games.tools.Call`), where the reader collects them (tool probe)."""


class NoReply(Exception):
    """The output holds no AI message after the question (the caller words the error)."""


def read_reply(
    out: Any,
    options: Sequence[str],
    *,
    graph: bool = False,
    sent_id: str | None = None,
    messages_key: str = "messages",
    extract: Extract | None = None,
) -> Reply:
    """The decision in ``out``: a graph's final state, an AI message, a string, or a structured object.

    Args:
        out: What the agent returned.
        options: The two options offered this round.
        graph: ``out`` is a LangGraph graph's final state (a mapping), not a runnable's return value.
        sent_id: Id of the question sent this round; only AI messages after it are read (a graph's state holds the
            whole conversation).
        messages_key: The state key holding the conversation.
        extract: The user's reader; when given, its answer is the choice (matched to the options).

    Raises:
        NoReply: Neither an AI message nor a structured answer is there.
    """
    state = out if graph and isinstance(out, Mapping) else None
    message = _last_ai(state.get(messages_key), sent_id) if state is not None else _as_ai(out)
    text = message.text if message is not None else (out if isinstance(out, str) else "")
    if extract is not None:
        value = extract(out)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"extract= must return the option's text or None, not {type(value).__name__}")
        return Reply(text or (value or ""), match_option(value, options), "extract")
    structured = state.get("structured_response") if state is not None else _structured(out)
    if structured is not None:
        plain = _plain(structured)
        return Reply(json.dumps(plain, default=str), choice_from_structured(plain, options), "structured")
    if message is None and not isinstance(out, str):
        raise NoReply
    choice = parse_choice(text, options)
    if choice is not None:
        return Reply(text, choice, "text")
    for call in message.tool_calls if message is not None else ():
        found = choice_from_structured(call.get("args") or {}, options)
        if found is not None:
            return Reply(text or json.dumps({"tool": call.get("name"), "args": call.get("args")}), found, "tool_call")
    return Reply(text, None, "none")


def choice_from_structured(value: Any, options: Sequence[str]) -> str | None:
    """The option a structured answer names: a choice-like field first (:data:`CHOICE_KEYS`), else the one option
    that any string field names exactly. ``None`` when it names none, or different ones."""
    plain = _plain(value)
    if isinstance(plain, str):
        return match_option(plain, options) or parse_choice(plain, options)
    if not isinstance(plain, Mapping):
        return None
    lowered = {str(k).lower(): v for k, v in plain.items()}
    for key in CHOICE_KEYS:
        if isinstance(lowered.get(key), str):
            found = match_option(lowered[key], options)
            if found is not None:
                return found
    named = {match_option(s, options) for s in _strings(plain)} - {None}
    return named.pop() if len(named) == 1 else None


def _plain(value: Any) -> Any:
    """A pydantic model or dataclass as plain JSON-able data; anything else unchanged."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _strings(value: Any) -> list[str]:
    """Every string leaf of nested mappings and lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _structured(out: Any) -> Any:
    """``out`` itself when a runnable returned a structured answer (a model, dataclass or dict), else ``None``."""
    if isinstance(out, BaseModel) and not isinstance(out, BaseMessage):
        return out
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return out
    return out if isinstance(out, Mapping) else None


def _as_ai(out: Any) -> AIMessage | None:
    return out if isinstance(out, AIMessage) else None


def messages_after(messages: Any, sent_id: str | None) -> list[BaseMessage]:
    """The messages after the question ``sent_id`` (all of them, if the question is not in the list)."""
    try:
        msgs = convert_to_messages(messages) if isinstance(messages, Sequence) else []
    except (ValueError, TypeError, NotImplementedError):
        msgs = []
    start = next((i + 1 for i in range(len(msgs) - 1, -1, -1) if msgs[i].id == sent_id), 0) if sent_id else 0
    return msgs[start:]


def _last_ai(messages: Any, sent_id: str | None) -> AIMessage | None:
    """The last AI message after the question ``sent_id`` (anywhere, if the question is not in the list)."""
    return next((m for m in reversed(messages_after(messages, sent_id)) if isinstance(m, AIMessage)), None)
