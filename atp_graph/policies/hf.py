"""A :class:`~atp_graph.policies.base.Policy` over a local Hugging Face causal chat model.

Generate mode renders every conversation with the tokenizer's chat template, sorts the prompts by length, cuts
them into groups of similar length, left-pads each group and calls ``generate`` once per group. Sampling draws
each row from its own generator seeded by the request's seed, so an answer does not depend on which other
requests share its batch.

Score mode reads the model's probability of each option instead of sampling an answer: the log-likelihood of
the answer's continuation ``<option>"}`` after the assistant prefix ``{"choice": "``, averaged over the two
option orders (``request.messages`` and ``request.swapped``) to cancel the model's position bias. No prefix
token runs twice: the two orders differ only near the end, so each request is packed into ONE row holding its
common start (its trunk) once, then each order's tail and both options' tokens as branches of a tree attention
mask; one batched forward pass per group scores everything.

Prefix reuse (on by default, ``prefix_cache=False`` turns it off): conversations that come back next round
(transcript mode: those with history, and first rounds marked ``DecisionRequest.continues``) are cut at their
message ends, and the KV of every message stays in a byte-budgeted LRU store (:mod:`~atp_graph.policies.kvcache`).
A prompt whose messages were seen before (the same agent's previous rounds, or
the system prompt and scenario every agent shares) reuses their KV, and only its new messages are computed;
identical prompts in one call are computed once. Each message's KV is computed one canonical way (alone, batch size
1, after the canonical KV of the messages before it), so results never depend on what happened to be stored: a
resumed run or an eviction gives the same numbers bit for bit. Against no reuse at all they agree up to float
rounding (p values to about 1e-6, greedy and seeded answers token for token).

Long answers: ``continuous=True`` (the default for answer budgets over :data:`LONG_ANSWER` tokens) replaces the
fixed padded groups of ``generate`` with a decode loop that drops each finished answer from the batch at once
and admits the next waiting request in its place, so a batch never waits for its longest answer. Rows keep their
own seeded generators, so answers are the same token for token as with padded groups. Every running batch is
sized so that its worst case (prompt plus ``max_new_tokens`` for every row) fits the KV budget.
"""

from __future__ import annotations

import bisect
import copy
import functools
import inspect
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicLayer

from ..parsing import choice_json, parse_choice
from .base import Decision, DecisionMode, DecisionRequest, Message, ModelError
from .kvcache import PrefixStore, default_kv_budget, parse_bytes, release_freed_memory
from .scoring import ANSWER_PREFIX, score_decision

_T = TypeVar("_T")

__all__ = ["ANSWER_PREFIX", "LONG_ANSWER", "HFPolicy", "resolve_device", "resolve_dtype"]

LONG_ANSWER = 128
"""Answer budgets (``max_new_tokens``) above this many tokens decode with continuous batching by default (measured on
a 2-core CPU with SmolLM2, 32 answers of up to 256 tokens: 1.6x the padded groups; shorter budgets use generate)."""


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else is passed to :class:`torch.device`."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` is float32 on CPU, bfloat16 on GPUs that support it, else float16; or a dtype name."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _draw(
    scores: torch.Tensor, generators: Sequence[torch.Generator], *, temperature: float, top_k: int | None, top_p: float
) -> torch.Tensor:
    """One token per row (``[rows, 1]``), drawn with that row's generator; temperature, top-k and top-p as in
    Hugging Face; one uniform number per row per call."""
    logits, order = torch.sort(scores.float() / max(temperature, 1e-5), dim=-1, descending=True)
    if top_k:
        logits[:, top_k:] = -float("inf")
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
        probs = probs.masked_fill(before > top_p, 0.0)  # keeps at least the top token
    cdf = probs.cumsum(-1)
    u = torch.stack([torch.rand((), generator=g) for g in generators]).to(cdf.device)
    rank = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp(max=cdf.shape[-1] - 1)
    return order.gather(-1, rank)


class _SeededSampler(LogitsProcessor):
    """Sample each row from its own seeded generator; return logits that only allow the drawn token.

    ``generate`` then runs greedily and picks exactly the drawn token. Temperature, top-k and top-p follow the
    Hugging Face semantics; one uniform number per row per step comes from that row's CPU generator.
    """

    def __init__(self, seeds: Sequence[int], *, temperature: float, top_k: int | None, top_p: float) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        token = _draw(scores, self.generators, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        return torch.full_like(scores, -float("inf")).scatter(-1, token, 0.0)


class Generated(NamedTuple):
    """One generated answer: its text, why it ended (``stop``: end of sequence; ``length``: the budget ran out)
    and its token count."""

    text: str
    finish: str
    tokens: int


_GQA_FLAG = "TRANSFORMERS_SDPA_FORCE_GQA"
_TORCH_GQA = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def _native_gqa(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run an :class:`HFPolicy` method with SDPA attending grouped KV heads natively (``enable_gqa``) on CPU.

    Under an explicit 4-D mask (every batched pass here) transformers otherwise copies each KV head once per query
    head (``repeat_kv``) before attention, in every layer: scoring 16 rows x 46 tokens after 1,194 kept tokens
    (SmolLM2, 2-core CPU) spent 40% of its time in those copies, 2.8 s -> 1.7 s without them, with the same bits.
    transformers reads ``TRANSFORMERS_SDPA_FORCE_GQA`` at every attention call; a value the user set wins, and GPUs
    are left alone (their fast kernels need GQA without a mask).
    """

    @functools.wraps(method)
    def run(self: HFPolicy, *args: Any, **kwargs: Any) -> _T:
        if not _TORCH_GQA or self.device.type != "cpu" or _GQA_FLAG in os.environ:
            return method(self, *args, **kwargs)
        os.environ[_GQA_FLAG] = "1"
        try:
            return method(self, *args, **kwargs)
        finally:
            os.environ.pop(_GQA_FLAG, None)

    return run


class HFPolicy:
    """A local chat model that decides a whole batch of requests in batched model calls.

    Args:
        model: A causal LM (``AutoModelForCausalLM``), already on its device and in eval mode.
        tokenizer: Its tokenizer; it needs a chat template.
        name: The model spec written into run configs, e.g. ``"hf:Qwen/Qwen3-8B"``.
        max_new_tokens: Default answer length cap in generate mode.
        temperature: Sampling temperature; ``None`` takes the model's generation config (else 1.0).
        top_p: Nucleus sampling mass; ``None`` takes the model's generation config (else 1.0).
        top_k: Top-k cut; ``None`` takes the model's generation config (else 50), 0 disables it.
        do_sample: Sample (True) or decode greedily (False); ``None`` takes the model's generation config.
        batch_size: Most sequences per forward pass; prompts are grouped by length before cutting.
        compile: Use a static KV cache so ``generate`` compiles its decode step (GPU only; off by default; generate
            mode then neither reuses prefixes nor batches continuously).
        prefix_cache: Reuse the KV cache of earlier prompts and answers that a new prompt starts with (see the module
            docstring); ``False`` computes every prompt in full, as before. Stored KV belongs to the current
            weights: call ``policy.store.clear()`` after changing them in place.
        kv_budget: Most bytes of KV cache held at once (stored prefixes plus the running batch's worst case), as a
            number or a string such as ``"8GB"``; ``None`` takes half the free GPU memory after loading, or a
            quarter of the available RAM on CPU. Generate batches are cut so that they fit; ``0`` turns prefix
            reuse off and leaves batches at ``batch_size``.
        continuous: Decode with continuous batching (finished answers leave the batch at once, waiting requests
            take their place) instead of padded groups; ``None`` turns it on when ``max_new_tokens`` exceeds
            :data:`LONG_ANSWER`. Needs a generation config without extra logits processors (repetition penalty
            and the like); padded groups are used otherwise.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        max_new_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        do_sample: bool | None = None,
        batch_size: int = 32,
        compile: bool = False,
        prefix_cache: bool = True,
        kv_budget: int | str | None = None,
        continuous: bool | None = None,
    ) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ModelError(f"{name}: the tokenizer has no chat template; use an instruction-tuned model")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_new_tokens, self.batch_size, self.compile = max_new_tokens, batch_size, compile
        gen = model.generation_config
        if do_sample is None:
            do_sample = bool(gen.do_sample) if temperature is None else temperature > 0
        self.do_sample = do_sample
        self.temperature = float(temperature if temperature is not None else gen.temperature or 1.0)
        self.top_p = float(top_p if top_p is not None else gen.top_p or 1.0)
        self.top_k = top_k if top_k is not None else (gen.top_k if gen.top_k is not None else 50)
        eos = [*_as_list(gen.eos_token_id), *_as_list(tokenizer.eos_token_id)]
        self.eos_ids = list(dict.fromkeys(eos))
        if not self.eos_ids:
            raise ModelError(f"{name}: neither the model nor the tokenizer defines an end-of-sequence token")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else gen.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])
        self._gen_config = copy.deepcopy(gen)
        for knob in ("temperature", "top_p", "top_k", "do_sample", "max_length"):
            setattr(self._gen_config, knob, None)
        self._gen_config.eos_token_id, self._gen_config.pad_token_id = self.eos_ids, self.pad_id
        if compile:
            self._gen_config.cache_implementation = "static"
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrappers
        params = inspect.signature(inner.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._option_ids: dict[str, list[int]] = {}
        self.kv_budget = parse_bytes(kv_budget) if kv_budget is not None else default_kv_budget(self.device)
        self._reuse_ok = _plain_kv_cache(model)
        self.prefix_cache = bool(prefix_cache and self._reuse_ok and self.kv_budget > 0)
        self.store = PrefixStore(self.kv_budget if self.prefix_cache else 0)
        """The prefix store; ``store.stats`` counts reused and computed prompt tokens."""
        self.continuous = continuous
        self._kv_per_token = _kv_bytes_per_token(model)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        trust_remote_code: bool = False,
        adapter: str | Path | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> HFPolicy:
        """Load a local folder or hub id (plus an optional peft adapter folder, merged in) as a policy.

        Args:
            path_or_id: A folder written by ``save_pretrained`` or a Hugging Face hub id.
            device: ``"auto"`` or a torch device string.
            dtype: ``"auto"`` (float32 on CPU, bfloat16/float16 on GPU) or a dtype name.
            trust_remote_code: Let transformers run the model repository's code; off unless asked.
            adapter: A peft adapter folder (e.g. a LoRA trained by ``defenses``); its tokenizer wins if it has one.
            name: The policy's name; defaults to ``hf:<path_or_id>[+adapter:<adapter>]``.
            **sampling: Keyword arguments of :class:`HFPolicy` (``max_new_tokens``, ``temperature``, ...).
        """
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        source = str(path_or_id)
        if _looks_local(source) and not Path(source).expanduser().is_dir():
            raise ModelError(f"model folder {source!r} does not exist")
        source = str(Path(source).expanduser()) if _looks_local(source) else source
        try:
            tok_source = str(adapter) if adapter and (Path(adapter) / "tokenizer_config.json").exists() else source
            tokenizer = AutoTokenizer.from_pretrained(tok_source, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, device_map=str(dev), trust_remote_code=trust_remote_code
            )
        except OSError as err:
            raise ModelError(
                f"cannot load model {source!r}: not a model folder, or the hub is unreachable ({err})"
            ) from err
        if adapter is not None:
            from peft import PeftModel

            if not Path(adapter).is_dir():
                raise ModelError(f"adapter folder {str(adapter)!r} does not exist")
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.eval()
        default = f"hf:{source}" + (f"+adapter:{adapter}" if adapter else "")
        return cls(model, tokenizer, name=name or default, **sampling)

    @property
    def device(self) -> torch.device:
        """The device the model's weights live on."""
        return next(self.model.parameters()).device

    def decide_batch(self, requests: Sequence[DecisionRequest], *, mode: DecisionMode = "generate") -> list[Decision]:
        """Decide every request: ``generate`` samples answers, ``score`` reads p(target) (see module doc)."""
        if mode == "score":
            decisions = self._score(requests)
            release_freed_memory(self.device)
            return decisions
        if mode != "generate":
            raise ValueError(f"unknown decision mode {mode!r}; use 'generate' or 'score'")
        rendered = [self._render_cut(r.messages, keep=r.continues) for r in requests]
        outs = self._generate(
            [p for p, _ in rendered], [r.seed for r in requests], self.max_new_tokens, [b for _, b in rendered]
        )
        release_freed_memory(self.device)
        return [
            Decision(text=o.text, choice=parse_choice(o.text, r.options), finish=o.finish, tokens=o.tokens)
            for o, r in zip(outs, requests, strict=True)
        ]

    def complete_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_new_tokens: int = 96,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Free-text completions (batched like generate mode); ``seeds`` default to 0 for every row."""
        rendered = [self._render_cut(c) for c in conversations]
        seeds = list(seeds) if seeds is not None else [0] * len(rendered)
        outs = self._generate([p for p, _ in rendered], seeds, max_new_tokens, [b for _, b in rendered])
        release_freed_memory(self.device)
        return [o.text for o in outs]

    # -- generate mode -------------------------------------------------------------------------------------------

    def _render(self, messages: Sequence[Message], suffix: str = "", **template_kwargs: Any) -> list[int]:
        """Token ids of the chat-templated conversation with the assistant turn opened, plus ``suffix``."""
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=False, **template_kwargs
        )
        return list(self.tokenizer(text + suffix, add_special_tokens=False)["input_ids"])

    def _render_cut(
        self, messages: Sequence[Message], suffix: str = "", *, keep: bool = False, **template_kwargs: Any
    ) -> tuple[list[int], list[int]]:
        """:meth:`_render`, and where its messages end (token offsets, increasing) when its KV is worth keeping.

        Only conversations whose messages come back next round are cut: those with an answer in them (transcript
        mode from the second round on) and those marked ``keep`` (a first round in transcript mode, see
        :attr:`DecisionRequest.continues`). They are cut before each answer and at the end, so a round's new turn
        (the last answer, its feedback and the next question; in a first round, the whole prompt) is one piece,
        computed in one pass. A message end counts
        only where the template renders the conversation up to that message as a start of the whole text and no
        token straddles it.
        """
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=False, **template_kwargs
        )
        text += suffix
        if not self.prefix_cache or not (keep or any(m["role"] == "assistant" for m in messages)):
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]), []
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, TypeError, ValueError):  # slow tokenizers give no offsets
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]), []
        ids, offsets = list(enc["input_ids"]), [int(start) for start, _ in enc["offset_mapping"]]
        ends = [int(end) for _, end in enc["offset_mapping"]]
        bounds: list[int] = []
        for k in range(1, len(messages) + 1):
            if k < len(messages) and messages[k]["role"] != "assistant":
                continue  # a turn (an answer and the messages after it) is one piece: a third of the batch-1 passes
            try:
                head = self.tokenizer.apply_chat_template(
                    [dict(m) for m in messages[:k]], add_generation_prompt=False, tokenize=False, **template_kwargs
                )
            except Exception:  # a template may refuse a partial conversation: no cut there
                continue
            if not head or not text.startswith(head):
                continue
            cut = bisect.bisect_left(offsets, len(head))  # first token starting at or after the message end
            if 0 < cut < len(ids) and ends[cut - 1] <= len(head) and (not bounds or cut > bounds[-1]):
                bounds.append(cut)
        return ids, bounds

    def _groups(self, lengths: Sequence[int], weights: Sequence[int] | None = None) -> Iterator[list[int]]:
        """Indices sorted by length (ties by position), cut into groups of at most ``batch_size`` rows.

        With ``weights`` (rows each item expands to), a group holds at most ``2 * batch_size`` rows in all.
        """
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        cap = self.batch_size if weights is None else 2 * self.batch_size
        group: list[int] = []
        used = 0
        for i in order:
            w = 1 if weights is None else weights[i]
            if group and used + w > cap:
                yield group
                group, used = [], 0
            group.append(i)
            used += w
        if group:
            yield group

    def _row_cap(self, width: int) -> int:
        """Most rows whose worst case (``width`` tokens each) fits the KV budget, within ``batch_size``."""
        if self._kv_per_token <= 0 or self.kv_budget <= 0:  # no budget: batch_size alone
            return self.batch_size
        return max(1, min(self.batch_size, self.kv_budget // (self._kv_per_token * max(width, 1))))

    def _use_continuous(self, max_new_tokens: int) -> bool:
        """Whether generate mode decodes with continuous batching (see :class:`HFPolicy`)."""
        if self.compile or not self._reuse_ok:
            return False
        wanted = self.continuous if self.continuous is not None else max_new_tokens > LONG_ANSWER
        return wanted and _plain_processing(self.model, self._gen_config)

    @torch.inference_mode()
    @_native_gqa
    def _generate(
        self,
        prompts: list[list[int]],
        seeds: list[int],
        max_new_tokens: int,
        bounds: Sequence[Sequence[int]] | None = None,
    ) -> list[Generated]:
        """Answers in the prompts' order: continuous batching, or one ``generate`` call per length group.

        ``bounds[i]``: where prompt ``i``'s messages end (see :meth:`_render_cut`); its KV up to the last one is
        taken from (or computed into) the prefix store."""
        if not prompts:
            return []
        bounds = [list(b) for b in bounds] if bounds is not None else [[] for _ in prompts]
        bounds = [[x for x in b if x < len(p)] for p, b in zip(prompts, bounds, strict=True)]  # >= 1 token to feed
        if self._use_continuous(max_new_tokens):
            return self._generate_continuous(prompts, seeds, max_new_tokens, bounds)
        texts = [Generated("", "stop", 0)] * len(prompts)
        config = copy.deepcopy(self._gen_config)
        config.max_new_tokens = max_new_tokens
        multiple = 64 if self.compile else 1  # fewer distinct shapes to compile
        for group in self._groups([len(p) for p in prompts]):
            width = max(len(prompts[i]) for i in group) + max_new_tokens
            cap = self._row_cap(width)
            for part in (group[k : k + cap] for k in range(0, len(group), cap)):
                self.store.reserve(len(part) * width * self._kv_per_token)
                rows = [prompts[i] for i in part]
                ids, mask = _left_pad(rows, self.pad_id, self.device, multiple)
                processors = LogitsProcessorList()
                if self.do_sample:
                    sampler = _SeededSampler(
                        [seeds[i] for i in part], temperature=self.temperature, top_k=self.top_k, top_p=self.top_p
                    )
                    processors.append(sampler)
                extra = {}
                repeated = len({tuple(r) for r in rows}) < len(rows)
                if self.prefix_cache and not self.compile and (repeated or any(bounds[i] for i in part)):
                    kvs = self._prompt_kvs(rows, [bounds[i] for i in part])
                    extra[self._cache_kw] = self._left_padded_cache(rows, kvs, ids.shape[1])
                    del kvs
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=config, logits_processor=processors, **extra
                )
                for i, row in zip(part, out[:, ids.shape[1] :].tolist(), strict=True):
                    texts[i] = self._finish(row, max_new_tokens)
                del extra, out
                self.store.reserve(0)
        return texts

    def _finish(self, row: Sequence[int], max_new_tokens: int) -> Generated:
        """A generated row as text: cut at the first end-of-sequence token; ``length`` when the budget ran out."""
        end = next((k for k, t in enumerate(row) if t in self.eos_ids), None)
        finish = "stop" if end is not None or len(row) < max_new_tokens else "length"
        end = len(row) if end is None else end
        return Generated(self.tokenizer.decode(list(row[:end]), skip_special_tokens=True), finish, end)

    def _left_padded_cache(self, rows: Sequence[list[int]], kvs: Sequence[torch.Tensor], width: int) -> Any:
        """A cache holding every row's prompt but its last token, left-padded like ``_left_pad`` pads the ids, so
        that ``generate`` only runs the last prompt token and then decodes."""
        past = self._zeros_kv(len(rows), width - 1)
        for b, (r, kv) in enumerate(zip(rows, kvs, strict=True)):
            if len(r) > 1:
                past[:, :, b, :, width - len(r) : width - 1] = kv
        return _as_cache(past)

    def _prompt_kvs(self, prompts: Sequence[list[int]], bounds: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """The KV of every prompt but its last token: each prompt's kept messages (:meth:`_canonical`), then the rest
        of all prompts in one batched pass; identical prompts are computed once."""
        keys = [tuple(p[:-1]) for p in prompts]
        unique = list(dict.fromkeys(keys))
        at = {k: bounds[keys.index(k)] for k in unique}
        pasts = [self._canonical(k, at[k]) for k in unique]
        rows = [_Row(kv, list(k[c:]), list(range(c, len(k)))) for k, (c, kv) in zip(unique, pasts, strict=True)]
        empty = self._zeros_kv(1, 0)[:, :, 0]
        done = {k: kv if kv is not None else empty for k, (_, kv) in zip(unique, pasts, strict=True)}
        if any(r.ids for r in rows):
            _, cache, past_len, width = self._extend(rows)
            for b, (k, r) in enumerate(zip(unique, rows, strict=True)):
                c, t = len(k) - len(r.ids), len(r.ids)
                cols = torch.cat([torch.arange(past_len - c, past_len), torch.arange(width - t, width) + past_len])
                done[k] = _take(cache, b, cols.to(self.device))
                self.store.stats.computed += t
            del cache
        return [done[k] for k in keys]

    def _zeros_kv(self, rows: int, width: int) -> torch.Tensor:
        """An all-zero batch KV ``[layers, 2, rows, kv_heads, width, head_dim]`` (zeros are masked out)."""
        return self._room_kv(rows, width).zero_()

    def _room_kv(self, rows: int, width: int) -> torch.Tensor:
        """An uninitialized batch KV like :meth:`_zeros_kv`, for the caller to fill every column of."""
        layers, heads, dim = self._kv_shape
        return torch.empty((layers, 2, rows, heads, width, dim), dtype=self._kv_dtype, device=self.device)

    @property
    def _kv_shape(self) -> tuple[int, int, int]:
        cfg = self.model.config.get_text_config(decoder=True)
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cfg.num_hidden_layers, heads, dim

    @property
    def _kv_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- prefix reuse --------------------------------------------------------------------------------------------

    def _canonical(self, tokens: Sequence[int], bounds: Sequence[int]) -> tuple[int, torch.Tensor | None]:
        """The KV of ``tokens[:bounds[-1]]``: ``(bounds[-1], kv)``, or ``(0, None)`` without bounds.

        Each message (``bounds`` are their ends) is computed the one canonical way: alone, at batch size 1, after
        the canonical KV of the messages before it. Kept messages come from the store, the others are computed and
        stored, so the KV and everything computed from it do not depend on what happened to be stored: a resumed
        run, or a run after an eviction, computes the same numbers bit for bit.
        """
        if not bounds:
            return 0, None
        c, kv = self.store.lookup(tokens, bounds)
        self.store.stats.reused += c
        for end in (b for b in bounds if b > c):
            room = self._room_kv(1, end)  # columns [0, c) copied below, [c, end) written by the pass
            if kv is not None:
                room[:, :, 0, :, :c] = kv
            self.model.get_decoder()(
                input_ids=torch.tensor([tokens[c:end]], device=self.device),
                position_ids=torch.arange(c, end, device=self.device)[None],
                use_cache=True,
                **{self._cache_kw: _as_cache(room, filled=c)},
            )
            kv = room[:, :, 0]
            self.store.insert(tokens[:end], kv, [b for b in bounds if b <= end])
            self.store.stats.computed += end - c
            c = end
        return c, kv

    def _extend(self, rows: Sequence[_Row], *, keep_cache: bool = True) -> tuple[torch.Tensor, Any, int, int]:
        """One batched decoder pass over new tokens after each row's own past (reused KV).

        Row ``b``'s past sits right-aligned in columns ``[C - c_b, C)`` of the batch past, its new tokens right-
        aligned in ``[T - t_b, T)`` of the input; a 4-D mask lets each new token see its past (its first
        ``row.sees[j]`` columns when given) and, among the new tokens, what ``row.mask`` allows (causal by default).
        Pads see only themselves.

        Returns:
            ``(hidden [B, T, H], cache or None, C, T)``; with ``keep_cache`` the cache holds ``C + T`` columns.
        """
        past_len = max((r.past.shape[3] if r.past is not None else 0) for r in rows)
        width = max(len(r.ids) for r in rows)
        n = len(rows)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        allowed = torch.zeros((n, width, past_len + width), dtype=torch.bool)
        allowed[:, :, past_len:] = torch.eye(width, dtype=torch.bool)
        use_cache = keep_cache or past_len > 0
        room = self._room_kv(n, past_len + width) if use_cache else None  # the pass writes its new columns
        for b, r in enumerate(rows):
            t, c = len(r.ids), (r.past.shape[3] if r.past is not None else 0)
            if room is not None:  # the past's left padding: zeros (masked, but never garbage)
                room[:, :, b, :, : past_len - (c if t else 0)] = 0
            if not t:
                continue
            off = width - t
            ids[b, off:] = torch.tensor(r.ids)
            pos[b, off:] = torch.tensor(r.positions)
            if r.sees is None:
                allowed[b, off:, past_len - c : past_len] = True
            else:
                for j, seen in enumerate(r.sees):
                    allowed[b, off + j, past_len - c : past_len - c + seen] = True
            allowed[b, off:, past_len + off :] = r.mask if r.mask is not None else torch.ones((t, t)).tril().bool()
            if c and room is not None:
                room[:, :, b, :, past_len - c : past_len] = r.past
        cache = _as_cache(room, filled=past_len) if room is not None else None
        kwargs: dict[str, Any] = {"use_cache": use_cache, **({self._cache_kw: cache} if cache is not None else {})}
        del room
        hidden = self.model.get_decoder()(
            input_ids=ids.to(self.device),
            position_ids=pos.to(self.device),
            attention_mask=allowed[:, None].to(self.device),
            **kwargs,
        ).last_hidden_state
        return hidden, cache, past_len, width

    # -- continuous batching -------------------------------------------------------------------------------------

    def _generate_continuous(
        self, prompts: list[list[int]], seeds: list[int], max_new_tokens: int, bounds: Sequence[Sequence[int]]
    ) -> list[Generated]:
        """Decode all prompts with continuous batching: one forward step advances every running answer by one
        token; a finished answer leaves the batch at once and the next waiting prompt takes its place (its kept
        messages reused, the rest prefilled). The running batch is the largest whose worst case fits the budget."""
        queue = deque(sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i)))
        texts: list[Generated | None] = [None] * len(prompts)
        batch = _Running(self)

        def worst(rows: int, longest: int) -> int:  # bytes, every row charged the longest row's worst case
            return rows * (longest + max_new_tokens) * self._kv_per_token

        while queue or batch.rows:
            admit: list[int] = []
            while queue and len(batch.rows) + len(admit) < self.batch_size:
                longest = max([batch.widest, *(len(prompts[i]) for i in [*admit, queue[0]])])
                over = worst(len(batch.rows) + len(admit) + 1, longest) > self.kv_budget > 0
                if (batch.rows or admit) and over:
                    break
                admit.append(queue.popleft())
            if admit:
                longest = max([batch.widest, *(len(prompts[i]) for i in admit)])
                self.store.reserve(worst(len(batch.rows) + len(admit), longest))
                kvs = self._prompt_kvs([prompts[i] for i in admit], [bounds[i] for i in admit])
                gens = [torch.Generator().manual_seed(int(seeds[i])) for i in admit] if self.do_sample else []
                batch.admit(admit, [prompts[i] for i in admit], kvs, gens)
                del kvs
            done = batch.step(self.eos_ids, max_new_tokens)
            if done:
                self.store.reserve(worst(len(batch.rows), batch.widest))
            for i, row in done:
                texts[i] = self._finish(row, max_new_tokens)
        self.store.reserve(0)
        return [t if t is not None else Generated("", "stop", 0) for t in texts]

    # -- score mode ----------------------------------------------------------------------------------------------

    def _continuation(self, option: str) -> list[int]:
        """Token ids of the answer after :data:`ANSWER_PREFIX` for ``option``, i.e. ``<option>"}``."""
        if option not in self._option_ids:
            text = choice_json(option)
            if not text.startswith(ANSWER_PREFIX):
                raise ValueError(f"choice_json({option!r}) does not start with {ANSWER_PREFIX!r}")
            ids = self.tokenizer(text[len(ANSWER_PREFIX) :], add_special_tokens=False)["input_ids"]
            self._option_ids[option] = list(ids)
        return self._option_ids[option]

    def _score(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        """Score mode: p(target) per request, averaged over option orders; choice sampled from it."""
        prefixes, bounds = [], []
        for r in requests:
            first, cut = self._render_cut(r.messages, ANSWER_PREFIX, keep=r.continues, enable_thinking=False)
            rest = [self._render(r.swapped, ANSWER_PREFIX, enable_thinking=False)] if r.swapped else []
            prefixes.append([first, *rest])
            bounds.append(cut)
        logps = self.option_logprobs(prefixes, [r.options for r in requests], bounds)
        return [score_decision(r, pairs) for r, pairs in zip(requests, logps, strict=True)]

    @torch.inference_mode()
    @_native_gqa
    def option_logprobs(
        self,
        prefixes: Sequence[Sequence[list[int]]],
        options: Sequence[tuple[str, str]],
        bounds: Sequence[Sequence[int]] | None = None,
        continuations: Sequence[tuple[list[int], list[int]]] | None = None,
    ) -> list[list[tuple[float, float]]]:
        """Log-likelihood of each option's continuation after each of a request's prefixes (token ids).

        ``prefixes[i]`` holds request ``i``'s prefixes (one per option order); the result holds one
        ``(logp(options[i][0]), logp(options[i][1]))`` pair per prefix. One forward pass per group: each request is
        one row packing its trunk (its prefixes' common start) once, then every prefix's tail and both options'
        tokens as branches of a tree.

        With ``bounds[i]`` (where the messages of request ``i``'s first prefix end), the KV of those messages comes
        from :meth:`_canonical` and the row holds only what follows: each prefix's branch starts after the kept
        messages, or where it leaves the first prefix, seeing only the kept KV before that point. Identical requests
        are computed once.

        ``continuations[i]`` (token ids) replaces the two options' answers ``<option>"}`` of request ``i`` (the tool
        testbed scores two tool calls this way).
        """
        bounds = [list(b) for b in bounds] if bounds is not None else [[] for _ in prefixes]
        if continuations is None:
            continuations = [(self._continuation(o[0]), self._continuation(o[1])) for o in options]
        keys = [
            (tuple(map(tuple, ps)), tuple(map(tuple, c)), tuple(b))
            for ps, c, b in zip(prefixes, continuations, bounds, strict=True)
        ]
        unique = list(dict.fromkeys(keys)) if self.prefix_cache else keys
        at = {k: j for j, k in enumerate(unique)}
        trunks = [min(_common_length(ps), min(len(p) for p in ps) - 1) for ps, _, _ in unique]
        conts = [[list(c) for c in cs] for _, cs, _ in unique]
        sizes = [len(ps[0]) + sum(len(p) - t for p in ps[1:]) for (ps, _, _), t in zip(unique, trunks, strict=True)]
        result: list[list[tuple[float, float]]] = [[] for _ in unique]
        head = self.model.get_output_embeddings()
        for group in self._groups(sizes):
            trees, rows = [], []
            for i in group:
                ps, _, cut = unique[i]
                ps = [list(p) for p in ps]
                c, kv = self._canonical(ps[0], [b for b in cut if b < len(ps[0])])
                if kv is None:
                    tree = _Tree.build(ps, trunks[i], conts[i])
                else:  # branches after the kept messages: the first prefix's at c, the others where they leave it
                    tree = _Tree.build(ps, trunks[i], conts[i], starts=[c, *(min(c, trunks[i]) for _ in ps[1:])])
                trees.append(tree)
                rows.append(_Row(kv, tree.ids, tree.positions, tree.mask(), tree.sees))
                self.store.stats.computed += len(tree.ids)
            hidden, _, _, width = self._extend(rows, keep_cache=False)
            for row, (i, t) in enumerate(zip(group, trees, strict=True)):
                off = width - len(t.ids)
                reads = torch.tensor([off + r for r in t.reads], device=self.device)
                logp = torch.log_softmax(head(hidden[row, reads]).float(), -1)
                picked = logp.gather(-1, torch.tensor(t.targets, device=self.device)[:, None]).squeeze(-1)
                totals = [float(picked[a:b].sum()) for a, b in t.spans]
                result[i] = [(totals[k], totals[k + 1]) for k in range(0, len(totals), 2)]
        return [result[at[k]] for k in keys]


@dataclass
class _Row:
    """One row of :meth:`HFPolicy._extend`: reused KV, new tokens, their positions, and their mutual mask."""

    past: torch.Tensor | None  # [layers, 2, kv_heads, c, head_dim]
    ids: list[int]
    positions: list[int]
    mask: torch.Tensor | None = None  # [t, t] bool; None = causal
    sees: list[int] | None = None  # per new token: how many past columns it sees; None = all


class _Running:
    """The running batch of continuous decoding: a KV cache whose rows are left-padded to one width, the
    next token each row feeds, its position, and the answer so far."""

    def __init__(self, policy: HFPolicy) -> None:
        self.policy = policy
        self.rows: list[int] = []
        self.prompts: list[list[int]] = []
        self.out: list[list[int]] = []
        self.gens: list[torch.Generator] = []
        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.bool, device=policy.device)
        self.pos = torch.zeros(0, dtype=torch.long, device=policy.device)
        self.next = torch.zeros(0, dtype=torch.long, device=policy.device)

    @property
    def widest(self) -> int:
        """The longest prompt running (0 when none)."""
        return max((len(p) for p in self.prompts), default=0)

    def admit(
        self,
        rows: list[int],
        prompts: list[list[int]],
        kvs: list[torch.Tensor],
        gens: list[torch.Generator],
    ) -> None:
        """Add prompts whose KV (all but the last token) is ready; their last token is fed at the next step."""
        dev = self.policy.device
        width = max([self.mask.shape[1], *(len(p) - 1 for p in prompts)])
        new = self.policy._zeros_kv(len(rows), width)
        mask = torch.zeros((len(rows), width), dtype=torch.bool, device=dev)
        for j, (p, kv) in enumerate(zip(prompts, kvs, strict=True)):
            if len(p) > 1:
                new[:, :, j, :, width - len(p) + 1 :] = kv
                mask[j, width - len(p) + 1 :] = True
        if self.cache is None:
            self.cache = _as_cache(new)
            self.mask = mask
        else:
            grow = width - self.mask.shape[1]
            for layer_idx, layer in enumerate(self.cache.layers):
                k, v = layer.keys, layer.values
                if grow:
                    pad = torch.zeros((k.shape[0], k.shape[1], grow, k.shape[3]), dtype=k.dtype, device=dev)
                    k, v = torch.cat([pad, k], 2), torch.cat([pad, v], 2)
                layer.keys = torch.cat([k, new[layer_idx, 0]], 0)
                layer.values = torch.cat([v, new[layer_idx, 1]], 0)
            old = torch.zeros((self.mask.shape[0], grow), dtype=torch.bool, device=dev)
            self.mask = torch.cat([torch.cat([old, self.mask], 1), mask], 0)
        self.rows += rows
        self.prompts += prompts
        self.out += [[] for _ in rows]
        self.gens += gens
        self.pos = torch.cat([self.pos, torch.tensor([len(p) - 1 for p in prompts], device=dev)])
        self.next = torch.cat([self.next, torch.tensor([p[-1] for p in prompts], device=dev)])

    def step(self, eos: Sequence[int], max_new_tokens: int) -> list[tuple[int, list[int]]]:
        """Feed one token per row; return ``(request, answer)`` for every row that finished, and drop those rows."""
        p = self.policy
        n = len(self.rows)
        attn = torch.cat([self.mask, torch.ones((n, 1), dtype=torch.bool, device=p.device)], 1)
        logits = p.model(
            input_ids=self.next[:, None],
            position_ids=self.pos[:, None],
            attention_mask=attn.long(),
            use_cache=True,
            logits_to_keep=1,
            **{p._cache_kw: self.cache},
        ).logits[:, -1]
        if p.do_sample:
            tokens = _draw(logits, self.gens, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p)[:, 0]
        else:
            tokens = logits.float().argmax(-1)
        self.mask, self.pos, self.next = attn, self.pos + 1, tokens
        done, stop = [], set(eos)
        for b, tok in enumerate(tokens.tolist()):
            self.out[b].append(tok)
            if tok in stop or len(self.out[b]) >= max_new_tokens:
                done.append((self.rows[b], self.out[b]))
        if done:
            finished = {d[0] for d in done}
            keep = [b for b, r in enumerate(self.rows) if r not in finished]
            self._select(keep)
        return done

    def _select(self, keep: list[int]) -> None:
        """Keep only rows ``keep``; cut the columns no remaining row uses."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.policy.device)
        for name in ("rows", "prompts", "out"):
            setattr(self, name, [getattr(self, name)[b] for b in keep])
        self.gens = [self.gens[b] for b in keep] if self.gens else []
        if not keep:
            self.cache, self.mask = None, torch.zeros((0, 0), dtype=torch.bool, device=self.policy.device)
            self.pos, self.next = self.pos[:0], self.next[:0]
            return
        self.mask, self.pos, self.next = self.mask[idx], self.pos[idx], self.next[idx]
        used = self.mask.any(0).nonzero()
        cut = int(used[0, 0]) if len(used) else self.mask.shape[1]
        self.mask = self.mask[:, cut:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[idx, :, cut:], layer.values[idx, :, cut:]


def _as_cache(kv: torch.Tensor, *, filled: int | None = None) -> Any:
    """A :class:`DynamicCache` over a batch KV ``[layers, 2, rows, kv_heads, width, head_dim]`` (views, no copy).

    With ``filled``, only the first ``filled`` columns hold KV and the rest is room: a forward pass writes its new
    tokens' KV there in place, so ``kv`` holds all of it afterwards (no concatenation, no copy of the past)."""
    cache = DynamicCache(ddp_cache_data=[(kv[i, 0, :, :, :0], kv[i, 1, :, :, :0]) for i in range(kv.shape[0])])
    if filled is not None:
        cache.layers = [_InPlaceLayer(kv[i, 0], kv[i, 1], filled) for i in range(kv.shape[0])]
        return cache
    for i, layer in enumerate(cache.layers):
        layer.keys, layer.values = kv[i, 0], kv[i, 1]
    return cache


class _InPlaceLayer(DynamicLayer):
    """A :class:`DynamicLayer` over preallocated ``[rows, kv_heads, width, head_dim]`` tensors whose first ``filled``
    columns hold KV: :meth:`update` writes the new columns in place instead of concatenating."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
        super().__init__()
        self.room = (keys, values)
        self.filled, self.device, self.is_initialized = filled, keys.device, True
        self.keys, self.values = keys[..., :filled, :], values[..., :filled, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        end = self.filled + key_states.shape[-2]
        keys, values = self.room
        keys[..., self.filled : end, :] = key_states
        values[..., self.filled : end, :] = value_states
        self.filled, self.keys, self.values = end, keys[..., :end, :], values[..., :end, :]
        return self.keys, self.values


def _take(cache: Any, row: int, cols: torch.Tensor) -> torch.Tensor:
    """Row ``row``'s KV at columns ``cols`` of a batch cache, as ``[layers, 2, kv_heads, len(cols), head_dim]``."""
    return torch.stack([torch.stack((layer.keys[row][:, cols], layer.values[row][:, cols])) for layer in cache.layers])


def _plain_kv_cache(model: Any) -> bool:
    """Whether the model's KV cache is one plain, full-length tensor pair per layer (no sliding windows, no
    recurrent state, a decoder to call), the shape prefix reuse and continuous batching handle."""
    try:
        layers = DynamicCache(config=model.config).layers
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers) and bool(model.get_decoder())
    except Exception:  # any model transformers cannot describe this way simply gets no reuse
        return False


def _kv_bytes_per_token(model: Any) -> int:
    """Bytes of KV cache one token costs across all layers (0 when the config does not say)."""
    try:
        cfg = model.config.get_text_config(decoder=True)
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        size = next(model.parameters()).element_size()
        return int(cfg.num_hidden_layers * 2 * heads * dim * size)
    except (AttributeError, TypeError, StopIteration):
        return 0


def _plain_processing(model: Any, config: Any) -> bool:
    """Whether ``generate`` would add no logits processor of its own to this config (continuous batching applies
    only temperature, top-k and top-p, through the seeded sampler)."""
    try:
        return len(model._get_logits_processor(generation_config=config, input_ids_seq_length=1)) == 0
    except Exception:  # unknown internals: keep generate
        return False


@dataclass
class _Tree:
    """One request packed into one row: the shared trunk once, then for each prefix its tail followed by both
    options' tokens, each branch seeing only its ancestors (a tree attention mask). One forward pass scores all."""

    ids: list[int]
    positions: list[int]
    segment: list[int]
    parents: list[int]  # parent segment of each segment (-1 for the trunk)
    reads: list[int]  # row index whose output predicts each option token
    targets: list[int]  # the option token predicted there
    spans: list[tuple[int, int]]  # per (prefix, option): its slice of reads/targets

    sees: list[int] | None = None  # per token: how many past columns it sees (None: no past, or all of it)

    @classmethod
    def build(
        cls,
        prefixes: Sequence[list[int]],
        trunk: int,
        conts: Sequence[list[int]],
        *,
        starts: Sequence[int] | None = None,
    ) -> _Tree:
        """Pack the prefixes (sharing ``trunk`` tokens) and options. With ``starts``, the row has no trunk: prefix
        ``i``'s branch begins at token ``starts[i]`` and sees the first ``starts[i]`` tokens of the past."""
        first = trunk if starts is None else 0
        ids, positions = list(prefixes[0][:first]), list(range(first))
        segment, parents = [0] * first, [-1]
        sees: list[int] | None = None if starts is None else []
        reads: list[int] = []
        targets: list[int] = []
        spans: list[tuple[int, int]] = []
        for n, prefix in enumerate(prefixes):
            begin = trunk if starts is None else starts[n]
            tail = prefix[begin:]
            parents.append(0)
            tail_seg = len(parents) - 1
            ids += tail
            positions += range(begin, begin + len(tail))
            segment += [tail_seg] * len(tail)
            last_tail = len(ids) - 1
            for cont in conts:
                parents.append(tail_seg)
                seg = len(parents) - 1
                start = len(reads)
                for k, tok in enumerate(cont):
                    reads.append(last_tail if k == 0 else len(ids) - 1)
                    targets.append(tok)
                    if k < len(cont) - 1:  # the last option token is only predicted, never read from
                        ids.append(tok)
                        positions.append(len(prefix) + k)
                        segment.append(seg)
                spans.append((start, len(reads)))
            if sees is not None:
                sees += [begin] * (len(ids) - len(sees))
        return cls(ids, positions, segment, parents, reads, targets, spans, sees)

    def mask(self) -> torch.Tensor:
        """``[q, kv]`` True where token q may attend to token kv: kv is earlier and on q's branch."""
        n_seg = len(self.parents)
        anc = torch.zeros((n_seg, n_seg), dtype=torch.bool)
        for s in range(n_seg):
            a = s
            while a != -1:
                anc[s, a] = True
                a = self.parents[a]
        seg = torch.tensor(self.segment)
        causal = torch.ones((len(seg), len(seg)), dtype=torch.bool).tril()
        return causal & anc[seg][:, seg]


def _common_length(seqs: Sequence[list[int]]) -> int:
    """Length of the longest common start of token id lists."""
    first, n = seqs[0], min(len(s) for s in seqs)
    return next((k for k in range(n) if any(s[k] != first[k] for s in seqs[1:])), n)


def _looks_local(source: str) -> bool:
    """Whether a model source is a filesystem path rather than a hub id (``owner/name``)."""
    return source.startswith(("/", ".", "~")) or "\\" in source or Path(source).exists()


def _as_list(token_ids: int | list[int] | None) -> list[int]:
    """A token id, a list of them, or None, as a list."""
    if token_ids is None:
        return []
    return [int(t) for t in token_ids] if isinstance(token_ids, (list, tuple)) else [int(token_ids)]


def _left_pad(
    seqs: Sequence[list[int]], pad_id: int, device: torch.device, multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists (to a multiple of ``multiple``) into ``(input_ids, attention_mask)``."""
    width = -(-max(len(s) for s in seqs) // multiple) * multiple
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask
