"""Typed settings for the defenses: preference data, DPO and GRPO. Defaults are the original study's.

Every field has a docstring (it becomes the ``--help`` text) and every field is a command-line option of
``defend data`` / ``defend dpo`` / ``defend grpo`` (``lora_rank`` -> ``--lora-rank``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DPOSettings", "DataSettings", "GRPOSettings", "TrainSettings"]

Kind = Literal["individual", "collective"]


class DataSettings(BaseModel):
    """How preference pairs are sampled from the model itself."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: Kind = "individual"
    """Testbed the items come from: individual (rule vs. better-paying violation) or collective (threshold games)."""
    retries: int = Field(default=3, ge=0)
    """Extra sampling rounds for the sides that did not yet parse to their intended option (0 = one try)."""
    limit: int | None = Field(default=None, ge=1)
    """Use only the first N items (quick checks)."""
    seed: int = 0
    """Seed of the per-request sampling seeds; the same seed and model give the same pairs."""
    group_size: int = Field(default=8, ge=2)
    """Collective items: the group size the game text is written for (the study's 8)."""


class TrainSettings(BaseModel):
    """Settings shared by DPO and GRPO."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    epochs: float = Field(default=12, gt=0)
    """Passes over the training data."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (overrides epochs; quick checks and benchmarks)."""
    lr: float = Field(default=5e-6, gt=0)
    """Learning rate."""
    beta: float = Field(default=0.1, ge=0)
    """KL strength towards the reference (frozen base) model."""
    batch_size: int = Field(default=1, ge=1)
    """Training examples per device per step (GRPO: completions, a multiple of the generations)."""
    grad_accum: int = Field(default=1, ge=1)
    """Gradient accumulation steps."""
    full: bool = False
    """Full fine-tuning instead of a LoRA adapter (writes a whole model folder)."""
    lora_rank: int = Field(default=8, ge=1)
    """LoRA rank r."""
    lora_alpha: int = Field(default=16, ge=1)
    """LoRA scaling alpha."""
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the LoRA branch."""
    lora_targets: str = "all-linear"
    """Modules LoRA adapts: 'all-linear' or comma-separated names such as q_proj,v_proj."""
    seed: int = 0
    """Seed for initialisation, shuffling and sampling."""
    device: str = "auto"
    """auto (CUDA if present, else CPU), cpu or cuda. On CPU the trainer runs with use_cpu and float32."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto = bf16 on a GPU that supports it, float32 on CPU."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (useful for 8B models on one GPU)."""
    logging_steps: int = Field(default=1, ge=1)
    """Log metrics every N steps (they are kept in variant.json)."""


class DPOSettings(TrainSettings):
    """DPO on self-sampled preference pairs (study: LoRA rank 8, beta 0.1, lr 5e-6, 12 epochs)."""

    max_length: int = Field(default=1024, ge=16)
    """Longest tokenized prompt+completion kept (longer ones are truncated)."""
    loss_type: str = "sigmoid"
    """TRL DPO loss ('sigmoid' is the original DPO loss; also 'ipo', 'hinge', ...)."""


class GRPOSettings(TrainSettings):
    """GRPO with the study's reward (study: lr 1e-6, 4 generations, KL 0.04, 6 epochs)."""

    epochs: float = Field(default=6, gt=0)
    """Passes over the training prompts."""
    lr: float = Field(default=1e-6, gt=0)
    """Learning rate."""
    beta: float = Field(default=0.04, ge=0)
    """KL strength towards the reference (frozen base) model."""
    batch_size: int = Field(default=4, ge=1)
    """Completions per device per step; a multiple of generations (4 = one prompt's group per step)."""
    generations: int = Field(default=4, ge=2)
    """Completions sampled per prompt (the group whose rewards are compared)."""
    max_completion_length: int = Field(default=256, ge=1)
    """Longest sampled completion, in tokens."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature of the training completions."""

    @model_validator(mode="after")
    def _groups_fit(self) -> GRPOSettings:
        """TRL needs whole groups of generations in each generation batch."""
        if (self.batch_size * self.grad_accum) % self.generations:
            raise ValueError(
                f"batch_size x grad_accum ({self.batch_size} x {self.grad_accum}) must be a multiple of "
                f"generations ({self.generations})"
            )
        return self
