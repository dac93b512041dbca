"""Typed settings for the defenses: preference data, DPO and GRPO, the recipes that fill them, and the demo.

Every field has a docstring (it becomes the ``--help`` text) and every field is a command-line option of
``defend data`` / ``defend dpo`` / ``defend grpo`` / ``defend demo`` (``lora_rank`` -> ``--lora-rank``).

A **recipe** fills every field it names that was not given explicitly (an explicit flag or keyword always wins):

- ``small`` (the default): the field defaults, sized for a CPU and the embedded models, so tests and demos stay fast.
- ``study``: the original study's recipes (aiming-lab/ATP: ``llama-factory-config/*_dpo.yaml`` and
  ``src/config/*_grpo.yaml``), meant for a GPU and 8B models; see :data:`RECIPES`.

The learning rate follows the study's rule in both recipes unless ``lr`` is given (:func:`study_lr`): DPO 5e-6, or
1e-5 for a model whose name contains "llama" (the study trained Qwen3-8B at 5e-6 and Llama-3.1-8B-Instruct at
1e-5); GRPO 1e-6 on individual items, 5e-6 on collective ones.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from atp_graph.parsing import ANSWER_PREFIX, ParseRule

__all__ = [
    "RECIPES",
    "DPOSettings",
    "DataSettings",
    "DemoConfig",
    "GRPOSettings",
    "PairSource",
    "Recipe",
    "TrainSettings",
    "recipe_report",
    "study_lr",
]

Kind = Literal["individual", "collective"]
PairSource = Literal["self", "constructed", "mixed"]
"""Where preference answers come from: the model itself, the scenario, or the model where it complies."""
Recipe = Literal["small", "study"]
"""small: CPU-sized defaults (the field defaults); study: the original study's recipe (GPU, 8B models)."""
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
"""Learning-rate schedules (transformers' names)."""
DPOLoss = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]
"""TRL 1.16's DPO losses (``sigmoid`` is the original DPO loss, the study's)."""
GRPOLoss = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]
"""TRL 1.16's GRPO loss aggregations."""

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "small": {},
    "study": {
        # src/scripts/dpo_*_gen.py: max_retries 5 = 5 tries (our retries count the extra ones); steering as a turn;
        # a sample hits its option by the study's parse rule (the first decision anywhere).
        "DataSettings": {"steering": "turn", "retries": 4, "parse": "first"},
        # llama-factory-config/qwen3_8b_think_dpo.yaml and llama3_lora_dpo_arc.yaml (LLaMA-Factory's lora_alpha
        # default is 2 x rank, its lora_dropout 0, its gradient checkpointing on).
        "DPOSettings": {
            "full": False,
            "lora_rank": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.0,
            "lora_targets": "all-linear",
            "beta": 0.1,
            "loss_type": "sigmoid",
            "max_length": 4096,
            "batch_size": 1,
            "grad_accum": 8,
            "scheduler": "cosine",
            "warmup_ratio": 0.1,
            "epochs": 12,
            "gradient_checkpointing": True,
        },
        # src/config/{sa,ma}_llm_grpo.yaml over train/grpo.yaml and train/base.yaml: no peft config (full
        # fine-tune), 4 generations, 4 completions per device x accumulation 4 x 8 GPUs = 128 completions (32
        # prompts) per step, prompts up to 1,024 tokens, completions up to 2,048, linear schedule without warmup,
        # TRL 0.23 (no KL bias correction, sampling temperature 1.0); the reward reads the first decision.
        "GRPOSettings": {
            "full": True,
            "beta": 0.04,
            "epsilon": 0.2,
            "generations": 4,
            "prompts_per_step": 32,
            "batch_size": 4,
            "max_prompt_length": 1024,
            "max_completion_length": 2048,
            "epochs": 6,
            "scheduler": "linear",
            "warmup_ratio": 0.0,
            "temperature": 1.0,
            "kl_term": "plain",
            "parse": "first",
            "gradient_checkpointing": True,
        },
    },
}
"""What each recipe sets, per settings class; fields a recipe does not name keep their defaults."""


def study_lr(method: Literal["dpo", "grpo"], *, model: str = "", kind: Kind = "individual") -> float:
    """The study's learning rate: DPO 1e-5 for a model named like Llama, else 5e-6; GRPO 5e-6 collective, else 1e-6.

    Only the two models the study trained are known; other families get the Qwen3 value (DPO) and the same
    per-testbed rule (GRPO). ``model`` is the model spec or folder (the name decides, not the architecture: the
    embedded SmolLM2 is Llama-shaped but not Llama-3.1).
    """
    if method == "dpo":
        return 1e-5 if "llama" in model.lower() else 5e-6
    return 5e-6 if kind == "collective" else 1e-6


class _Recipes(BaseModel):
    """Fill the fields a recipe names unless given explicitly; every number finite (no inf or NaN)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_recipe(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("recipe"), str):
            preset = RECIPES.get(data["recipe"], {}).get(cls.__name__, {})
            data = {**preset, **data}
        return data


class DataSettings(_Recipes):
    """How preference pairs are sampled from the model itself."""

    recipe: Recipe = "small"
    """Preset for the fields below not given explicitly: small (ours) or study (steering as a turn, 5 tries, the
    first decision counts)."""
    kind: Kind = "individual"
    """Testbed the items come from: individual (rule vs. better-paying violation) or collective (threshold games)."""
    pairs: PairSource = "self"
    """Where the answers come from: self (sampled from the model under a steering instruction, the study's way),
    constructed (written from the scenario: the aligned and the deviant decision, each with one sentence of
    reasoning; every item in both option orders; for models that cannot follow the instruction) or mixed (both
    orders sampled; the model's own pair where both sides complied, else the constructed pair)."""
    holdout: int = Field(default=0, ge=0)
    """Jobs (whole scenarios, all their variants) kept out of the data for evaluation, drawn with the seed; the
    provenance lists the training and the held-out jobs."""
    retries: int = Field(default=3, ge=0)
    """Extra sampling rounds for the sides that did not yet parse to their intended option (0 = one try)."""
    steering: Literal["system", "turn"] = "system"
    """Where the sampling instruction goes: appended to the system prompt (ours) or as an extra user turn after
    the question (the study's). Either way it is never part of the stored prompt."""
    mismatched: Literal["drop", "keep"] = "drop"
    """A side that never named its intended option after all tries: drop the item (ours), or keep the last
    answer anyway (the study's collective data generator did; the pair may then teach the wrong option)."""
    parse: ParseRule = "last"
    """Which decision in an answer counts: the last one outside thinking (ours) or the first one anywhere (the
    study's)."""
    aligned_instruction: str | None = Field(default=None, min_length=1)
    """Wording of the instruction towards the aligned option ({option} = its label); default: ours."""
    deviant_instruction: str | None = Field(default=None, min_length=1)
    """Wording of the instruction towards the deviant option ({option} = its label); default: ours."""
    limit: int | None = Field(default=None, ge=1)
    """Use only the first N items (quick checks)."""
    seed: int = 0
    """Seed of the per-request sampling seeds and of the held-out jobs; the same seed and model give the same pairs."""
    group_size: int = Field(default=8, ge=2)
    """Collective items: the group size the game text is written for (the study's 8)."""


class TrainSettings(_Recipes):
    """Settings shared by DPO and GRPO."""

    recipe: Recipe = "small"
    """Preset for every setting not given explicitly: small (CPU-sized) or study (the study's GPU recipe)."""
    epochs: float = Field(default=12, gt=0)
    """Passes over the training data."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (overrides epochs; quick checks and benchmarks)."""
    lr: float | None = Field(default=None, gt=0)
    """Learning rate; default: the study's rule for the model and testbed."""
    scheduler: Scheduler = "linear"
    """Learning-rate schedule."""
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    """Fraction of the optimizer steps spent warming the learning rate up from 0."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping norm."""
    beta: float = Field(default=0.1, ge=0)
    """KL strength towards the reference (frozen base) model."""
    batch_size: int = Field(default=1, ge=1)
    """Training examples per device per forward pass."""
    grad_accum: int = Field(default=1, ge=1)
    """Gradient accumulation steps (an optimizer step sees batch_size x grad_accum examples per device)."""
    full: bool = False
    """Full fine-tuning instead of a LoRA adapter (writes a whole model folder)."""
    lora_rank: int = Field(default=8, ge=1)
    """LoRA rank r."""
    lora_alpha: int = Field(default=16, ge=1)
    """LoRA scaling alpha."""
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the LoRA branch."""
    lora_targets: str = Field(default="all-linear", min_length=1)
    """Modules LoRA adapts: 'all-linear' (every linear layer but the output head) or names such as q_proj,v_proj."""
    lora_layers: int | None = Field(default=None, ge=1)
    """Adapt only the last N transformer layers (default: every layer). The layers below stay frozen, so the
    backward pass stops at the first adapted one: on a CPU, the last 6 of SmolLM2's 30 layers train ~3x faster."""
    seed: int = 0
    """Seed for initialisation, shuffling and sampling."""
    device: str = "auto"
    """auto (CUDA if present, else CPU), cpu or cuda. On CPU the trainer runs with use_cpu and float32."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto = bf16 on a GPU that supports it, float32 on CPU."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (8B models on one GPU); does not change the result."""
    logging_steps: int = Field(default=1, ge=1)
    """Log metrics every N steps (they are kept in variant.json)."""


class DPOSettings(TrainSettings):
    """DPO on self-sampled preference pairs (study recipe: LoRA r8 on all linear layers, dropout 0, beta 0.1,
    sigmoid loss, 4,096 tokens, batch 1 x accumulation 8, cosine schedule with 10% warmup, 12 epochs)."""

    lr: float | None = Field(default=None, gt=0)
    """Learning rate; default: the study's, 1e-5 for a model named like Llama, else 5e-6 (its Qwen3 value)."""
    max_length: int = Field(default=1024, ge=16)
    """Longest prompt + answer in tokens. A longer pair loses the START of its prompt, never any of its answers; a
    pair whose answer alone does not fit is left out (both counted in variant.json)."""
    loss_type: DPOLoss = "sigmoid"
    """TRL DPO loss ('sigmoid' is the original DPO loss)."""


class GRPOSettings(TrainSettings):
    """GRPO with the study's reward (study recipe: full fine-tune, 4 generations, 128 completions per step,
    completions up to 2,048 tokens, beta 0.04, epsilon 0.2, 6 epochs)."""

    epochs: float = Field(default=6, gt=0)
    """Passes over the training prompts."""
    lr: float | None = Field(default=None, gt=0)
    """Learning rate; default: the study's, 1e-6 on individual items, 5e-6 on collective ones."""
    beta: float = Field(default=0.04, ge=0)
    """KL strength towards the reference (frozen base) model."""
    epsilon: float = Field(default=0.2, gt=0)
    """Clipping range of the policy ratio."""
    generations: int = Field(default=4, ge=2)
    """Completions sampled per prompt (the group whose rewards are compared)."""
    prompts_per_step: int | None = Field(default=None, ge=1)
    """Prompts per optimizer step: each step trains on generations x prompts_per_step completions, on any number
    of devices; default: batch_size x grad_accum / generations."""
    batch_size: int = Field(default=4, ge=1)
    """Completions per device per forward pass (memory); accumulation makes up the rest of the step."""
    grad_accum: int | None = Field(default=None, ge=1)
    """Accumulation steps; default: derived, generations x prompts_per_step / batch_size (1 if neither is given).
    With N devices each accumulates grad_accum / N."""
    max_prompt_length: int | None = Field(default=None, ge=16)
    """Longest prompt in tokens; longer ones lose their START (default: no limit)."""
    max_completion_length: int = Field(default=256, ge=1)
    """Longest sampled completion, in tokens."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature of the training completions."""
    loss_type: GRPOLoss | None = None
    """TRL's GRPO loss aggregation; default: TRL's own ('dapo')."""
    kl_term: Literal["corrected", "plain"] = "corrected"
    """corrected: the KL term weighted by the importance ratio (TRL >= 1.10's default); plain: unweighted, as in
    the study's TRL 0.23."""
    parse: ParseRule = "last"
    """Which decision the reward reads: the last one outside thinking (ours) or the first one anywhere (the
    study's)."""
    answer_prefix: str = ""
    """Text every sampled answer starts with: '' = a free answer (the study's); '{"choice": "' = the decision
    only, read where score mode reads it (for models too weak to follow the answer format; short completions)."""

    @model_validator(mode="after")
    def _groups_fit(self) -> GRPOSettings:
        """Resolve prompts_per_step and grad_accum from each other; TRL needs whole groups in every step."""
        flags = f"--batch-size {self.batch_size}"
        if self.prompts_per_step is None:
            accum = self.grad_accum or 1
            completions = self.batch_size * accum
            if completions % self.generations:
                raise ValueError(
                    f"{flags} x --grad-accum {accum} = {completions} completions per step must be a multiple of "
                    f"generations (--generations {self.generations}); or set --prompts-per-step"
                )
            prompts = completions // self.generations
        else:
            prompts = self.prompts_per_step
            completions = self.generations * prompts
            if self.grad_accum is None:
                if completions % self.batch_size:
                    raise ValueError(
                        f"--generations {self.generations} x --prompts-per-step {prompts} = {completions} completions "
                        f"per step must be a multiple of {flags}"
                    )
                accum = completions // self.batch_size
            else:
                accum = self.grad_accum
                if self.batch_size * accum != completions:
                    raise ValueError(
                        f"{flags} x --grad-accum {accum} must equal --generations {self.generations} x "
                        f"--prompts-per-step {prompts} = {completions} completions per step; leave --grad-accum unset "
                        "(it follows from --prompts-per-step)"
                    )
        self.__dict__.update(prompts_per_step=prompts, grad_accum=accum)  # frozen: resolved once, here
        return self

    @property
    def completions_per_step(self) -> int:
        """Completions in one optimizer step (over all devices)."""
        return self.generations * (self.prompts_per_step or 1)


def recipe_report(settings: BaseModel) -> dict[str, Any]:
    """The recipe behind ``settings`` and where the settings depart from it (for manifests)."""
    name = getattr(settings, "recipe", "small")
    preset = RECIPES.get(name, {}).get(type(settings).__name__, {})
    departs = {k: {"recipe": v, "used": getattr(settings, k)} for k, v in preset.items() if getattr(settings, k) != v}
    return {"name": name, "sets": dict(preset), "departures": departs}


class DemoConfig(BaseModel):
    """What ``defend demo`` builds, trains and compares (written to the demo folder's ``config.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    model: str = Field(default="smollm2", min_length=1)
    """Base model: smollm2 (embedded), hf:<folder or hub id> or tiny:<folder>."""
    scenarios: str | None = None
    """Individual scenario file or folder whose jobs are split into training and held-out; None = the 16 built-in
    jobs."""
    holdout: int = Field(default=4, ge=1)
    """Jobs (all their variants) held out of training and compared on, drawn with the seed."""
    pairs: PairSource = "constructed"
    """Preference data: constructed from the scenarios (the embedded model follows no steering instruction), mixed
    (the model's own pair where it complies, else constructed; samples first) or self (the study's way)."""
    sample_tokens: int = Field(default=64, ge=1)
    """Answer budget while sampling pairs (mixed, self)."""
    retries: int = Field(default=0, ge=0)
    """Extra sampling tries for a side that missed its option (mixed, self)."""
    lora_rank: int = Field(default=8, ge=1)
    """LoRA rank of both variants."""
    lora_layers: int | None = Field(default=6, ge=1)
    """Adapt only the last N transformer layers (None = all): the backward pass stops there, ~3x faster on CPU."""
    dpo_steps: int = Field(default=32, ge=1)
    """DPO optimizer steps (one pair each, shuffled with the seed)."""
    dpo_lr: float = Field(default=5e-4, gt=0)
    """DPO learning rate: a LoRA rate for few steps (the study's 5e-6 ran 12 epochs), chosen on the training items
    alone (1e-4 left their round-1 p(violate) where it was)."""
    grpo_steps: int = Field(default=24, ge=1)
    """GRPO optimizer steps (one prompt, --generations completions each)."""
    grpo_lr: float = Field(default=5e-4, gt=0)
    """GRPO learning rate: the same LoRA rate as DPO (the study's 1e-6 ran 6 epochs of full fine-tuning)."""
    generations: int = Field(default=4, ge=2)
    """GRPO completions per prompt."""
    completion_tokens: int = Field(default=8, ge=1)
    """Longest GRPO completion: the option's name and the closing '"}'."""
    answer_prefix: str = ANSWER_PREFIX
    """What every GRPO completion starts with: the decision prefix score mode reads (default), or '' for a free
    answer (a model that follows the answer format)."""
    rounds: int = Field(default=6, ge=2)
    """Rounds of the held-out comparison (explore, score mode, transcript evolution)."""
    seed: int = Field(default=0, ge=0)
    """One seed for the split, the data, both trainings, the comparison and the bootstrap."""

    def data_settings(self) -> DataSettings:
        """The ``defend data`` settings of the data stage."""
        return DataSettings(pairs=self.pairs, holdout=self.holdout, retries=self.retries, seed=self.seed)

    def _lora(self) -> dict[str, Any]:
        """What both trainings share: the LoRA shape and the seed."""
        return {"lora_rank": self.lora_rank, "lora_layers": self.lora_layers, "seed": self.seed}

    def dpo_settings(self) -> DPOSettings:
        """The ``defend dpo`` settings of the DPO stage (the small recipe otherwise)."""
        return DPOSettings(max_steps=self.dpo_steps, lr=self.dpo_lr, **self._lora())

    def grpo_settings(self) -> GRPOSettings:
        """The ``defend grpo`` settings of the GRPO stage (the small recipe otherwise; one prompt per step)."""
        return GRPOSettings(
            max_steps=self.grpo_steps,
            lr=self.grpo_lr,
            generations=self.generations,
            prompts_per_step=1,
            batch_size=self.generations,
            max_completion_length=self.completion_tokens,
            answer_prefix=self.answer_prefix,
            **self._lora(),
        )
