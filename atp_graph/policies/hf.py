"""A :class:`~atp_graph.policies.base.Policy` over a local Hugging Face causal chat model.

Generate mode renders every conversation with the tokenizer's chat template, sorts the prompts by length, cuts
them into groups of similar length, left-pads each group and calls ``generate`` once per group. Sampling draws
each row from its own generator seeded by the request's seed, so an answer does not depend on which other
requests share its batch.

Score mode reads the model's probability of each option instead of sampling an answer: the log-likelihood of
the answer's continuation ``<option>"}`` after the assistant prefix ``{"choice": "``, averaged over the two
option orders (``request.messages`` and ``request.swapped``) to cancel the model's position bias. No prefix
token runs twice: the two orders differ only near the end, so each request's common start (its trunk) runs
ONCE in a batched forward pass that keeps its KV cache; the cache is then gathered for one row per
(order, option), and a second batched pass runs each order's remaining tokens plus the option's tokens.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from ..parsing import choice_json, parse_choice
from .base import Decision, DecisionMode, DecisionRequest, Message, ModelError

__all__ = ["ANSWER_PREFIX", "HFPolicy", "resolve_device", "resolve_dtype"]

ANSWER_PREFIX = '{"choice": "'
"""The assistant text score mode puts before each option."""

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


class _SeededSampler(LogitsProcessor):
    """Sample each row from its own seeded generator; return logits that only allow the drawn token.

    ``generate`` then runs greedily and picks exactly the drawn token. Temperature, top-k and top-p follow the
    Hugging Face semantics; one uniform number per row per step comes from that row's CPU generator.
    """

    def __init__(self, seeds: Sequence[int], *, temperature: float, top_k: int | None, top_p: float) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits, order = torch.sort(scores.float() / max(self.temperature, 1e-5), dim=-1, descending=True)
        if self.top_k:
            logits[:, self.top_k :] = -float("inf")
        probs = torch.softmax(logits, dim=-1)
        if self.top_p < 1.0:
            before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
            probs = probs.masked_fill(before > self.top_p, 0.0)  # keeps at least the top token
        cdf = probs.cumsum(-1)
        u = torch.stack([torch.rand((), generator=g) for g in self.generators]).to(cdf.device)
        rank = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp(max=cdf.shape[-1] - 1)
        token = order.gather(-1, rank)
        return torch.full_like(scores, -float("inf")).scatter(-1, token, 0.0)


class Generated(NamedTuple):
    """One generated answer: its text, why it ended (``stop``: end of sequence; ``length``: the budget ran out)
    and its token count."""

    text: str
    finish: str
    tokens: int


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
        compile: Use a static KV cache so ``generate`` compiles its decode step (GPU only; off by default).
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
            return self._score(requests)
        if mode != "generate":
            raise ValueError(f"unknown decision mode {mode!r}; use 'generate' or 'score'")
        prompts = [self._render(r.messages) for r in requests]
        outs = self._generate(prompts, [r.seed for r in requests], self.max_new_tokens)
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
        prompts = [self._render(c) for c in conversations]
        outs = self._generate(prompts, list(seeds) if seeds is not None else [0] * len(prompts), max_new_tokens)
        return [o.text for o in outs]

    # -- generate mode -------------------------------------------------------------------------------------------

    def _render(self, messages: Sequence[Message], suffix: str = "", **template_kwargs: Any) -> list[int]:
        """Token ids of the chat-templated conversation with the assistant turn opened, plus ``suffix``."""
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=False, **template_kwargs
        )
        return list(self.tokenizer(text + suffix, add_special_tokens=False)["input_ids"])

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

    @torch.inference_mode()
    def _generate(self, prompts: list[list[int]], seeds: list[int], max_new_tokens: int) -> list[Generated]:
        """One ``generate`` call per length group; the new tokens' text and why they ended, in the prompts' order."""
        texts = [Generated("", "stop", 0)] * len(prompts)
        config = copy.deepcopy(self._gen_config)
        config.max_new_tokens = max_new_tokens
        multiple = 64 if self.compile else 1  # fewer distinct shapes to compile
        for group in self._groups([len(p) for p in prompts]):
            ids, mask = _left_pad([prompts[i] for i in group], self.pad_id, self.device, multiple)
            processors = LogitsProcessorList()
            if self.do_sample:
                sampler = _SeededSampler(
                    [seeds[i] for i in group], temperature=self.temperature, top_k=self.top_k, top_p=self.top_p
                )
                processors.append(sampler)
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, generation_config=config, logits_processor=processors
            )
            for i, row in zip(group, out[:, ids.shape[1] :].tolist(), strict=True):
                end = next((k for k, t in enumerate(row) if t in self.eos_ids), None)
                finish = "stop" if end is not None or len(row) < max_new_tokens else "length"
                end = len(row) if end is None else end
                texts[i] = Generated(self.tokenizer.decode(row[:end], skip_special_tokens=True), finish, end)
        return texts

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
        prefixes = [
            [self._render(conv, ANSWER_PREFIX, enable_thinking=False) for conv in (r.messages, r.swapped) if conv]
            for r in requests
        ]
        logps = self.option_logprobs(prefixes, [r.options for r in requests])
        decisions = []
        for r, pairs in zip(requests, logps, strict=True):
            t = r.options.index(r.target)
            ps = [float(torch.softmax(torch.tensor(pair, dtype=torch.float64), 0)[t]) for pair in pairs]
            p_target = sum(ps) / len(ps)
            draw = torch.rand((), generator=torch.Generator().manual_seed(int(r.seed)), dtype=torch.float64)
            choice = r.target if float(draw) < p_target else r.options[1 - t]
            extra = {"p_target_original": ps[0], "argmax_is_target": float(p_target > 0.5)}
            if len(ps) > 1:
                extra["p_target_swapped"] = ps[1]
            decisions.append(Decision(text=choice_json(choice), choice=choice, p_target=p_target, extra=extra))
        return decisions

    @torch.inference_mode()
    def option_logprobs(
        self, prefixes: Sequence[Sequence[list[int]]], options: Sequence[tuple[str, str]]
    ) -> list[list[tuple[float, float]]]:
        """Log-likelihood of each option's continuation after each of a request's prefixes (token ids).

        ``prefixes[i]`` holds request ``i``'s prefixes (one per option order); the result holds one
        ``(logp(options[i][0]), logp(options[i][1]))`` pair per prefix. Two forward passes per group: the
        request's trunk (its prefixes' common start) runs once and keeps its KV cache; the cache is then
        gathered for one row per (prefix, option), which runs the rest of the prefix plus the option's tokens.
        """
        trunks = [min(_common_length(ps), min(len(p) for p in ps) - 1) for ps in prefixes]
        result: list[list[tuple[float, float]]] = [[] for _ in prefixes]
        trees = [
            _Tree.build(ps, trunks[i], [self._continuation(o) for o in options[i]]) for i, ps in enumerate(prefixes)
        ]
        base, head = self.model.get_decoder(), self.model.get_output_embeddings()
        for group in self._groups([len(t.ids) for t in trees]):
            width = max(len(trees[i].ids) for i in group)
            ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
            pos = torch.zeros((len(group), width), dtype=torch.long)
            allowed = torch.eye(width, dtype=torch.bool).repeat(len(group), 1, 1)  # pads see only themselves
            for row, i in enumerate(group):
                t, off = trees[i], width - len(trees[i].ids)
                ids[row, off:] = torch.tensor(t.ids)
                pos[row, off:] = torch.tensor(t.positions)
                allowed[row, off:, off:] = t.mask()
            hidden = base(
                input_ids=ids.to(self.device),
                position_ids=pos.to(self.device),
                attention_mask=allowed[:, None].to(self.device),
                use_cache=False,
            ).last_hidden_state
            for row, i in enumerate(group):
                t, off = trees[i], width - len(trees[i].ids)
                reads = torch.tensor([off + r for r in t.reads], device=self.device)
                logp = torch.log_softmax(head(hidden[row, reads]).float(), -1)
                picked = logp.gather(-1, torch.tensor(t.targets, device=self.device)[:, None]).squeeze(-1)
                totals = [float(picked[a:b].sum()) for a, b in t.spans]
                result[i] = [(totals[k], totals[k + 1]) for k in range(0, len(totals), 2)]
        return result


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

    @classmethod
    def build(cls, prefixes: Sequence[list[int]], trunk: int, conts: Sequence[list[int]]) -> _Tree:
        ids, positions, segment, parents = list(prefixes[0][:trunk]), list(range(trunk)), [0] * trunk, [-1]
        reads: list[int] = []
        targets: list[int] = []
        spans: list[tuple[int, int]] = []
        for prefix in prefixes:
            tail = prefix[trunk:]
            parents.append(0)
            tail_seg = len(parents) - 1
            ids += tail
            positions += range(trunk, trunk + len(tail))
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
        return cls(ids, positions, segment, parents, reads, targets, spans)

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
