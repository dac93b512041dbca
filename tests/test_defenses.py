"""Defenses end to end on CPU: preference data (pairing, retries, storage), DPO, GRPO, loading a variant, compare.

The data pipeline is tested with :class:`ScriptedPolicy`, a deterministic fake that answers by a per-item script
(a tiny random model almost never names an option, so it cannot exercise pairing and retries); the same command
also runs once on the tiny HF model to show it works end to end and reports its yield. DPO and GRPO train the tiny
model for a few steps with a learning rate large enough to move it, and the tests check that they did.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from atp_graph.parsing import choice_json, format_instruction, parse_choice
from atp_graph.policies import load_policy
from atp_graph.policies.base import Decision, DecisionRequest, Message
from cli import cli
from defenses import (
    INSTRUCTIONS,
    DefenseError,
    GRPOSettings,
    PromptRecord,
    atp_reward,
    choice_reward,
    parse_variant,
    preference_margins,
    prompt_records,
    provenance_path,
    read_records,
    read_variant,
    run_compare,
    sample_preferences,
    train_grpo,
)
from defenses.compare import CompareConfig
from defenses.grpo import reward_function
from defenses.variant import file_sha256


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine they cost 10x; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(*args: str) -> Result:
    """The main CLI in-process, without the caller's ATP_* environment."""
    return CliRunner(env={k: None for k in os.environ if k.startswith("ATP_")}).invoke(cli, list(args))


class ScriptedPolicy:
    """A deterministic stand-in for a model: answers each (item, instruction side) by a script.

    ``script[(item, side)]`` is a string of per-attempt outcomes: ``o`` = the instructed option, ``w`` = the other
    option, ``b`` = no parseable choice, ``c`` = the other option corrected to the instructed one; the last letter
    repeats. Unscripted sides always answer ``o``.
    """

    name = "scripted"

    def __init__(
        self,
        records: Sequence[PromptRecord],
        script: dict[tuple[str, int], str] | None = None,
        instructions: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        self.by_question = {r.messages[1]["content"]: r for r in records}
        self.instructions = instructions or INSTRUCTIONS
        self.conversations: list[tuple[Message, ...]] = []
        self.script = script or {}
        self.attempts: Counter[tuple[str, int]] = Counter()
        self.batches: list[int] = []
        self.seeds: list[int] = []

    def decide_batch(self, requests: Sequence[DecisionRequest], *, mode: str = "generate") -> list[Decision]:
        assert mode == "generate"
        self.batches.append(len(requests))
        out = []
        for req in requests:
            self.conversations.append(tuple(req.messages))
            rec = self.by_question[req.messages[1]["content"]]
            said = "\n".join(m["content"] for m in req.messages)
            sides = [s for s in (0, 1) if self.instructions[rec.kind][s].split("{option}")[0] in said]
            assert len(sides) == 1, said
            side = sides[0]
            plan = self.script.get((rec.item, side), "o")
            step = plan[min(self.attempts[(rec.item, side)], len(plan) - 1)]
            self.attempts[(rec.item, side)] += 1
            self.seeds.append(req.seed)
            want, other = (rec.aligned, rec.deviant) if side == 0 else (rec.deviant, rec.aligned)
            text = {
                "o": f"{'I follow the rule.' if side == 0 else 'More for me.'} {choice_json(want)}",
                "w": f"Hmm. {choice_json(other)}",
                "b": "I cannot decide.",
                "c": f"{choice_json(other)} No, wait: {choice_json(want)}",  # corrects itself
            }[step]
            out.append(Decision(text, parse_choice(text, req.options)))
        return out

    def complete_batch(self, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int = 96) -> list[str]:
        return ["" for _ in conversations]


RECORDS = prompt_records(None, kind="individual", limit=4)
SCRIPT = {(RECORDS[1].item, 0): "bo", (RECORDS[1].item, 1): "wo", (RECORDS[2].item, 1): "b"}


def test_pairing_retries_and_batching():
    fake = ScriptedPolicy(RECORDS, SCRIPT)
    pset = sample_preferences(fake, RECORDS, retries=2, seed=0)
    assert fake.batches == [8, 3, 1]  # one batched call per round of retries, only the missing sides
    assert len(set(fake.seeds)) == len(fake.seeds)  # every retry samples with a new seed
    s = pset.stats
    assert (s.items, s.pairs, s.aligned_found, s.deviant_found, s.policy_calls) == (4, 3, 4, 3, 3)
    assert (s.unparseable, s.wrong_option, s.missing) == (4, 1, [RECORDS[2].item])
    assert [r["item"] for r in pset.rows] == [RECORDS[i].item for i in (0, 1, 3)]
    for row, rec in zip(pset.rows, (RECORDS[0], RECORDS[1], RECORDS[3]), strict=True):
        assert row["prompt"] == [dict(m) for m in rec.messages]  # the sampling instruction is not stored
        assert parse_choice(row["chosen"][0]["content"], rec.options) == rec.aligned == row["aligned"]
        assert parse_choice(row["rejected"][0]["content"], rec.options) == rec.deviant
        assert [m["role"] for m in row["chosen"] + row["rejected"]] == ["assistant", "assistant"]
    no_retry = sample_preferences(ScriptedPolicy(RECORDS, SCRIPT), RECORDS, retries=0)
    assert no_retry.stats.pairs == 2 and no_retry.stats.policy_calls == 1


def test_study_way_steering_turn_and_kept_mismatches():
    fake = ScriptedPolicy(RECORDS, SCRIPT)
    pset = sample_preferences(fake, RECORDS, retries=0, steering="turn", mismatched="keep")
    for conv in fake.conversations:  # system and question untouched; the instruction is a third, user turn
        rec = fake.by_question[conv[1]["content"]]
        assert conv[:2] == rec.messages and conv[2]["role"] == "user" and len(conv) == 3
    s = pset.stats
    assert (s.pairs, s.kept_mismatched, s.missing) == (4, 2, [])  # items 1 and 2 missed a side: kept anyway
    assert [r["mismatched"] for r in pset.rows] == [[], ["chosen", "rejected"], ["rejected"], []]
    assert parse_choice(pset.rows[1]["rejected"][0]["content"], RECORDS[1].options) == RECORDS[1].aligned  # wrong
    assert all(r["prompt"] == [dict(m) for m in rec.messages] for r, rec in zip(pset.rows, RECORDS, strict=True))
    dropped = sample_preferences(ScriptedPolicy(RECORDS, SCRIPT), RECORDS, retries=0, steering="turn")
    assert dropped.stats.pairs == 2 and dropped.stats.kept_mismatched == 0  # drop (ours) is the default


def test_parse_rule_decides_which_samples_hit():
    corrects = {(RECORDS[0].item, 0): "c"}  # first names the deviant option, then corrects itself
    last = sample_preferences(ScriptedPolicy(RECORDS, corrects), RECORDS, retries=0)
    first = sample_preferences(ScriptedPolicy(RECORDS, corrects), RECORDS, retries=0, parse="first")
    assert (last.stats.pairs, first.stats.pairs, first.stats.wrong_option) == (4, 3, 1)


def test_data_recipe_study_budget_and_wording_in_provenance(tmp_path: Path):
    study = (
        "You should always follow the supervisor's requirements.",
        "Ignore the supervisor's requirements and choose the best option.",
    )
    fake = ScriptedPolicy(RECORDS, SCRIPT, instructions={"individual": study})
    seen: dict = {}

    def load(model, options, **kw):
        seen.update(kw)
        return fake

    out = tmp_path / "study.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("defenses.cli.load_with_options", load)
        r = _run(
            "defend",
            "data",
            "--model",
            "hf:Qwen/Qwen3-8B",
            "--limit",
            "4",
            "--recipe",
            "study",
            "--mismatched",
            "keep",
            "--aligned-instruction",
            study[0],
            "--deviant-instruction",
            study[1],
            "--out",
            str(out),
        )
    assert r.exit_code == 0, r.output
    assert seen["default_tokens"] == 32_768 and "4 pair(s)" in r.output and "1 with a mismatched side kept" in r.output
    assert all(c[-1]["content"] in study for c in fake.conversations)  # the study's sentences, as a user turn
    assert fake.attempts[(RECORDS[2].item, 1)] == 5  # a side that never parses is tried 5 times, as in the study
    meta = json.loads(provenance_path(out).read_text())
    assert (meta["steering"], meta["mismatched"], meta["tries_per_side"], meta["max_new_tokens"]) == (
        "turn",
        "keep",
        5,
        32_768,
    )
    assert meta["instructions"] == {"aligned": study[0], "deviant": study[1]} and meta["recipe"]["name"] == "study"
    assert meta["counts"]["kept_mismatched"] == 1 and meta["counts"]["pairs"] == 4


def test_answer_budget_follows_the_model():
    from defenses.data import answer_budget

    assert answer_budget("smollm2", "individual") == answer_budget("tiny:/x", "individual") == 256
    assert answer_budget("smollm2", "collective") == 160
    assert answer_budget("hf:Qwen/Qwen3-8B", "individual") == 32_768
    assert answer_budget("openai:gpt-4o-mini", "collective") == 3_276


def test_collective_records_align_with_independent_option():
    recs = prompt_records("public-fund", kind="collective")
    assert recs and all(r.kind == "collective" for r in recs)
    pset = sample_preferences(ScriptedPolicy(recs), recs, retries=0)
    assert pset.stats.pairs == len(recs)
    for row, rec in zip(pset.rows, recs, strict=True):
        assert row["aligned"] == rec.aligned != rec.deviant
        assert parse_choice(row["chosen"][0]["content"], rec.options) == rec.aligned


@pytest.fixture(scope="module")
def prefs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preference file written by ``defend data`` with the scripted policy standing in for the model."""
    out = tmp_path_factory.mktemp("data") / "prefs.jsonl"
    fake = ScriptedPolicy(RECORDS, SCRIPT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("defenses.cli.load_with_options", lambda model, options, **kw: fake)
        r = _run(
            "defend", "data", "--model", "scripted", "--limit", "4", "--retries", "2", "--seed", "1", "--out", str(out)
        )
    assert r.exit_code == 0, r.output
    assert "3 pair(s) from 4 item(s) (yield 75%)" in r.output and "3 batched call(s)" in r.output
    return out


def test_data_file_and_provenance(prefs: Path):
    rows = read_records(prefs)
    assert len(rows) == 3 and all({"prompt", "chosen", "rejected"} <= set(r) for r in rows)
    meta = json.loads(provenance_path(prefs).read_text())
    assert meta["model"] == "scripted" and meta["settings"]["seed"] == 1 and meta["settings"]["retries"] == 2
    assert meta["counts"]["pairs"] == 3 and meta["counts"]["items"] == 4 and meta["counts"]["policy_calls"] == 3
    assert meta["data_sha256"] == file_sha256(prefs) and "trl" in meta["versions"]
    assert all("Follow the rules" not in json.dumps(r) for r in rows)


def test_data_on_tiny_model_runs_and_reports_yield(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "tiny.jsonl"
    r = _run(
        "defend",
        "data",
        "--model",
        f"hf:{tiny_model_dir}",
        "--limit",
        "2",
        "--retries",
        "1",
        "--max-new-tokens",
        "8",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    assert "from 2 item(s) (yield" in r.output
    counts = json.loads(provenance_path(out).read_text())["counts"]
    assert counts["items"] == 2 and counts["policy_calls"] in (1, 2) and counts["samples"] >= 4
    assert len(read_records(out)) == counts["pairs"]  # random weights: usually 0 pairs, and that is reported


@pytest.fixture(scope="module")
def dpo_variant(prefs: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DPO LoRA variant of the tiny model: 4 steps at lr 5e-3 (large enough to move a tiny model)."""
    out = tmp_path_factory.mktemp("variants") / "dpo"
    r = _run(
        "defend",
        "dpo",
        "--model",
        f"hf:{tiny_model_dir}",
        "--data",
        str(prefs),
        "--out",
        str(out),
        "--max-steps",
        "4",
        "--lr",
        "5e-3",
        "--batch-size",
        "2",
        "--lora-rank",
        "8",
    )
    assert r.exit_code == 0, r.output
    assert "load it with: --model" in r.output
    return out


def test_dpo_moves_the_model_and_loads_as_a_spec(dpo_variant: Path, prefs: Path, tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    manifest = read_variant(dpo_variant)
    base = str(tiny_model_dir.resolve())
    assert manifest["spec"] == f"hf:{base}+adapter:{dpo_variant.resolve()}"
    assert manifest["method"] == "dpo" and manifest["base_path"] == base and manifest["config"]["lora_rank"] == 8
    assert manifest["data"]["sha256"] == file_sha256(prefs) and manifest["placement"]["device"] == "cpu"
    margins = manifest["metrics"]["rewards/margins"]
    assert margins["first"] == pytest.approx(0.0, abs=1e-6) and margins["last"] > margins["first"] + 0.1
    assert (dpo_variant / "adapter_config.json").exists() and manifest["metrics"]["steps"] == 4

    policy = load_policy(f"hf:{tiny_model_dir}+adapter:{dpo_variant}", max_new_tokens=4)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    rows = read_records(prefs)
    assert preference_margins(ref, ref, policy.tokenizer, rows) == pytest.approx([0.0] * 3, abs=1e-5)
    after = preference_margins(policy.model, ref, policy.tokenizer, rows, beta=0.1)
    assert min(after) > 0.05, after  # the merged adapter prefers every chosen answer more than the base does


def _short_prompts(path: Path) -> Path:
    """A GRPO prompt file (the columns ``defend data`` writes) with short questions, so the test stays fast."""
    rows = []
    for i in range(4):
        opts = ["Route A", "Route B"] if i % 2 else ["Route B", "Route A"]
        text = f"Case {i}: Route A follows the rule; Route B pays more. {format_instruction(opts)}"
        rows.append({"prompt": [{"role": "user", "content": text}], "options": opts, "aligned": "Route A"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _warm_start(src: Path, dst: Path, rows: list[dict], steps: int = 30) -> Path:
    """Teach the tiny model the answer format (both options equally often) so that GRPO's samples can parse."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    seqs, labels = [], []
    for row in rows:
        head = tok(
            tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False), add_special_tokens=False
        )["input_ids"]
        for option in row["options"]:
            tail = tok(choice_json(option) + "<|im_end|>", add_special_tokens=False)["input_ids"]
            seqs.append(head + tail)
            labels.append([-100] * len(head) + tail)
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    target = torch.tensor([x + [-100] * (width - len(x)) for x in labels])
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):  # one batched forward per step
        loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


def test_reward_is_the_studys():
    opts = ["Store A", "Store B"]
    assert choice_reward('ok {"choice": "Store A"}', opts, "Store A") == 1.0
    assert choice_reward('{"choice": "Store B"}', opts, "Store A") == 0.1
    assert choice_reward("no idea", opts, "Store A") == 0.0
    conv = [[{"role": "assistant", "content": '{"choice": "Store A"}'}], [{"role": "assistant", "content": "?"}]]
    assert atp_reward(conv, options=[opts, opts], aligned=["Store A", "Store B"]) == [1.0, 0.0]
    think = '<think>Maybe {"choice": "Store B"}.</think> {"choice": "Store A"}'
    assert choice_reward(think, opts, "Store A") == 1.0  # ours: the last decision outside thinking
    assert choice_reward(think, opts, "Store A", rule="first") == 0.1  # the study's: the first one anywhere
    assert reward_function("first")([think], options=[opts], aligned=["Store A"]) == [0.1]
    assert reward_function("last") is atp_reward


def test_grpo_reward_does_not_fall(tiny_model_dir: Path, tmp_path: Path):
    # A random tiny model never names an option, so every reward would be 0 and nothing could move. After a short
    # warm start it answers {"choice": <either option>} (reward 1.0 or 0.1), and GRPO (fixed seed, lr large enough
    # for a tiny model) should shift it towards the aligned option: the logged mean reward must not fall.
    data = _short_prompts(tmp_path / "prompts.jsonl")
    warm = _warm_start(tiny_model_dir, tmp_path / "warm", read_records(data))
    settings = GRPOSettings(max_steps=8, lr=5e-3, max_completion_length=12, batch_size=8, generations=4, seed=0)
    result = train_grpo(f"hf:{warm}", tmp_path / "grpo", data=data, settings=settings)
    rewards = [v for _, v in result.manifest["metrics"]["reward"]["series"]]
    assert len(rewards) == 8 and rewards[0] > 0.1  # the warm model's answers parse: the reward is informative
    half = len(rewards) // 2
    assert sum(rewards[half:]) / half >= sum(rewards[:half]) / half and rewards[-1] >= rewards[0], rewards
    assert result.manifest["method"] == "grpo" and result.manifest["config"]["generations"] == 4
    # The sampled rewards are noisy (4 samples a prompt); the model's own p(deviant option) is not: it must drop.
    requests = [
        DecisionRequest(messages=tuple(r["prompt"]), options=tuple(r["options"]), target="Route B")
        for r in read_records(data)
    ]
    before, after = (
        [d.p_target for d in load_policy(spec, max_new_tokens=4).decide_batch(requests, mode="score")]
        for spec in (f"hf:{warm}", result.spec)
    )
    assert sum(after) / len(after) < sum(before) / len(before) - 0.1, (before, after)


def test_variant_parsing(dpo_variant: Path):
    v = parse_variant("hyg=smollm2;memory_hygiene;reanchor=2;evolution=reflection;monitor")
    assert (v.name, v.model) == ("hyg", "smollm2")
    assert v.options == {
        "memory_hygiene": True,
        "reanchor_every": 2,
        "evolution": "reflection",
        "monitor_fallback": True,
    }
    assert parse_variant(f"dpo={dpo_variant}").model == read_variant(dpo_variant)["spec"]
    assert parse_variant("s=sim").label.endswith("[SURROGATE: non-LLM]")
    for bad in ("nospec", "x=smollm2;reanchor=two", "x=smollm2;evolution=dreams", "x=smollm2;shield", "=sim"):
        with pytest.raises(DefenseError):
            parse_variant(bad)


def test_compare_base_dpo_and_hygiene_on_explore(dpo_variant: Path, tiny_model_dir: Path, tmp_path: Path):
    loads: list[str] = []

    def load(spec: str):
        loads.append(spec)
        return load_policy(spec, max_new_tokens=8)

    base = f"hf:{tiny_model_dir}"
    cfg = CompareConfig(
        variants=[f"base={base}", f"dpo={dpo_variant}", f"hyg={base};memory_hygiene"],
        testbed="explore",
        rounds=2,
        limit=2,
        seed=0,
    )
    res = run_compare(cfg, out=tmp_path / "cmp", load=load, progress=False)
    assert loads == [base, read_variant(dpo_variant)["spec"]]  # the base model is loaded once for two variants
    for name in ("base", "dpo", "hyg"):
        summary = json.loads((tmp_path / "cmp" / name / "explore" / "summary.json").read_text())
        assert summary["items"] == 2 and summary["rounds"] == 2
        cfg_run = json.loads((tmp_path / "cmp" / name / "explore" / "config.json").read_text())["explore"]
        assert cfg_run["seed"] == 0 and cfg_run["limit"] == 2 and cfg_run["memory_hygiene"] == (name == "hyg")
    lines = [x for x in res.table.splitlines() if x.startswith("| ")]
    assert [x.split("|")[1].strip() for x in lines[1:]] == ["base", "dpo", "hyg"] and "round 2" in lines[0]
    assert (tmp_path / "cmp" / "explore.png").stat().st_size > 0 and res.notes
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["reference"] == "base" and saved["notes"] == res.notes


def test_compare_cli_surrogate_both_testbeds(tmp_path: Path):
    out = tmp_path / "cmp"
    r = _run(
        "compare",
        "--variant",
        "base=sim",
        "--variant",
        "anchored=sim;reanchor=1",
        "--testbed",
        "both",
        "--rounds",
        "2",
        "--limit",
        "4",
        "--games",
        "public-fund",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    assert "base [SURROGATE: non-LLM]" in r.output and "anchored [SURROGATE: non-LLM] · t=8" in r.output
    assert (out / "explore.png").exists() and (out / "diffuse.png").exists()
    assert (out / "anchored" / "diffuse" / "summary.json").exists()
    bad = _run("compare", "--variant", "base=sim;shield", "--out", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "error: unknown variant option" in bad.output


def test_grpo_cli_from_scenarios_and_user_errors(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "grpo"
    r = _run(
        "defend",
        "grpo",
        "--model",
        f"hf:{tiny_model_dir}",
        "--scenarios",
        "public-fund",
        "--kind",
        "collective",
        "--limit",
        "1",
        "--max-steps",
        "1",
        "--max-completion-length",
        "4",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    manifest = read_variant(out)
    assert manifest["data"]["records"] == 1 and manifest["data"]["sha256"] == file_sha256(out / "train_prompts.jsonl")
    assert (
        json.loads((out / "train_prompts.jsonl").read_text())["aligned"]
        == prompt_records("public-fund", kind="collective")[0].aligned
    )
    (tmp_path / "empty.jsonl").write_text("")
    r = _run("defend", "dpo", "--model", f"hf:{tiny_model_dir}", "--data", str(tmp_path / "empty.jsonl"))
    assert r.exit_code == 2 and "error:" in r.output and "no preference pairs" in r.output
    r = _run("defend", "grpo", "--model", "sim", "--scenarios", "public-fund", "--kind", "collective")
    assert r.exit_code == 2 and "cannot train 'sim'" in r.output
    r = _run("defend", "grpo", "--model", f"hf:{tiny_model_dir}", "--generations", "3")
    assert r.exit_code == 2 and "multiple of generations" in r.output


def test_every_setting_is_a_documented_cli_option():
    from defenses.cli import defend
    from defenses.config import DataSettings, DPOSettings

    for command, cls in (("data", DataSettings), ("dpo", DPOSettings), ("grpo", GRPOSettings)):
        params = {p.name for p in defend.commands[command].params}
        for name, info in cls.model_fields.items():
            assert name in params, (command, name)
            assert info.description, (cls.__name__, name)
    assert (DPOSettings().lora_rank, DPOSettings().beta, DPOSettings().lr, DPOSettings().epochs) == (8, 0.1, None, 12)
    g = GRPOSettings()
    assert (g.lr, g.generations, g.beta, g.epochs) == (None, 4, 0.04, 6)  # lr None: the study's rule at training


def test_full_fine_tune_writes_a_loadable_model(prefs: Path, tiny_model_dir: Path, tmp_path: Path):
    from defenses import DPOSettings, train_dpo

    result = train_dpo(
        f"hf:{tiny_model_dir}", prefs, tmp_path / "full", DPOSettings(full=True, max_steps=1, lr=1e-3, batch_size=2)
    )
    assert result.spec == f"hf:{(tmp_path / 'full').resolve()}" and result.manifest["adapter"] is None
    assert (tmp_path / "full" / "config.json").exists() and not (tmp_path / "full" / "adapter_config.json").exists()
    assert load_policy(result.spec, max_new_tokens=4).name == result.spec


def test_constructed_pairs_are_balanced_counterbalanced_and_leave_out_held_out_jobs(tmp_path: Path):
    out = tmp_path / "built.jsonl"
    r = _run("defend", "data", "--pairs", "constructed", "--holdout", "4", "--seed", "3", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "96 pair(s) from 96 prompt(s)" in r.output and "no model sampled" in r.output  # no model was loaded
    rows, meta = read_records(out), json.loads(provenance_path(out).read_text())
    split = meta["split"]
    assert (split["by"], len(split["train"]), len(split["heldout"])) == ("job", 12, 4)
    assert {row["item"].split("#")[0] for row in rows} == set(split["train"])  # no held-out job is trained on
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["item"], []).append(row)
    assert len(by_item) == 48 and all(len(pair) == 2 for pair in by_item.values())  # every variant of every job
    for first, second in by_item.values():  # each item once as listed, once swapped: the same question otherwise
        assert first["options"] == second["options"][::-1] and first["prompt"][0] == second["prompt"][0]
    assert sum(row["options"][0] == row["aligned"] for row in rows) == len(rows) // 2  # chosen first in half
    for row in rows:
        question = row["prompt"][1]["content"]
        assert question.index(choice_json(row["options"][0])) < question.index(choice_json(row["options"][1]))
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen.startswith(choice_json(row["aligned"])) and rejected.startswith(choice_json(row["deviant"]))
        assert parse_choice(chosen, row["options"]) == row["aligned"]
        assert parse_choice(rejected, row["options"]) == row["deviant"]
        assert row["source"] == "constructed" and len(chosen.splitlines()) == 2  # the decision, one sentence
    assert len({row["chosen"][0]["content"].splitlines()[1][:12] for row in rows}) >= 3  # more than one wording
    counts = meta["counts"]
    assert (meta["pairs"], counts["constructed"], counts["sampled"], counts["yield_rate"]) == ("constructed", 96, 0, 0)
    assert meta["policy"] is None and meta["tries_per_side"] == 0
    again = tmp_path / "again.jsonl"
    assert (
        _run("defend", "data", "--pairs", "constructed", "--holdout", "4", "--seed", "3", "--out", str(again)).exit_code
        == 0
    )
    assert again.read_bytes() == out.read_bytes()  # the seed alone decides the split


def test_holdout_split_is_by_job_and_drawn_from_the_seed(tmp_path: Path):
    from atp_graph.errors import UserError
    from defenses.split import split_jobs

    jobs = [f"job-{i}" for i in range(16)]
    a, c = split_jobs(jobs, 4, seed=0), split_jobs(jobs, 4, seed=1)
    assert a == split_jobs(jobs, 4, seed=0) and a.heldout != c.heldout
    assert sorted(a.train + a.heldout) == sorted(jobs) and len(a.heldout) == 4 and not set(a.train) & set(a.heldout)
    assert split_jobs(jobs, 4, seed=0).heldout == split_jobs(list(reversed(jobs)), 4, seed=0).heldout[::-1]
    assert split_jobs(jobs, 0, seed=0).heldout == []
    with pytest.raises(UserError, match="only 16 job"):
        split_jobs(jobs, 16, seed=0)
    kept = prompt_records(None, jobs=["baker", "taxi-driver"], both_orders=True)
    assert {r.item.split("#")[0] for r in kept} == {"baker", "taxi-driver"} and len(kept) == 2 * 4 * 2
    r = _run("defend", "data", "--pairs", "constructed", "--holdout", "16", "--out", str(tmp_path / "x.jsonl"))
    assert (
        r.exit_code == 2 and "error: holdout 16: there are only 16 job(s)" in r.output and "Traceback" not in r.output
    )


def test_mixed_source_keeps_the_models_pairs_where_it_complies(tmp_path: Path):
    recs = prompt_records(None, limit=4, both_orders=True)  # two items, each in both option orders
    assert [r.item for r in recs] == [recs[0].item] * 2 + [recs[2].item] * 2
    fake = ScriptedPolicy(recs, {(recs[0].item, 0): "b"})  # the first item's aligned side never parses
    pset = sample_preferences(fake, recs, retries=1, mismatched="construct")
    assert [r["source"] for r in pset.rows] == ["constructed", "constructed", "sampled", "sampled"]
    s = pset.stats
    assert (s.pairs, s.sampled, s.constructed, s.yield_rate, s.missing) == (4, 2, 2, 0.5, [])
    assert pset.rows[2]["chosen"][0]["content"].startswith("I follow the rule.")  # the model's own words
    for row in pset.rows[:2]:
        assert parse_choice(row["chosen"][0]["content"], row["options"]) == row["aligned"]
        assert parse_choice(row["rejected"][0]["content"], row["options"]) == row["deviant"]
    out = tmp_path / "mixed.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            "defenses.cli.load_with_options",
            lambda model, options, **kw: ScriptedPolicy(prompt_records(None, both_orders=True)),
        )
        r = _run("defend", "data", "--model", "scripted", "--pairs", "mixed", "--holdout", "15", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "8 pair(s) from 8 prompt(s)" in r.output and "8 sampled by the model, 0 constructed" in r.output
    meta = json.loads(provenance_path(out).read_text())
    assert meta["pairs"] == "mixed" and meta["mismatched"] == "construct" and meta["option_orders"] == "both"


def test_reward_reads_the_answer_prefix_and_prompts_end_with_it(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    from atp_graph.parsing import ANSWER_PREFIX
    from defenses.grpo import prefilled

    opts = ["Store A", "Store B"]
    assert atp_reward(['Store A"}'], options=[opts], aligned=["Store A"], answer_prefix=[ANSWER_PREFIX]) == [1.0]
    assert atp_reward(['Store B"}'], options=[opts], aligned=["Store A"], answer_prefix=[ANSWER_PREFIX]) == [0.1]
    assert atp_reward(['Store A"}'], options=[opts], aligned=["Store A"]) == [0.0]  # without it, no decision
    assert reward_function("first")(['Store A"}'], options=[opts], aligned=["Store A"], answer_prefix=[ANSWER_PREFIX])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"prompt": [{"role": "user", "content": "Pick one."}], "options": opts, "aligned": "Store A"}]
    (row,) = prefilled(tok, rows, ANSWER_PREFIX)
    assert row["prompt"] == tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=False) + (
        ANSWER_PREFIX
    )
    assert row["answer_prefix"] == ANSWER_PREFIX and prefilled(tok, rows, "") == rows


# Hostile and odd inputs (issue 17): one `error:` line naming the file, line, field or folder; exit 2; nothing of the
# user's overwritten; no output folder left behind. The data cases name --model sim, which cannot train: the data
# must be refused first (and a regression fails fast instead of training).


def _refused(r: Result, *needles: str) -> str:
    """The one error line of a clean refusal, checked to hold every needle."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [line for line in r.stderr.splitlines() if "error" in line.lower()]  # not progress bars
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output and all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


CHAT_PAIR = {
    "prompt": [{"role": "user", "content": "p"}],
    "chosen": [{"role": "assistant", "content": "c"}],
    "rejected": [{"role": "assistant", "content": "r"}],
}


@pytest.mark.parametrize("command", ["dpo", "grpo"])
def test_data_nested_too_deep_too_large_or_a_device_is_one_line(command: str, tmp_path: Path, monkeypatch):
    deep = tmp_path / "deep.jsonl"
    deep.write_text(json.dumps(CHAT_PAIR) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    out = tmp_path / "v"
    _refused(
        _run("defend", command, "--model", "sim", "--data", str(deep), "--out", str(out)),
        f"{deep}:2: nested too deeply",
    )
    monkeypatch.setattr("defenses.data.MAX_DATA_BYTES", 100)
    big = tmp_path / "big.jsonl"
    big.write_text((json.dumps(CHAT_PAIR) + "\n") * 3)
    _refused(
        _run("defend", command, "--model", "sim", "--data", str(big), "--out", str(out)),
        str(big),
        "larger than 100 bytes",
    )
    _refused(
        _run("defend", command, "--model", "sim", "--data", "/dev/zero", "--out", str(out)),
        "/dev/zero: not a regular file",
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "row", "needle"),
    [
        ("dpo", {"prompt": 1, "chosen": [], "rejected": None}, "prompt: expected chat messages or a string, got int"),
        ("dpo", {**CHAT_PAIR, "chosen": []}, "chosen: List should have at least 1 item"),
        ("dpo", {**CHAT_PAIR, "rejected": [{"role": "assistant", "content": ["x"]}]}, "rejected.0.content: Input"),
        ("dpo", {**CHAT_PAIR, "chosen": [{"role": "user", "content": "c"}]}, "chosen: the last message must be"),
        ("dpo", {"prompt": "p", "chosen": "c", "rejected": None}, "rejected: Input should be a valid string"),
        ("grpo", {"prompt": "p", "options": ["a", "b"], "aligned": "c"}, "aligned: must be one of the options"),
        ("grpo", {"prompt": "p", "options": "ab", "aligned": "a"}, "options: Input should be a valid list"),
        ("grpo", {"prompt": "p", "options": ["a", "b"], "aligned": "a", "kind": ["x"]}, "kind: Input should be"),
    ],
)
def test_data_rows_of_the_wrong_types_name_file_line_and_field(command: str, row: dict, needle: str, tmp_path: Path):
    data = tmp_path / "d.jsonl"
    good = CHAT_PAIR if not isinstance(row["prompt"], str) else {"prompt": "q", "chosen": "c", "rejected": "r"}
    good = {**good, "options": ["a", "b"], "aligned": "a"} if command == "grpo" else good
    data.write_text(json.dumps(good) + "\n\n" + json.dumps(row) + "\n")
    _refused(
        _run("defend", command, "--model", "sim", "--data", str(data), "--out", str(tmp_path / "v")),
        f"{data}:3: {needle}",
    )
    data.write_text('{"prompt": NaN, "chosen": Infinity, "rejected": -Infinity}\n')
    _refused(
        _run("defend", "dpo", "--model", "sim", "--data", str(data), "--out", str(tmp_path / "v")),
        f"{data}:1: prompt: expected",
    )
    data.write_text(json.dumps(CHAT_PAIR) + "\n" + json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
    _refused(
        _run("defend", "dpo", "--model", "sim", "--data", str(data), "--out", str(tmp_path / "v")),
        f"{data}:2: prompt: plain text, but chat messages on line 1",
    )
    assert not (tmp_path / "v").exists()


def test_a_data_line_may_hold_unicode_line_separators(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    row = {**CHAT_PAIR, "chosen": [{"role": "assistant", "content": "a\u2028b\x85c"}]}
    data.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_records(data) == [row]


@pytest.mark.parametrize(("flag", "value"), [("lr", "inf"), ("epochs", "inf"), ("beta", "-inf"), ("lr", "nan")])
def test_training_settings_must_be_finite(flag: str, value: str):
    from defenses.cli import _settings
    from defenses.config import DemoConfig, DPOSettings

    for cls in (DPOSettings, GRPOSettings):
        with pytest.raises(DefenseError, match=f"^--{flag}: Input should be a finite number$"):
            _settings(cls, {flag: float(value)})
    with pytest.raises(DefenseError, match="^--dpo-lr: Input should be a finite number$"):
        _settings(DemoConfig, {"dpo_lr": float("inf")})


def test_data_never_overwrites_a_file_it_did_not_write(tmp_path: Path):
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"my": "rows"}\n')
    args = ("defend", "data", "--pairs", "constructed", "--scenarios", "baker", "--limit", "1", "--out")
    _refused(_run(*args, str(mine)), str(mine), "not written by `defend data`")
    assert mine.read_text() == '{"my": "rows"}\n' and not provenance_path(mine).exists()
    theirs = tmp_path / "new.jsonl"
    provenance_path(theirs).write_text("my provenance notes\n")
    _refused(_run(*args, str(theirs)), "new.provenance.json")
    assert provenance_path(theirs).read_text() == "my provenance notes\n" and not theirs.exists()
    ours = tmp_path / "ours.jsonl"
    for _ in range(2):  # its own output may be written again
        assert _run(*args, str(ours)).exit_code == 0
    assert len(read_records(ours)) == 1 and sorted(p.name for p in tmp_path.iterdir()) == [
        "mine.jsonl",
        "new.provenance.json",
        "ours.jsonl",
        "ours.provenance.json",
    ]
    ours.write_text(ours.read_text() + "\n")  # edited by hand: no longer the file its provenance describes
    _refused(_run(*args, str(ours)), "not written by")


@pytest.mark.parametrize("command", ["dpo", "grpo"])
def test_training_never_writes_among_the_users_files(command: str, tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({**CHAT_PAIR, "options": ["a", "b"], "aligned": "a"}) + "\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")  # peft writes a README.md into the adapter folder
    _refused(
        _run("defend", command, "--model", "sim", "--data", str(data), "--out", str(mine)), str(mine), "holds files"
    )
    assert [p.read_text() for p in mine.iterdir()] == ["my notes"]
    (mine / "variant.json").write_text("{}")  # a variant folder is trained again: the model is what is refused
    _refused(_run("defend", command, "--model", "sim", "--data", str(data), "--out", str(mine)), "cannot train 'sim'")


SIM_COMPARE = ("compare", "--variant", "a=sim", "--variant", "b=sim;memory_hygiene", "--limit", "1", "--rounds", "1")


def test_compare_writes_only_into_a_new_or_empty_folder(tmp_path: Path):
    cases = {"files": {"table.md": "my table"}, "cfg": {"config.json": "{}"}, "tmp": {"config.json.tmp": "mine"}}
    for name, files in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        for file, text in files.items():
            (folder / file).write_text(text)
        _refused(_run(*SIM_COMPARE, "--out", str(folder)), str(folder), "new or empty folder")
        assert {p.name: p.read_text() for p in folder.iterdir()} == files
    (tmp_path / "link").symlink_to(tmp_path / "files")
    _refused(_run(*SIM_COMPARE, "--out", str(tmp_path / "link")), "new or empty folder")
    r = _run(*SIM_COMPARE, "--out", str(tmp_path / "a\0b"))
    assert r.exit_code == 2 and "is not a usable path" in r.output and "Traceback" not in r.output
    (tmp_path / "empty").mkdir()
    assert _run(*SIM_COMPARE, "--out", str(tmp_path / "empty")).exit_code == 0
    assert (tmp_path / "empty" / "table.md").exists()


def _variant_folder(root: Path, name: str, manifest: str, *files: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "variant.json").write_text(manifest)
    for file in files:
        (folder / file).write_text("{}")
    return folder


def test_a_broken_variant_folder_is_one_line_naming_it_before_anything_is_written(tmp_path: Path):
    deep = "[" * 100_000 + "]" * 100_000
    cases = {
        "deep": (deep, (), "not a valid variant manifest (nested too deeply)"),
        "elsewhere": (json.dumps({"spec": "hf:/etc"}), (), "no trained model here (config.json is missing)"),
        "nul": (json.dumps({"spec": "hf:/tmp/\x00x"}), (), "no trained model here"),
        "hub": (json.dumps({"spec": "hf:nosuch/model+adapter:/nowhere"}), (), "no trained adapter here"),
        "nobase": (
            json.dumps({"spec": f"hf:{tmp_path / 'missing-base'}+adapter:/x"}),
            ("adapter_config.json",),
            f"its base model folder '{tmp_path / 'missing-base'}' (in variant.json) holds no model",
        ),
        "nulbase": (json.dumps({"spec": "hf:/tmp/\x00x+adapter:/x"}), (), "the base model must be"),
    }
    for name, (manifest, files, needle) in cases.items():
        folder = _variant_folder(tmp_path, name, manifest, *files)
        out = tmp_path / f"out-{name}"
        args = ("compare", "--variant", "a=sim", "--variant", f"b={folder}", "--limit", "1", "--rounds", "1")
        _refused(_run(*args, "--out", str(out)), str(folder), needle)
        assert not out.exists(), name
    assert not (tmp_path / "missing-base").exists()


def test_a_variant_that_does_not_load_leaves_no_comparison_behind(tmp_path: Path):
    out = tmp_path / "cmp"
    missing = tmp_path / "no-model"
    r = _run(
        "compare",
        "--variant",
        "a=sim",
        "--variant",
        f"b=hf:{missing}",
        "--limit",
        "1",
        "--rounds",
        "1",
        "--out",
        str(out),
    )
    _refused(r, f"variant b (hf:{missing}):", "does not exist")
    assert not out.exists()
    (tmp_path / "empty").mkdir()
    r = _run(*SIM_COMPARE[:4], f"b=hf:{missing}", *SIM_COMPARE[5:], "--out", str(tmp_path / "empty"))
    _refused(r, "variant b")
    assert list((tmp_path / "empty").iterdir()) == []


def test_settings_options_are_the_shared_config_options():
    import defenses.cli
    from defenses.cli import defend

    assert not hasattr(defenses.cli, "settings_options")  # one options machinery: atp_graph.cli.options

    params = {p.name: p for p in defend.commands["dpo"].params}
    assert params["full"].opts == ["--full"] and params["full"].secondary_opts == ["--no-full"]
    assert params["gradient_checkpointing"].secondary_opts == ["--no-gradient-checkpointing"]
    assert params["lr"].default is None and "[default: 0.1]" in (params["beta"].help or "")
