"""Defenses against the Alignment Tipping Process: self-sampled preference data, DPO, GRPO, and comparisons.

Train a defended variant, then load it anywhere a model spec is accepted::

    from defenses import make_preference_data, train_dpo, DPOSettings, DataSettings
    from atp_graph import load_policy

    make_preference_data(load_policy("smollm2"), "prefs.jsonl", model="smollm2", settings=DataSettings(retries=3))
    result = train_dpo("smollm2", "prefs.jsonl", "variants/dpo", DPOSettings(epochs=12))
    policy = load_policy(result.spec)   # "hf:<base folder>+adapter:<variants/dpo, absolute>"

A variant folder holds a LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``) or, with
``full=True``, a whole model, plus ``variant.json`` (base spec and folder, method, settings, data file hash, first and
last training metrics). The model spec that loads a LoRA variant is ``hf:<base folder>+adapter:<variant folder>``
(``hf:<variant folder>`` for a full fine-tune); it is recorded as ``variant.json["spec"]``, and ``compare`` also
accepts the variant folder itself. For ``smollm2`` the base folder is the cached converted SmolLM2 folder
(``~/.cache/atp-graph/models/smollm2-135m-instruct`` unless ``ATP_GRAPH_CACHE`` says otherwise).

Command line (``python cli.py ...``)::

    defend data  --model SPEC --scenarios PATH --out FILE [--kind individual|collective] [--retries N] [--limit N]
    defend dpo   --model SPEC --data FILE --out DIR [--max-steps N] [--epochs] [--lr] [--beta] [--lora-rank] [--full]
    defend grpo  --model SPEC (--data FILE | --scenarios PATH) --out DIR [--generations] [--max-steps N] ...
    compare --variant base=SPEC --variant dpo=SPEC [--variant hyg=SPEC;memory_hygiene] [--testbed explore|diffuse|both]

Runtime defenses that need no training are variant options after ``;``: ``memory_hygiene``, ``reanchor=K``,
``evolution=reflection|transcript|none`` and ``monitor`` (the tipping monitor falls back to the compliant action).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .config import DataSettings, DPOSettings, GRPOSettings, TrainSettings
from .data import (
    INSTRUCTIONS,
    PreferenceSet,
    PreferenceStats,
    PromptRecord,
    make_preference_data,
    prompt_records,
    provenance_path,
    read_records,
    sample_preferences,
    write_preferences,
)
from .dpo import preference_margins, sequence_logps, train_dpo
from .grpo import atp_reward, choice_reward, grpo_prompts, train_grpo
from .variant import MANIFEST, DefenseError, TrainResult, base_model_path, read_variant, resolve_spec

if TYPE_CHECKING:
    from .compare import CompareConfig, CompareResult, Variant, parse_variant, run_compare

__all__ = [
    "INSTRUCTIONS",
    "MANIFEST",
    "CompareConfig",
    "CompareResult",
    "DPOSettings",
    "DataSettings",
    "DefenseError",
    "GRPOSettings",
    "PreferenceSet",
    "PreferenceStats",
    "PromptRecord",
    "TrainResult",
    "TrainSettings",
    "Variant",
    "atp_reward",
    "base_model_path",
    "choice_reward",
    "grpo_prompts",
    "make_preference_data",
    "parse_variant",
    "preference_margins",
    "prompt_records",
    "provenance_path",
    "read_records",
    "read_variant",
    "resolve_spec",
    "run_compare",
    "sample_preferences",
    "sequence_logps",
    "train_dpo",
    "train_grpo",
    "write_preferences",
]

_LAZY = {name: ".compare" for name in ("CompareConfig", "CompareResult", "Variant", "parse_variant", "run_compare")}


def __getattr__(name: str) -> Any:
    """Import the comparison (testbeds, LangGraph) on first access."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
