"""The one extension point for language-model decision makers: :class:`Policy`.

A policy turns a batch of chat conversations into decisions in ONE call. Implementations never loop one
``generate`` per request: the whole round goes to the model together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from ..errors import UserError


class ModelError(UserError):
    """A model spec cannot be turned into a policy (unknown form, missing file or package)."""


class Message(TypedDict):
    """One chat turn in the Hugging Face chat-template format."""

    role: Literal["system", "user", "assistant"]
    content: str


DecisionMode = Literal["generate", "score"]

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def as_chat(messages: Sequence[Any]) -> tuple[Message, ...]:
    """LangChain messages (or chat dicts) as chat-template dicts ``{"role": ..., "content": ...}``."""
    out: list[Message] = []
    for m in messages:
        if isinstance(m, dict):
            out.append(Message(role=m["role"], content=m["content"]))
        else:
            out.append(Message(role=_ROLES[m.type], content=m.content))  # type: ignore[typeddict-item]
    return tuple(out)


def messages_hash(messages: Sequence[Message]) -> str:
    """Short stable hash of a conversation, recorded in events instead of the whole prompt."""
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class DecisionRequest:
    """What one agent asks the model in one round.

    Attributes:
        messages: The full conversation; the last message is the user's question.
        options: The two option labels the answer must choose between, e.g. ``("Store A", "Store B")``.
        target: The option whose probability score mode reports (the violating or collective one).
        seed: Per-request seed; the same seed and batch give the same sampled answer.
        swapped: Optional: the same conversation with the options listed in the other order. Score mode
            averages p(target) over both orders to cancel position bias; generate mode ignores it.
        continues: The conversation comes back next round as the start of a longer one (transcript memory). A
            backend that reuses the KV of earlier calls keeps this one's even before it holds an answer; the others
            ignore it. It never changes a decision.
    """

    messages: tuple[Message, ...]
    options: tuple[str, str]
    target: str
    seed: int = 0
    swapped: tuple[Message, ...] | None = None
    continues: bool = False

    def __post_init__(self) -> None:
        if len(set(self.options)) != 2:
            raise ValueError(f"a decision needs two distinct options, got {self.options!r}")
        if self.target not in self.options:
            raise ValueError(f"target {self.target!r} is not one of the options {self.options!r}")
        if not self.messages or self.messages[-1]["role"] != "user":
            raise ValueError("a decision request must end with a user message")
        if self.swapped is not None and (not self.swapped or self.swapped[-1]["role"] != "user"):
            raise ValueError("a decision request's swapped conversation must end with a user message")


@dataclass(frozen=True)
class Decision:
    """A model's answer to one :class:`DecisionRequest`.

    Attributes:
        text: The raw text the model produced (in score mode, a synthetic JSON answer).
        choice: The parsed option, or ``None`` when the answer names no valid option (counted as invalid).
        p_target: Score mode only: the model's probability of the target option, order-counterbalanced.
    """

    text: str
    choice: str | None
    p_target: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    finish: str | None = None
    """Why generation ended: ``stop`` or ``length`` (cut off at ``max_new_tokens``); ``None`` in score mode or
    when the backend does not say."""
    tokens: int | None = None
    """Tokens generated, where the backend reports it."""


@runtime_checkable
class Policy(Protocol):
    """A language-model decision maker. One call decides a whole batch."""

    name: str
    """Human-readable model spec, written into run configs and tables."""

    def decide_batch(self, requests: Sequence[DecisionRequest], *, mode: DecisionMode = "generate") -> list[Decision]:
        """Decide every request in one batched model call (score mode: one batched forward pass)."""
        ...

    def complete_batch(self, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int = 96) -> list[str]:
        """Free-text completions for a batch of conversations (used for written reflections and data)."""
        ...
