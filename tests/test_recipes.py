"""Training recipes: every knob reaches TRL's config, ``--recipe study`` fills them, truncation spares the answers.

The config tests build the real ``DPOConfig`` / ``GRPOConfig`` objects (no model needed); the truncation tests build
the real trainers on the tiny model and look at what the collator and the prompt tokenizer hand to the model; two
CLI runs train one step each with the study recipe (scaled down by explicit flags) and check ``variant.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from atp_graph.parsing import format_instruction
from cli import cli
from defenses import DPOSettings, GRPOSettings, read_variant
from defenses.config import RECIPES, DataSettings, recipe_report, study_lr
from defenses.dpo import build_dpo_trainer, dpo_config
from defenses.grpo import build_grpo_trainer, grpo_config
from defenses.variant import DefenseError, resolve_lr


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads (see tests/test_defenses.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(*args: str) -> Result:
    """The main CLI in-process, without the caller's ATP_* environment."""
    return CliRunner(env={k: None for k in os.environ if k.startswith("ATP_")}).invoke(cli, list(args))


# --- recipes and the learning-rate rule --------------------------------------------------------------------------


def test_recipe_fills_every_field_it_names_and_explicit_values_win():
    for cls in (DataSettings, DPOSettings, GRPOSettings):
        study = cls(recipe="study")
        for key, value in RECIPES["study"][cls.__name__].items():
            assert getattr(study, key) == value, (cls.__name__, key)
        assert cls() == cls(recipe="small")  # small = the field defaults
    d = DPOSettings(recipe="study", grad_accum=2, lr=3e-5)
    assert (d.grad_accum, d.lr, d.max_length, d.scheduler, d.warmup_ratio) == (2, 3e-5, 4096, "cosine", 0.1)
    assert recipe_report(d)["departures"] == {"grad_accum": {"recipe": 8, "used": 2}}
    g = GRPOSettings(recipe="study")
    assert (g.full, g.generations, g.prompts_per_step, g.batch_size, g.grad_accum) == (True, 4, 32, 4, 32)
    assert g.completions_per_step == 128 and (g.max_completion_length, g.max_prompt_length) == (2048, 1024)
    assert (g.beta, g.epsilon, g.epochs, g.kl_term) == (0.04, 0.2, 6, "plain")
    assert GRPOSettings(recipe="study", full=False).full is False  # a recipe's yes can be overridden by a no
    assert DataSettings(recipe="study").steering == "turn" and DataSettings(recipe="study").mismatched == "drop"


def test_study_learning_rate_rule():
    assert study_lr("dpo", model="hf:Qwen/Qwen3-8B") == 5e-6
    assert study_lr("dpo", model="hf:meta-llama/Llama-3.1-8B-Instruct") == 1e-5
    assert study_lr("dpo", model="smollm2") == 5e-6  # Llama-shaped, but not named Llama: the rule reads the name
    assert study_lr("grpo", kind="individual") == 1e-6 and study_lr("grpo", kind="collective") == 5e-6
    cfg, source = resolve_lr(DPOSettings(recipe="study"), "dpo", model="hf:meta-llama/Llama-3.1-8B-Instruct")
    assert cfg.lr == 1e-5 and "Llama" in source
    cfg, source = resolve_lr(GRPOSettings(lr=2e-6), "grpo", model="x", kind="collective")
    assert cfg.lr == 2e-6 and source == "given"


# --- the values TRL receives -------------------------------------------------------------------------------------


def test_dpo_study_recipe_reaches_trl_config(tmp_path: Path):
    cfg, _ = resolve_lr(DPOSettings(recipe="study"), "dpo", model="hf:Qwen/Qwen3-8B")
    args = dpo_config(cfg, tmp_path)
    assert (args.learning_rate, args.num_train_epochs, args.beta, args.loss_type) == (5e-6, 12, 0.1, ["sigmoid"])
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 8)
    assert args.lr_scheduler_type.value == "cosine" and args.warmup_steps == 0.1
    assert args.get_warmup_steps(120) == 12 and args.max_grad_norm == 1.0 and args.activation_checkpointing
    assert args.max_length is None  # TRL's own truncation (it cuts answers) is off; PromptStartTruncation cuts
    llama, _ = resolve_lr(DPOSettings(recipe="study"), "dpo", model="hf:meta-llama/Llama-3.1-8B-Instruct")
    assert dpo_config(llama, tmp_path).learning_rate == 1e-5
    small, _ = resolve_lr(DPOSettings(), "dpo", model="smollm2")
    args = dpo_config(small, tmp_path)
    assert (args.lr_scheduler_type.value, args.warmup_steps, args.gradient_accumulation_steps) == ("linear", 0, 1)


def test_grpo_study_recipe_reaches_trl_config(tmp_path: Path):
    cfg, _ = resolve_lr(GRPOSettings(recipe="study"), "grpo", model="hf:Qwen/Qwen3-8B", kind="individual")
    args = grpo_config(cfg, tmp_path, world=1)
    assert (args.num_generations, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 4, 32)
    assert (args.generation_batch_size, args.steps_per_generation) == (128, 32)  # 32 prompts x 4 generations
    assert (args.max_completion_length, args.epsilon, args.beta, args.temperature) == (2048, 0.2, 0.04, 1.0)
    assert (args.learning_rate, args.num_train_epochs, args.use_bias_correction_kl) == (1e-6, 6, False)
    assert args.lr_scheduler_type.value == "linear" and args.warmup_steps == 0
    collective, _ = resolve_lr(GRPOSettings(recipe="study"), "grpo", model="m", kind="collective")
    assert grpo_config(collective, tmp_path, world=1).learning_rate == 5e-6
    assert grpo_config(cfg, tmp_path, world=8).gradient_accumulation_steps == 4  # the study's 4 x 4 x 8 GPUs
    with pytest.raises(DefenseError, match="multiple of the 3 devices"):
        grpo_config(cfg, tmp_path, world=3)
    mine, _ = resolve_lr(
        GRPOSettings(
            generations=2,
            prompts_per_step=3,
            batch_size=2,
            loss_type="grpo",
            scheduler="cosine",
            warmup_ratio=0.2,
            epsilon=0.3,
        ),
        "grpo",
        model="m",
    )
    args = grpo_config(mine, tmp_path, world=1)
    assert (args.gradient_accumulation_steps, args.generation_batch_size, args.loss_type) == (3, 6, "grpo")
    assert (args.lr_scheduler_type.value, args.warmup_steps, args.epsilon) == ("cosine", 0.2, 0.3)


def test_grpo_batch_constraints_fail_in_one_line_naming_the_flag(tiny_model_dir: Path):
    model = f"hf:{tiny_model_dir}"
    for flags, named in (
        (["--prompts-per-step", "3", "--batch-size", "8"], "--prompts-per-step 3"),
        (["--recipe", "study", "--grad-accum", "8"], "--grad-accum 8"),
        (["--generations", "3"], "--generations 3"),
    ):
        r = _run("defend", "grpo", "--model", model, *flags)
        assert r.exit_code == 2 and named in r.output, r.output
        assert r.output.count("error:") == 1 and "Traceback" not in r.output


# --- truncation: the prompt's start goes, the answers stay ---------------------------------------------------------

SYSTEM = "START-MARKER " + "The workplace rules are long and detailed. " * 40
ANSWER_A, ANSWER_B = 'I follow the rule. {"choice": "Route A"}', 'More for me. {"choice": "Route B"}'


def _pair_rows(n: int = 2, *, long_answer: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        question = f"Case {i}: Route A follows the rule; Route B pays more. QUESTION-END"
        rows.append(
            {
                "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                "chosen": [{"role": "assistant", "content": ANSWER_A}],
                "rejected": [{"role": "assistant", "content": ANSWER_B}],
            }
        )
    if long_answer:
        rows.append({**rows[0], "chosen": [{"role": "assistant", "content": "hmm " * 200 + ANSWER_A}]})
    return rows


def test_dpo_truncation_drops_the_prompt_start_never_the_answer(tiny_model_dir: Path, tmp_path: Path):
    cfg, _ = resolve_lr(DPOSettings(max_length=64), "dpo", model="tiny")
    trainer, truncation, _ = build_dpo_trainer(str(tiny_model_dir), _pair_rows(long_answer=True), tmp_path, cfg)
    assert (truncation["pairs"], truncation["prompts_cut"], truncation["dropped_long_answers"]) == (3, 2, 1)
    assert len(trainer.train_dataset) == 2 and truncation["longest"] > 64
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    ids, mask, answer = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    assert ids.shape[1] <= 64
    for row in range(4):  # chosen 0, 1 then rejected 0, 1
        whole = tok.decode(ids[row][mask[row].bool()])
        assert "QUESTION-END" in whole and "START-MARKER" not in whole  # the prompt lost its start, kept its end
        assert (ANSWER_A if row < 2 else ANSWER_B) in tok.decode(ids[row][answer[row].bool()])  # the whole answer
    start = int(answer[0].argmax())
    assert torch.equal(ids[0][:start], ids[2][:start])  # chosen and rejected see the same prompt tokens


def test_grpo_prompt_limit_keeps_the_prompt_end(tiny_model_dir: Path, tmp_path: Path):
    opts = ["Route A", "Route B"]
    rows = [
        {
            "prompt": r["prompt"][:1]
            + [{"role": "user", "content": f"{r['prompt'][1]['content']} {format_instruction(opts)}"}],
            "options": opts,
            "aligned": "Route A",
        }
        for r in _pair_rows()
    ]
    cfg, _ = resolve_lr(GRPOSettings(max_prompt_length=32, max_completion_length=4), "grpo", model="tiny")
    trainer, truncation, _ = build_grpo_trainer(str(tiny_model_dir), rows, tmp_path, cfg)
    assert (truncation["prompts"], truncation["prompts_cut"]) == (2, 2) and truncation["longest_prompt"] > 32
    tok = trainer.processing_class
    text = tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=False)
    full = tok(text, add_special_tokens=False)["input_ids"]
    ids = trainer._tokenize_prompts([rows[0]["prompt"]])[0][0]
    assert list(ids) == full[-32:]  # the last 32 tokens: the question's end and the generation prompt
    cfg, _ = resolve_lr(GRPOSettings(max_prompt_length=4096, max_completion_length=4), "grpo", model="tiny")
    trainer, truncation, _ = build_grpo_trainer(str(tiny_model_dir), rows, tmp_path, cfg)
    assert truncation["prompts_cut"] == 0 and list(trainer._tokenize_prompts([rows[0]["prompt"]])[0][0]) == full


# --- one real step with the study recipe (scaled down by explicit flags) ------------------------------------------


def test_dpo_step_with_study_recipe(tiny_model_dir: Path, tmp_path: Path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _pair_rows(4)))
    out = tmp_path / "dpo"
    r = _run(
        "defend",
        "dpo",
        "--model",
        f"hf:{tiny_model_dir}",
        "--data",
        str(data),
        "--out",
        str(out),
        "--recipe",
        "study",
        "--max-steps",
        "1",
        "--grad-accum",
        "2",
        "--max-length",
        "96",
        "--lr",
        "1e-3",
    )
    assert r.exit_code == 0, r.output
    assert "recipe study (overridden: max_length=96, grad_accum=2)" in r.output and "lost their start" in r.output
    m = read_variant(out)
    assert m["recipe"]["name"] == "study" and m["config"]["lora_dropout"] == 0.0 and m["lr_source"] == "given"
    t = m["trainer"]
    assert (t["lr_scheduler_type"], t["warmup_steps"], t["gradient_accumulation_steps"]) == ("cosine", 0.1, 2)
    assert (t["per_device_train_batch_size"], t["learning_rate"], t["activation_checkpointing"]) == (1, 1e-3, True)
    assert m["truncation"]["prompts_cut"] == 4 and m["metrics"]["steps"] == 1


def test_grpo_full_fine_tune_step_with_study_recipe(tiny_model_dir: Path, tmp_path: Path):
    opts = ["Route A", "Route B"]
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": f"Case {i}. {SYSTEM[:200]} {format_instruction(opts)}"}],
                    "options": opts,
                    "aligned": "Route A",
                    "kind": "collective",
                }
            )
            + "\n"
            for i in range(2)
        )
    )
    out = tmp_path / "grpo"
    r = _run(
        "defend",
        "grpo",
        "--model",
        f"hf:{tiny_model_dir}",
        "--data",
        str(data),
        "--out",
        str(out),
        "--recipe",
        "study",
        "--max-steps",
        "1",
        "--prompts-per-step",
        "2",
        "--max-completion-length",
        "4",
        "--max-prompt-length",
        "32",
        "--no-gradient-checkpointing",
    )
    assert r.exit_code == 0, r.output
    m = read_variant(out)
    assert m["adapter"] is None and m["spec"] == f"hf:{out.resolve()}" and m["config"]["full"] is True
    t = m["trainer"]
    assert (t["num_generations"], t["per_device_train_batch_size"], t["gradient_accumulation_steps"]) == (4, 4, 2)
    assert (t["generation_batch_size"], t["epsilon"], t["beta"], t["use_bias_correction_kl"]) == (8, 0.2, 0.04, False)
    assert t["learning_rate"] == 5e-6 and "collective" in m["lr_source"]  # the data's kind picks the study's lr
    assert m["config"]["parse"] == "first" and m["config"]["kl_term"] == "plain"
    assert m["truncation"]["prompts_cut"] == 2 and m["completions_per_step"] == 8 and m["metrics"]["steps"] == 1
