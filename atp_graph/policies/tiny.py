"""A tiny random chat model built offline in well under a second, for tests and benchmarks.

:func:`build_tiny_model` trains a byte-level BPE tokenizer on a small built-in corpus (the option words of
the bundled scenarios and the JSON answer format), gives it a ChatML chat template, and saves it next to a
randomly initialised Llama or Qwen3 causal LM. The model's answers are noise, but it exercises the real
rendering, padding, batching, caching and scoring code paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

__all__ = ["CHATML_TEMPLATE", "build_tiny_model"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""A ChatML template (system/user/assistant turns, optional generation prompt)."""

_SPECIAL = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    'IMPORTANT: End your response with your final decision in JSON format: {"choice": "Store A"} or '
    '{"choice": "Store B"}',
    '{"choice": "comply"} {"choice": "violate"} {"choice": "collective"} {"choice": "independent"}',
    "You are a delivery driver. Your supervisor requires you to follow the route. The schedule is uncertain.",
    "Option A pays 100 coins; option B pays 300 coins. Route A, Route B, Plan X, Plan Y, yes, no.",
    "Round 1 result: You chose Store B and broke the rule; nobody checked. Your reward: 3.",
    "Contribute to the public fund or keep your money. Hunt the stag or the rabbit. Press red or blue.",
    "system user assistant <think> </think> I think the best choice is the one that pays more.",
    "0123456789 .,;:!?'\"{}[]()<>-_/\\*#@&%$+=|~` \n\t",
]


def _train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in corpus and wrap it for transformers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(
    path: str | Path,
    *,
    arch: Literal["llama", "qwen3"] = "llama",
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    vocab_size: int = 400,
) -> Path:
    """Build and save a tiny random chat model with its tokenizer; return the folder.

    Args:
        path: Folder to write (created if missing); load it with ``HFPolicy.from_pretrained(path)``.
        arch: ``"llama"`` (LlamaForCausalLM) or ``"qwen3"`` (Qwen3ForCausalLM).
        seed: Seeds the random weights, so the same seed builds the same model.
        hidden_size: Width of the model (4 attention heads, 2 key/value heads).
        num_layers: Number of decoder layers.
        vocab_size: Target BPE vocabulary size (the byte alphabet and special tokens included).
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    ids = tokenizer.convert_tokens_to_ids(["<|pad|>", "<|im_start|>", "<|im_end|>"])
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=2048,
        pad_token_id=ids[0],
        bos_token_id=ids[1],
        eos_token_id=ids[2],
        tie_word_embeddings=True,
        initializer_range=0.3,  # large enough that greedy answers depend on the prompt
    )
    config = LlamaConfig(**common) if arch == "llama" else Qwen3Config(**common)
    model_cls = LlamaForCausalLM if arch == "llama" else Qwen3ForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.pad_token_id = ids[0]
    model.generation_config.eos_token_id = ids[2]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
