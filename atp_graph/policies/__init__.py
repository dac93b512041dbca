"""Language-model decision makers behind one protocol, :class:`Policy`.

- :class:`HFPolicy`: a local Hugging Face chat model (SmolLM2, ``hf:<model>``, peft adapters), batched.
- :class:`ChatModelPolicy`: any LangChain chat model (``<provider>:<model>``), generate mode only.
- :class:`ServerPolicy`: a model behind an OpenAI-compatible server (``server:<base url>#<model>``: vLLM, SGLang, TGI,
  llama.cpp, ``transformers serve``), concurrent requests with retries.
- :func:`load_policy`: build either from a spec string; :func:`load_model`: the same, or the surrogate for ``sim``;
  :func:`build_tiny_model`: a tiny random test model.

The torch-backed classes are imported on first use, so ``import atp_graph.policies`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .base import Decision, DecisionMode, DecisionRequest, Message, Policy
from .spec import SURROGATE_LABEL, ModelError, SurrogateModel, SurrogateParams, is_surrogate, load_model, load_policy

if TYPE_CHECKING:
    from .chat import ChatModelPolicy
    from .hf import HFPolicy
    from .server import ServerPolicy
    from .tiny import build_tiny_model

__all__ = [
    "ChatModelPolicy",
    "Decision",
    "DecisionMode",
    "DecisionRequest",
    "HFPolicy",
    "Message",
    "ModelError",
    "Policy",
    "SURROGATE_LABEL",
    "ServerPolicy",
    "SurrogateModel",
    "SurrogateParams",
    "build_tiny_model",
    "is_surrogate",
    "load_model",
    "load_policy",
]

_LAZY = {"HFPolicy": ".hf", "ChatModelPolicy": ".chat", "ServerPolicy": ".server", "build_tiny_model": ".tiny"}


def __getattr__(name: str) -> Any:
    """Import the torch/LangChain-backed names on first access."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
