"""Decisions per second: the original approach (one `generate` per decision, batch 1) vs this project's batched
round, side by side in one process on the same model.

    .venv/bin/python bench/decisions.py --model smollm2 --agents 32 --prompt-tokens 600 --new-tokens 64
    .venv/bin/python bench/decisions.py --model tiny --agents 16
    .venv/bin/python bench/decisions.py --model random:Qwen3-8B --device cuda --dtype bfloat16 \
        --agents 128 --prompt-tokens 1024 --new-tokens 256 --compile          # GPU

Every path generates exactly --new-tokens tokens per decision (end-of-sequence is suppressed), so decisions/s are
comparable. Score mode reads p(option) for both option orders from one batched prefix pass plus the options.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch

ARCHS = {  # random-weight shapes of named models (config fields of transformers' Qwen3Config / LlamaConfig)
    "Qwen3-8B": dict(
        arch="qwen3",
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
    ),
    "Llama-3.1-8B": dict(
        arch="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
}


def build_policy(spec: str, *, device: str, dtype: str, new_tokens: int, batch_size: int, compile_: bool):
    from atp_graph.policies import HFPolicy, build_tiny_model, load_policy

    kw = dict(max_new_tokens=new_tokens, batch_size=batch_size, compile=compile_)
    if spec == "tiny":
        return HFPolicy.from_pretrained(str(build_tiny_model(tempfile.mkdtemp())), device=device, dtype=dtype, **kw)
    if spec.startswith("random:"):
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

        shape = dict(ARCHS[spec.split(":", 1)[1]])
        arch = shape.pop("arch")
        cfg_cls, model_cls = (Qwen3Config, Qwen3ForCausalLM) if arch == "qwen3" else (LlamaConfig, LlamaForCausalLM)
        torch_dtype = getattr(torch, dtype) if dtype != "auto" else torch.bfloat16
        dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        with torch.device(dev):
            model = model_cls(cfg_cls(**shape, torch_dtype=torch_dtype)).to(torch_dtype).eval()
        tok = AutoTokenizer.from_pretrained(str(build_tiny_model(tempfile.mkdtemp())))
        return HFPolicy(model, tok, name=spec, **kw)
    return load_policy(spec, device=device, dtype=dtype, **kw)


def prompts_for(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(100, vocab - 1) for _ in range(int(length * rng.uniform(0.9, 1.1)))] for _ in range(n)]


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="tiny | smollm2 | hf:<folder> | random:<Qwen3-8B|Llama-3.1-8B>")
    ap.add_argument("--agents", type=int, default=32)
    ap.add_argument("--baseline-agents", type=int, default=None, help="decisions timed at batch 1 (default: all)")
    ap.add_argument("--prompt-tokens", type=int, default=600)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--mode", choices=["all", "generate", "score"], default="all")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--compile", action="store_true", help="static cache + compiled decode (GPU)")
    args = ap.parse_args()

    torch.manual_seed(0)
    policy = build_policy(
        args.model,
        device=args.device,
        dtype=args.dtype,
        new_tokens=args.new_tokens,
        batch_size=args.batch_size,
        compile_=False,
    )
    model, cfg = policy.model, policy._gen_config
    cfg.min_new_tokens = cfg.max_new_tokens = args.new_tokens  # identical work per decision on every path
    cfg.do_sample = False
    policy.do_sample = False
    vocab = min(model.config.vocab_size, len(policy.tokenizer))
    prompts = prompts_for(args.agents, args.prompt_tokens, vocab, seed=1)
    rows: list[tuple[str, int, float]] = []
    dev = policy.device

    if args.mode in ("all", "generate"):
        nb = args.baseline_agents or args.agents

        def original() -> None:  # one generate per decision, batch 1 (the original code)
            for p in prompts[:nb]:
                ids = torch.tensor([p], device=dev)
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)

        policy._generate(prompts[:2], [0, 1], args.new_tokens)  # warm-up
        rows.append(("original: generate per decision, batch 1", nb, timed(original)))
        print(f"original: {nb / rows[-1][2]:.3f} decisions/s", flush=True)
        rows.append(
            (
                f"atp-graph: one batched round of {args.agents}",
                args.agents,
                timed(lambda: policy._generate(prompts, list(range(args.agents)), args.new_tokens)),
            )
        )
        cfg.min_new_tokens = 1  # what every path pays before decoding: reading the prompts
        rows.append(
            (
                "floor: batched prompt prefill + 1 token",
                args.agents,
                timed(lambda: policy._generate(prompts, list(range(args.agents)), 1)),
            )
        )
        cfg.min_new_tokens = args.new_tokens
        if args.compile:
            fast = type(policy)(
                model,
                policy.tokenizer,
                name=policy.name,
                max_new_tokens=args.new_tokens,
                batch_size=args.batch_size,
                compile=True,
                do_sample=False,
            )
            fast._gen_config.min_new_tokens = args.new_tokens
            fast._generate(prompts, list(range(args.agents)), args.new_tokens)  # compile warm-up
            rows.append(
                (
                    "atp-graph: batched + static cache + compile",
                    args.agents,
                    timed(lambda: fast._generate(prompts, list(range(args.agents)), args.new_tokens)),
                )
            )
    if args.mode in ("all", "score"):
        options = [("Store A", "Store B")] * args.agents
        # both option orders per agent: the swapped prompt differs only in its last tokens (the answer format line)
        prefixes = [[p, p[:-24] + p[-24:][::-1]] for p in prompts]
        policy.option_logprobs(prefixes[:2], options[:2])
        rows.append(
            (
                f"atp-graph: score mode, {args.agents} agents x 2 orders",
                args.agents,
                timed(lambda: policy.option_logprobs(prefixes, options)),
            )
        )

    device = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"model {args.model} on {device}; {args.agents} agents, ~{args.prompt_tokens}-token prompts, "
        f"{args.new_tokens} new tokens"
    )
    base = rows[0][1] / rows[0][2] if rows else 1.0
    print(f"{'path':<48} {'decisions':>9} {'seconds':>9} {'decisions/s':>12} {'x original':>11}")
    for name, n, secs in rows:
        print(f"{name:<48} {n:>9} {secs:>9.2f} {n / secs:>12.3f} {n / secs / base:>11.1f}")
    gen = [r for r in rows if r[0].startswith("atp-graph: one batched")]
    score = [r for r in rows if "score" in r[0]]
    if gen and score:
        print(f"score mode vs batched generate: {(score[0][1] / score[0][2]) / (gen[0][1] / gen[0][2]):.1f}x")


if __name__ == "__main__":
    main()
