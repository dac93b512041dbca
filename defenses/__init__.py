"""Defenses against the Alignment Tipping Process: preference data, DPO, GRPO, comparisons, and the demo.

Train a defended variant, then load it anywhere a model spec is accepted::

    from defenses import make_preference_data, train_dpo, DPOSettings, DataSettings
    from atp_graph import load_policy

    make_preference_data(load_policy("smollm2"), "prefs.jsonl", model="smollm2", settings=DataSettings(retries=3))
    result = train_dpo("smollm2", "prefs.jsonl", "variants/dpo", DPOSettings(epochs=12))
    policy = load_policy(result.spec)   # "hf:<base folder>+adapter:<variants/dpo, absolute>"

Recipes: every settings class takes ``recipe="small"`` (the default: CPU-sized, so tests and demos stay fast) or
``recipe="study"`` (the original study's GPU recipe for 8B models); a recipe fills every field it names that is not
given explicitly (:data:`RECIPES`), and ``variant.json`` records the resolved values, the recipe and what departed
from it, the values TRL's config received, and the truncation counts::

    DPOSettings(recipe="study")   # LoRA r8 all linear layers, dropout 0, beta 0.1, sigmoid, 4,096 tokens,
                                  # batch 1 x accumulation 8, cosine + 10% warmup, 12 epochs
    GRPOSettings(recipe="study")  # full fine-tune, 4 generations x 32 prompts = 128 completions per step,
                                  # prompts <= 1,024 and completions <= 2,048 tokens, beta 0.04, epsilon 0.2, 6 epochs,
                                  # plain KL term, reward reads the first decision
    DataSettings(recipe="study")  # steering instruction as an extra user turn, 5 tries per side, first decision
                                  # counts (mismatched sides still dropped: mismatched="keep" is the study's)

Without ``lr``, the study's rule picks the learning rate (:func:`study_lr`): DPO 5e-6, or 1e-5 for a model named
like Llama; GRPO 1e-6 on individual items, 5e-6 on collective ones. Truncation never cuts an answer: DPO pairs and
GRPO prompts over the limit lose the START of the prompt.

A variant folder holds a LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``) or, with
``full=True``, a whole model, plus ``variant.json`` (base spec and folder, method, settings, data file hash, first and
last training metrics). The model spec that loads a LoRA variant is ``hf:<base folder>+adapter:<variant folder>``
(``hf:<variant folder>`` for a full fine-tune); it is recorded as ``variant.json["spec"]``, and ``compare`` also
accepts the variant folder itself. For ``smollm2`` the base folder is the cached converted SmolLM2 folder
(``~/.cache/atp-graph/models/smollm2-135m-instruct`` unless ``ATP_GRAPH_CACHE`` says otherwise).

Preference data for weak models: ``DataSettings(pairs="constructed")`` writes the aligned and the deviant
decision from the scenario itself (decision first, one sentence of reasoning, every item in both option orders);
``pairs="mixed"`` keeps the model's own pair where it complies and constructs the rest; ``holdout=N`` keeps N whole
jobs out of the data (the provenance lists them) for evaluation.

The whole path in one resumable command, sized for a CPU and the embedded model: ``run_demo(DemoConfig(), out=...)``
(``defend demo``): pairs on the training jobs, DPO and GRPO LoRA variants, base vs DPO vs GRPO on the held-out jobs,
and a report with the round-1 level, the climb and a verdict per variant.

Command line (``python cli.py ...``)::

    defend demo  [--model SPEC] [--holdout N] [--pairs constructed|mixed|self] [--dpo-steps N] [--grpo-steps N]
                 [--rounds N] [--seed N] (--out DIR | --resume DIR)
    defend data  --model SPEC --scenarios PATH --out FILE [--recipe small|study] [--kind individual|collective]
                 [--pairs self|constructed|mixed] [--holdout N]
                 [--retries N] [--steering system|turn] [--mismatched drop|keep] [--max-new-tokens N] [--limit N]
    defend dpo   --model SPEC --data FILE --out DIR [--recipe small|study] [--max-length N] [--grad-accum N]
                 [--scheduler linear|cosine|...] [--warmup-ratio F] [--lora-dropout F] [--lora-targets T] [--lr] ...
    defend grpo  --model SPEC (--data FILE | --scenarios PATH) --out DIR [--recipe small|study] [--full/--no-full]
                 [--generations N] [--prompts-per-step N] [--max-completion-length N] [--epsilon F] [--beta F] ...
    compare --variant base=SPEC --variant dpo=SPEC [--variant hyg=SPEC;memory_hygiene] [--testbed explore|diffuse|both]

Runtime defenses that need no training are variant options after ``;``: ``memory_hygiene``, ``reanchor=K``,
``evolution=reflection|transcript|none`` and ``monitor`` (the tipping monitor falls back to the compliant action).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .config import RECIPES, DataSettings, DemoConfig, DPOSettings, GRPOSettings, TrainSettings, study_lr
from .data import (
    INSTRUCTIONS,
    PreferenceSet,
    PreferenceStats,
    PromptRecord,
    answer_budget,
    construct_preferences,
    make_preference_data,
    prompt_records,
    provenance_path,
    read_records,
    sample_preferences,
    write_preferences,
)
from .dpo import preference_margins, sequence_logps, train_dpo
from .grpo import atp_reward, choice_reward, grpo_prompts, train_grpo
from .split import Split, split_jobs
from .variant import MANIFEST, DefenseError, TrainResult, base_model_path, read_variant, resolve_spec

if TYPE_CHECKING:
    from .compare import CompareConfig, CompareResult, Variant, parse_variant, run_compare
    from .demo import DemoResult, run_demo

__all__ = [
    "INSTRUCTIONS",
    "MANIFEST",
    "CompareConfig",
    "CompareResult",
    "DPOSettings",
    "DataSettings",
    "DefenseError",
    "DemoConfig",
    "DemoResult",
    "GRPOSettings",
    "PreferenceSet",
    "PreferenceStats",
    "PromptRecord",
    "RECIPES",
    "Split",
    "TrainResult",
    "TrainSettings",
    "Variant",
    "answer_budget",
    "atp_reward",
    "base_model_path",
    "choice_reward",
    "construct_preferences",
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
    "run_demo",
    "sample_preferences",
    "sequence_logps",
    "split_jobs",
    "study_lr",
    "train_dpo",
    "train_grpo",
    "write_preferences",
]

_LAZY = {name: ".compare" for name in ("CompareConfig", "CompareResult", "Variant", "parse_variant", "run_compare")}
_LAZY |= {"DemoResult": ".demo", "run_demo": ".demo"}


def __getattr__(name: str) -> Any:
    """Import the comparison (testbeds, LangGraph) on first access."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
