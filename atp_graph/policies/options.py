"""How a language model is loaded and run: the one list of model options behind every command's ``--device``,
``--kv-budget``... flags, a sweep spec's ``model_options`` and the Python API (none of them is part of a run's
config: they change how fast a run goes, never what it measures)."""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .kvcache import parse_bytes


class ModelOptions(BaseModel):
    """How a language model is loaded and sampled. Ignored by the surrogate; ``None`` keeps the model's default."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    device: str = "auto"
    """auto, cpu, cuda, cuda:1, mps... (on Ray, cuda is the GPU the task was given)."""
    dtype: str = "auto"
    """auto, float32, bfloat16, float16."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Tokens per answer. Default: the study's 32768 individual / 3276 collective for hf: and provider models, 256 /
    160 for the embedded smollm2 and tiny models. A cut-off answer is recorded as truncated."""
    temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Sampling temperature. Default: the model's own."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    """Nucleus sampling mass. Default: the model's own."""
    batch_size: int | None = Field(default=None, ge=1)
    """Local models: most sequences per forward pass (default 32); server: and provider models: requests in flight
    at once (default 64)."""
    kv_budget: str | None = None
    """Local models: most memory of KV cache held at once, stored prefixes and the running batch together, e.g.
    2GiB, 512MB, 0 (no reuse). Default: a quarter of the free RAM, or half the free GPU memory."""
    prefix_cache: bool = True
    """Local models: reuse the KV cache of the conversation a new prompt starts with (results are identical
    either way; off only to measure it)."""
    continuous: bool | None = None
    """Local models: continuous batching (finished answers leave the batch at once). Default: on for answer
    budgets over 128 tokens."""
    compile: bool = False
    """Local models: static KV cache and compiled decoding (GPU)."""
    trust_remote_code: bool = False
    """Allow model folders to run their own code (off: model folders are untrusted)."""

    @field_validator("kv_budget")
    @classmethod
    def _readable_size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_bytes(value)  # ValueError -> a one-line validation error naming kv_budget
        return value

    def sampling(self, budget: int) -> dict[str, Any]:
        """The knobs :func:`~atp_graph.policies.load_policy` takes, with ``budget`` answer tokens; a knob left at
        its default is not passed (so a backend that lacks it is not refused for it)."""
        knobs: dict[str, Any] = {
            "max_new_tokens": budget,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "batch_size": self.batch_size,
            "kv_budget": self.kv_budget,
            "continuous": self.continuous,
            "prefix_cache": None if self.prefix_cache else False,
            "compile": self.compile or None,
        }
        return {k: v for k, v in knobs.items() if v is not None}


ANSWER_KNOBS = ("max_new_tokens", "temperature", "top_p", "top_k", "do_sample")
"""The knobs of a loaded model that change what it answers (the others only change how fast it does)."""


def answer_knobs(model: Any) -> dict[str, Any]:
    """The :data:`ANSWER_KNOBS` a loaded model has, as JSON would read them back: a run records them in its
    ``config.json`` and a resume must load the model with the same ones. Greedy decoding (``do_sample`` false)
    ignores temperature, top-p and top-k, so they are left out then."""
    knobs = {k: getattr(model, k) for k in ANSWER_KNOBS if getattr(model, k, None) is not None}
    if knobs.get("do_sample") is False:
        knobs = {k: v for k, v in knobs.items() if k not in ("temperature", "top_p", "top_k")}
    return json.loads(json.dumps(knobs))


def load_with_options(
    model: str,
    options: ModelOptions | None = None,
    *,
    kind: Literal["individual", "collective"] = "individual",
    default_tokens: int | None = None,
) -> Any:
    """The decision maker for a model spec, loaded with ``options`` (the surrogate for ``sim``).

    Args:
        model: The model spec (see :mod:`atp_graph.policies.spec`).
        options: How to load and sample it (default: every default).
        kind: Which testbed's answer budget applies when ``max_new_tokens`` is not given.
        default_tokens: An answer budget that overrides the testbed's default.
    """
    from ..errors import printable
    from .spec import answer_budget, is_surrogate, load_model

    if is_surrogate(model):
        return load_model(model)
    options = options or ModelOptions()
    budget = options.max_new_tokens or default_tokens or answer_budget(model, kind)
    print(f"loading model {printable(model)} ...", file=sys.stderr, flush=True)
    return load_model(
        model,
        device=options.device,
        dtype=options.dtype,
        trust_remote_code=options.trust_remote_code,
        **options.sampling(budget),
    )
