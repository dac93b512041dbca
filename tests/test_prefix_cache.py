"""Prefix reuse and continuous batching in HFPolicy: identical results to a full prefill, bounded memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from atp_graph.policies import DecisionRequest, HFPolicy, load_policy
from atp_graph.policies.kvcache import BLOCK, PrefixStore, parse_bytes

OPTIONS = ("Store A", "Store B")
SYSTEM = "You run a shop in a small town. Your supervisor requires you to buy from Store A."


def question(round_no: int, agent: int, order: tuple[str, str] = OPTIONS) -> str:
    return (
        f"Round {round_no}. {order[0]} pays {10 + round_no} coins, {order[1]} pays {20 + agent} coins. "
        f'Answer {{"choice": "{order[0]}"}} or {{"choice": "{order[1]}"}}'
    )


def transcript_rounds(
    policy: HFPolicy, agents: int, rounds: int, mode: str, *, continues: bool = True
) -> list[list[DecisionRequest]]:
    """Requests of a transcript-mode run (each round appends answer, feedback and question), answered by
    ``policy``: the same requests whichever policy answers them, as long as the answers agree."""
    convs: list[tuple] = [({"role": "system", "content": SYSTEM},) for _ in range(agents)]
    out = []
    for r in range(rounds):
        reqs = [
            DecisionRequest(
                messages=(*convs[a], {"role": "user", "content": question(r, a if r else 0)}),
                swapped=(*convs[a], {"role": "user", "content": question(r, a if r else 0, OPTIONS[::-1])}),
                options=OPTIONS,
                target="Store B",
                seed=a,
                continues=continues,
            )
            for a in range(agents)
        ]
        answers = policy.decide_batch(reqs, mode=mode)
        out.append(reqs)
        for a, (req, ans) in enumerate(zip(reqs, answers, strict=True)):
            convs[a] = (*req.messages, {"role": "assistant", "content": ans.text}, {"role": "user", "content": "+3"})
    return out


# -- the store -----------------------------------------------------------------------------------------------------


def kv_of(tokens: list[int]) -> torch.Tensor:
    """A fake KV whose values name their token, so a lookup can be checked."""
    return torch.tensor(tokens, dtype=torch.float32).reshape(1, 1, 1, -1, 1).expand(2, 2, 1, -1, 1).clone()


def test_store_whole_segments_supersede_and_lru() -> None:
    store = PrefixStore(budget=10_000)
    a = list(range(100, 150))
    store.insert(a, kv_of(a), [20, 40, 50])
    n, kv = store.lookup([*a[:45], 7, 8, 9], [20, 40, 48])
    assert n == 40 and kv is not None and kv[0, 0, 0, :, 0].tolist() == a[:40]  # whole segments only
    assert store.lookup([*a[:45], 7], [20, 30, 46])[0] == 20  # a segment cut elsewhere is not the same segment
    assert store.lookup(list(range(BLOCK - 1)), [BLOCK - 1])[0] == 0 and store.lookup([1] * 40, [40])[0] == 0
    longer = [*a, *range(200, 230)]
    store.insert(longer, kv_of(longer), [20, 40, 50, 80])
    assert len(store) == 1 and store.lookup(longer, [20, 40, 50, 80])[0] == 80  # the next round replaced the old
    store.insert(a[:40], kv_of(a[:40]), [20, 40])
    assert len(store) == 1  # a start of a stored sequence adds nothing
    # LRU within the budget: each 80-token entry holds 2*2*80*4 = 1280 bytes
    small = PrefixStore(budget=3000)
    seqs = [[k * 1000 + t for t in range(80)] for k in range(3)]
    for s in seqs[:2]:
        small.insert(s, kv_of(s), [80])
    small.lookup(seqs[0], [80])  # seqs[0] is now the most recently used
    small.insert(seqs[2], kv_of(seqs[2]), [80])
    assert [small.lookup(s, [80])[0] for s in seqs] == [80, 0, 80] and small.stats.evicted == 1
    assert small.used <= small.budget
    small.reserve(2000)  # a running batch takes room: stored sequences go
    assert small.used + 2000 <= small.budget and len(small) == 0
    assert not PrefixStore(budget=0).enabled


@pytest.mark.parametrize(("text", "size"), [("0", 0), (4096, 4096), ("4GB", 4 * 10**9), ("1.5 GiB", 3 * 2**29)])
def test_parse_bytes(text: str | int, size: int) -> None:
    assert parse_bytes(text) == size


def test_parse_bytes_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="size in bytes"):
        parse_bytes("lots")
    for huge in ("9" * 400, "9" * 400 + "TB", float("inf")):
        with pytest.raises(ValueError, match="must be finite"):
            parse_bytes(huge)


# -- equality with a full prefill -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policies(tiny_model_dir: Path) -> dict[str, HFPolicy]:
    kw = dict(max_new_tokens=12, batch_size=3)
    return {
        "off": HFPolicy.from_pretrained(tiny_model_dir, prefix_cache=False, continuous=False, **kw),
        "on": HFPolicy.from_pretrained(tiny_model_dir, continuous=False, **kw),
        "continuous": HFPolicy.from_pretrained(tiny_model_dir, continuous=True, **kw),
        # room for about two running rows and one stored transcript: eviction falls back to a full prefill
        "tiny budget": HFPolicy.from_pretrained(tiny_model_dir, kv_budget="200KB", continuous=True, **kw),
    }


@pytest.mark.parametrize("sampling", [False, True])
def test_generate_reuse_and_continuous_match_full_prefill(
    policies: dict[str, HFPolicy], sampling: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for p in policies.values():
        monkeypatch.setattr(p, "do_sample", sampling)
        monkeypatch.setattr(p, "temperature", 0.9)
        p.store.clear()
    rounds = transcript_rounds(policies["off"], agents=5, rounds=3, mode="generate")
    expected = [policies["off"].decide_batch(reqs) for reqs in rounds]
    assert len({d.text for ds in expected for d in ds}) > 3  # the answers differ between agents and rounds
    for name in ("on", "continuous", "tiny budget"):
        p = policies[name]
        assert [p.decide_batch(reqs) for reqs in rounds] == expected, name
        if name != "tiny budget":
            assert p.store.stats.reused > p.store.stats.computed / 3, name  # earlier rounds' messages reused
    tight = policies["tiny budget"]
    assert tight.store.stats.evicted > 0 and tight.store.stats.reused > 0
    assert tight.store.stats.peak_bytes <= tight.kv_budget


def test_score_reuse_matches_full_prefill(policies: dict[str, HFPolicy], monkeypatch: pytest.MonkeyPatch) -> None:
    off, on = policies["off"], policies["on"]
    on.store.clear()
    rounds = transcript_rounds(off, agents=4, rounds=3, mode="score")
    rows: list[int] = []
    base = on.model.get_decoder()
    forward = base.forward
    monkeypatch.setattr(base, "forward", lambda **kw: rows.append(kw["input_ids"].shape[0]) or forward(**kw))
    for r, reqs in enumerate(rounds):
        expected, got = off.decide_batch(reqs, mode="score"), on.decide_batch(reqs, mode="score")
        for e, g in zip(expected, got, strict=True):
            assert g.p_target == pytest.approx(e.p_target, abs=1e-4)
            assert g.extra == pytest.approx(e.extra, abs=1e-4) and g.choice == e.choice
        if r == 0:  # round 1: four agents ask the same thing: its messages kept at batch 1, then one row of options
            assert rows == [1, 1]
    assert on.store.stats.reused > on.store.stats.computed / 2  # every earlier turn comes from the store


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_results_do_not_depend_on_what_is_stored(
    policies: dict[str, HFPolicy], tiny_model_dir: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed run starts with an empty store; evictions empty it partly: same numbers, bit for bit."""
    warm = policies["continuous" if mode == "generate" else "on"]
    warm.store.clear()
    monkeypatch.setattr(warm, "do_sample", True)
    rounds = transcript_rounds(warm, agents=4, rounds=4, mode=mode)  # the store now holds rounds 1-4
    last = warm.decide_batch(rounds[-1], mode=mode)
    cold = HFPolicy.from_pretrained(tiny_model_dir, max_new_tokens=12, batch_size=3, continuous=True)
    monkeypatch.setattr(cold, "do_sample", True)
    assert cold.decide_batch(rounds[-1], mode=mode) == last  # == on floats: bit for bit
    cold.store.clear()
    cold.decide_batch(rounds[1], mode=mode)  # a store holding something else
    assert cold.decide_batch(rounds[-1], mode=mode) == last


def test_a_turn_is_one_piece(policies: dict[str, HFPolicy]) -> None:
    """The KV is kept before each answer and at the end: an answer, its feedback and the next question are computed
    in one pass, not one pass per message."""
    on = policies["on"]
    turn = [{"role": "assistant", "content": "Store B"}, {"role": "user", "content": "+3"}]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(0, 0)}]
    for r in (1, 2):
        messages += [*turn, {"role": "user", "content": question(r, 0)}]
    ids, bounds = on._render_cut(messages)
    heads = [on.tokenizer.apply_chat_template(messages[:k], tokenize=False) for k in (2, 5, 8)]
    assert bounds == [len(on.tokenizer(h, add_special_tokens=False)["input_ids"]) for h in heads]
    assert bounds[-1] < len(ids)  # before each of the two answers, and where the last question ends


def test_cpu_passes_attend_grouped_kv_heads_natively(
    policies: dict[str, HFPolicy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU every pass runs with transformers' flag for native grouped-query attention (no copy of each KV head
    per query head), restored afterwards; the user's own setting wins; the numbers are the same bits either way."""
    flag = "TRANSFORMERS_SDPA_FORCE_GQA"
    on = policies["on"]
    assert on.model.config.num_key_value_heads < on.model.config.num_attention_heads  # the tiny model groups heads
    reqs = transcript_rounds(policies["off"], agents=3, rounds=2, mode="score")[1]
    seen: list[str | None] = []
    hook = on.model.get_decoder().register_forward_pre_hook(lambda *_: seen.append(os.environ.get(flag)))
    try:
        monkeypatch.delenv(flag, raising=False)
        on.store.clear()
        native = on.decide_batch(reqs, mode="score")
        on.decide_batch(reqs)
        assert seen and set(seen) == {"1"} and flag not in os.environ
        seen.clear()
        monkeypatch.setenv(flag, "0")
        on.store.clear()
        assert on.decide_batch(reqs, mode="score") == native  # == on floats: bit for bit
        assert set(seen) == {"0"}
    finally:
        hook.remove()


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_uninitialized_kv_memory_is_never_read(
    policies: dict[str, HFPolicy], mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KV rooms come from ``torch.empty``: every column is copied, written by the pass, or zeroed (padding). Rooms
    full of NaN instead give the same numbers, so no leftover memory reaches an attention product."""
    on = policies["on"]
    rounds = transcript_rounds(policies["off"], agents=4, rounds=3, mode=mode)
    on.store.clear()
    clean = [on.decide_batch(reqs, mode=mode) for reqs in rounds]
    room = on._room_kv
    monkeypatch.setattr(on, "_room_kv", lambda rows, width: room(rows, width).fill_(float("nan")))
    on.store.clear()
    assert [on.decide_batch(reqs, mode=mode) for reqs in rounds] == clean


def test_generate_dedupes_identical_prompts(policies: dict[str, HFPolicy]) -> None:
    on = policies["on"]
    on.store.clear()
    reqs = transcript_rounds(policies["off"], agents=6, rounds=1, mode="generate")[0]
    computed = on.store.stats.computed
    on.decide_batch(reqs)
    prompt, (kept,) = on._render_cut(reqs[0].messages, keep=True)
    # six identical prompts: their messages computed once and kept, the rest once per batch of 3
    assert on.store.stats.computed - computed == kept + 2 * (len(prompt) - 1 - kept)


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_a_first_round_is_kept_only_when_it_continues(policies: dict[str, HFPolicy], mode: str) -> None:
    """Transcript mode marks its first round ``continues``: its messages are kept, and the second round computes
    only its new turn. Other first rounds (reflection mode) fill no store."""
    on = policies["on"]
    for continues in (False, True):
        on.store.clear()
        first, second = transcript_rounds(policies["off"], agents=3, rounds=2, mode=mode, continues=continues)
        on.decide_batch(first, mode=mode)
        assert (len(on.store) > 0) is continues
        (kept,) = on._render_cut(first[0].messages, keep=True)[1]  # the three agents' first prompts are the same
        reused = on.store.stats.reused
        on.decide_batch(second, mode=mode)
        # round 2 takes round 1's messages from the store for every agent; without `continues` the first agent
        # computes them again (and the other two reuse that)
        assert on.store.stats.reused - reused == (3 if continues else 2) * kept


def test_kv_budget_caps_the_batch(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = HFPolicy.from_pretrained(tiny_model_dir, max_new_tokens=8, batch_size=8)
    reqs = transcript_rounds(probe, agents=6, rounds=1, mode="generate")[0]
    width = len(probe._render(reqs[0].messages)) + 8
    budget = 2 * width * probe._kv_per_token  # two rows' worst case
    policy = HFPolicy.from_pretrained(tiny_model_dir, max_new_tokens=8, batch_size=8, kv_budget=budget)
    calls: list[int] = []
    original = policy.model.generate
    monkeypatch.setattr(policy.model, "generate", lambda **kw: calls.append(len(kw["input_ids"])) or original(**kw))
    assert policy.decide_batch(reqs) == probe.decide_batch(reqs)
    assert calls == [2, 2, 2]
    assert policy.store.stats.peak_bytes <= budget


def test_continuous_refills_the_batch(policies: dict[str, HFPolicy], monkeypatch: pytest.MonkeyPatch) -> None:
    cont = policies["continuous"]
    cont.store.clear()
    steps: list[int] = []
    forward = cont.model.forward
    monkeypatch.setattr(cont.model, "forward", lambda **kw: steps.append(kw["input_ids"].shape[0]) or forward(**kw))
    monkeypatch.setattr(cont.model, "generate", None)  # never a padded generate call
    reqs = transcript_rounds(policies["off"], agents=7, rounds=2, mode="generate")[1]
    answers = cont.decide_batch(reqs)
    assert answers == policies["off"].decide_batch(reqs)
    assert max(steps) == 3 and sum(steps) == sum(d.tokens + (d.finish == "stop") for d in answers)


@pytest.mark.slow
def test_smollm2_reuse_matches_full_prefill() -> None:
    from atp_graph.policies.smollm2 import cache_root

    if not (cache_root() / "models" / "smollm2-135m-instruct" / "config.json").exists():
        pytest.skip("SmolLM2 is not converted yet (run `make setup` and any smollm2 command once)")
    off = load_policy("smollm2", max_new_tokens=8, prefix_cache=False, continuous=False)
    on = HFPolicy(off.model, off.tokenizer, name="smollm2", max_new_tokens=8, continuous=False)
    cont = HFPolicy(off.model, off.tokenizer, name="smollm2", max_new_tokens=8, continuous=True, batch_size=2)
    for mode in ("score", "generate"):
        for reqs in transcript_rounds(off, agents=3, rounds=2, mode=mode):
            expected = off.decide_batch(reqs, mode=mode)
            got = on.decide_batch(reqs, mode=mode)
            if mode == "generate":
                assert got == expected and cont.decide_batch(reqs) == expected
            else:
                assert [d.p_target for d in got] == pytest.approx([d.p_target for d in expected], abs=1e-4)
    assert on.store.stats.reused > 0 and cont.store.stats.reused > 0
