"""A :class:`~atp_graph.policies.base.Policy` over any LangChain chat model (API providers included).

``ChatModelPolicy.from_spec("openai:gpt-4o-mini")`` builds the model with LangChain's ``init_chat_model``
(the provider's package, e.g. ``langchain-openai``, must be installed). Requests go out together through
``model.batch`` (concurrent calls), which is how remote APIs batch. Score mode needs token log-likelihoods,
which chat APIs do not give, so it is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..parsing import parse_choice
from .base import Decision, DecisionMode, DecisionRequest, Message, ModelError

__all__ = ["ChatModelPolicy"]


class ChatModelPolicy:
    """Decide a batch of requests with a LangChain ``BaseChatModel``.

    Args:
        model: Any LangChain chat model (``BaseChatModel``), e.g. ``ChatOpenAI(model="gpt-4o-mini")``.
        name: The model spec written into run configs, e.g. ``"openai:gpt-4o-mini"``.
        max_concurrency: Most requests in flight at once; ``None`` lets LangChain decide.
    """

    def __init__(self, model: Any, *, name: str, max_concurrency: int | None = None) -> None:
        self.model, self.name, self.max_concurrency = model, name, max_concurrency

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        do_sample: bool | None = None,
        batch_size: int | None = None,
        **unsupported: Any,
    ) -> ChatModelPolicy:
        """Build the policy from ``<provider>:<model>`` with LangChain's ``init_chat_model``.

        Args:
            spec: ``<provider>:<model>``, e.g. ``openai:gpt-4o-mini`` or ``anthropic:claude-sonnet-4-5``.
            max_new_tokens: Passed as the provider's ``max_tokens``.
            temperature: Sampling temperature; ``do_sample=False`` without a temperature means 0.
            top_p: Nucleus sampling mass.
            do_sample: ``False`` asks for temperature 0 when no temperature is given.
            batch_size: Used as ``max_concurrency`` (requests in flight at once).
            **unsupported: Other local-model knobs; ``None``/``False`` values are ignored, others refused.

        Raises:
            ModelError: For an unknown provider, a missing provider package, or an unsupported knob.
        """
        refused = sorted(k for k, v in unsupported.items() if v not in (None, False))
        if refused:
            raise ModelError(f"{spec}: {', '.join(refused)} not supported for LangChain chat models")
        provider, _, model_name = spec.partition(":")
        if do_sample is False and temperature is None:
            temperature = 0.0
        knobs = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        kwargs = {k: v for k, v in knobs.items() if v is not None}
        try:
            from langchain.chat_models import init_chat_model
        except ImportError as err:
            raise ModelError(f"{spec}: LangChain chat models need `pip install langchain` ({err})") from err
        try:
            model = init_chat_model(model_name, model_provider=provider, **kwargs)
        except ImportError as err:
            raise ModelError(f"{spec}: provider package missing: {err}") from err
        except ValueError as err:
            raise ModelError(f"{spec}: {' '.join(str(err).split())}") from err
        return cls(model, name=spec, max_concurrency=batch_size)

    def decide_batch(self, requests: Sequence[DecisionRequest], *, mode: DecisionMode = "generate") -> list[Decision]:
        """Ask the model every request concurrently; score mode is refused (chat APIs give no likelihoods)."""
        if mode == "score":
            raise ModelError(
                f"{self.name}: score mode needs token log-likelihoods, which LangChain chat models do not "
                "provide; use generate mode, or a local model (smollm2, hf:<model>)"
            )
        if mode != "generate":
            raise ValueError(f"unknown decision mode {mode!r}; use 'generate' or 'score'")
        replies = self._replies([r.messages for r in requests], None)
        return [
            Decision(text=_text(m), choice=parse_choice(_text(m), r.options), finish=_finish(m), tokens=_tokens(m))
            for m, r in zip(replies, requests, strict=True)
        ]

    def complete_batch(self, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int = 96) -> list[str]:
        """Free-text completions, concurrently; ``max_new_tokens`` goes out as ``max_tokens`` where supported."""
        return [_text(m) for m in self._replies(conversations, max_new_tokens)]

    def _replies(self, conversations: Sequence[Sequence[Message]], max_tokens: int | None) -> list[Any]:
        """Run ``model.batch`` over the conversations and return the replies."""
        model = self.model
        if max_tokens is not None and hasattr(model, "max_tokens"):
            model = model.bind(max_tokens=max_tokens)
        config = {"max_concurrency": self.max_concurrency} if self.max_concurrency else None
        return model.batch([[dict(m) for m in conv] for conv in conversations], config=config)


_LENGTH = {"length", "max_tokens", "max_output_tokens", "model_length"}
"""Finish reasons providers give for an answer cut off at the token limit (OpenAI, Anthropic, Google, vLLM)."""


def _finish(reply: Any) -> str | None:
    """``length`` when the provider says the answer hit the token limit, ``stop`` when it says it ended, else None."""
    meta = getattr(reply, "response_metadata", None) or {}
    reason = meta.get("finish_reason") or meta.get("stop_reason")
    if reason is None:
        return None
    return "length" if str(reason).rsplit(".", 1)[-1].lower() in _LENGTH else "stop"


def _tokens(reply: Any) -> int | None:
    usage = getattr(reply, "usage_metadata", None) or {}
    return usage.get("output_tokens")


def _text(reply: Any) -> str:
    """The text of a chat reply (an ``AIMessage``; content may be a string or a list of blocks)."""
    text = getattr(reply, "text", None)
    if isinstance(text, str):
        return text
    if callable(text):
        return str(text())
    return str(getattr(reply, "content", reply))
