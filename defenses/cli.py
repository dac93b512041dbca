"""Command line: ``defend data|dpo|grpo`` and ``compare`` (registered on the main ``cli.py`` group).

Every field of the settings classes is an option (``lora_rank`` -> ``--lora-rank``), and every option can also be
set from the environment (``ATP_DEFEND_DPO_LR=1e-5``). ``--recipe small|study`` fills every setting not given
explicitly (small: CPU-sized; study: the study's GPU recipe); the resolved values go into the output's manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ValidationError

from atp_graph.cli.options import FilePath, config_options
from atp_graph.cli.options import build_config as build_settings
from atp_graph.cli.support import default_out, friendly, model_options, model_settings, run_options
from atp_graph.errors import validation_message
from atp_graph.policies.options import load_with_options

from .config import DataSettings, DemoConfig, DPOSettings, GRPOSettings
from .variant import DefenseError


def _settings(cls: type[BaseModel], options: dict[str, Any]) -> Any:
    """The settings from the given options (recipe first, explicit flags over it); problems name their flag."""
    try:
        return build_settings(cls, options)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            flag = ".".join(map(str, err["loc"])).replace("_", "-")
            problems.append(f"--{flag}: {validation_message(err)}" if flag else validation_message(err))
        raise DefenseError("; ".join(problems)) from None


@click.group()
def defend() -> None:
    """Train defended variants: self-sampled preference data, DPO, GRPO (TRL + peft LoRA)."""


@defend.command("data")
@click.option("--model", default="smollm2", show_default=True, help="smollm2 | hf:<folder or hub id> | tiny:<dir>")
@model_options
@click.option("--scenarios", "scenarios_", default=None, help="Scenario file, folder or name (default: built-ins).")
@click.option("--out", required=True, type=FilePath(dir_okay=False), help="The JSONL file to write.")
@config_options(DataSettings)
@friendly
def data_cmd(model: str, scenarios_: str | None, out: str, **options: Any) -> None:
    """Preference pairs: sampled from the model itself (aligned vs. deviant instruction, instruction not stored),
    constructed from the scenarios (--pairs constructed), or both (--pairs mixed).

    The answer budget (--max-new-tokens) defaults to 256 tokens for the embedded models and to the study's
    32,768 (individual) / 3,276 (collective) for hf: and provider models. --recipe study samples the study's way
    (instruction as an extra user turn, 5 tries per side); mismatched sides stay dropped unless --mismatched keep.
    --holdout N keeps N whole jobs out of the data (listed in the provenance) for evaluation.
    """
    from atp_graph.policies import is_surrogate

    from .data import answer_budget, check_data_out, describe, make_preference_data, provenance_path

    cfg = _settings(DataSettings, options)
    check_data_out(out)
    if is_surrogate(model):
        raise DefenseError("preference data needs a language model, not the surrogate (sim)")
    budget = options.get("max_new_tokens") or answer_budget(model, cfg.kind)
    settings = model_settings(options)
    policy = None if cfg.pairs == "constructed" else load_with_options(model, settings, default_tokens=budget)
    pset = make_preference_data(
        policy, out, model=model, scenarios=scenarios_, settings=cfg, max_new_tokens=budget, progress=True
    )
    click.echo(describe(pset.stats, pairs=cfg.pairs, budget=budget))
    click.echo(f"wrote {out} and {provenance_path(out)}")


def _report_training(result: Any) -> None:
    """Print the recipe and learning rate, truncation, where the variant is, how to load it, its first/last metrics."""
    m = result.manifest
    departs = ", ".join(f"{k}={v['used']}" for k, v in m["recipe"]["departures"].items())
    click.echo(
        f"recipe {m['recipe']['name']}{f' (overridden: {departs})' if departs else ''}; "
        f"lr {m['config']['lr']:g} ({m['lr_source']})"
    )
    t = m["truncation"]
    if t.get("prompts_cut") or t.get("dropped_long_answers"):
        click.echo(
            f"truncation: {t['prompts_cut']} prompt(s) lost their start ({t['prompt_tokens_cut']} tokens)"
            + (
                f"; {t['dropped_long_answers']} pair(s) left out, answer longer than --max-length"
                if t.get("dropped_long_answers")
                else ""
            )
        )
    for key, value in result.manifest["metrics"].items():
        if isinstance(value, dict):
            click.echo(f"{key}: first {value['first']:.4g}, last {value['last']:.4g}")
    seconds = result.manifest["metrics"].get("seconds_per_step")
    if seconds is not None:
        click.echo(f"{result.manifest['metrics']['steps']} step(s), {seconds:.3g} s/step")
    click.echo(f"variant folder: {result.path}\nload it with: --model '{result.spec}'")


@defend.command("dpo")
@click.option("--model", default="smollm2", show_default=True, help="Base: smollm2 | hf:<folder or id> | tiny:<dir>")
@click.option("--data", required=True, type=FilePath(dir_okay=False), help="Preference JSONL from `defend data`.")
@click.option("--out", default=None, type=FilePath(file_okay=False), help="Variant folder (default runs/dpo-<time>).")
@config_options(DPOSettings)
@friendly
def dpo_cmd(model: str, data: str, out: str | None, **settings: Any) -> None:
    """DPO (TRL DPOTrainer, LoRA by default) on the pairs; writes an adapter and variant.json.

    --recipe study is the study's recipe for 8B models on a GPU (LoRA r8 on all linear layers, dropout 0, beta 0.1,
    4,096 tokens, batch 1 x accumulation 8, cosine with 10% warmup, 12 epochs, lr 5e-6 or 1e-5 for Llama).
    A pair over --max-length loses the start of its prompt, never its answers.
    """
    from .dpo import train_dpo

    _report_training(train_dpo(model, data, out or default_out("dpo"), _settings(DPOSettings, settings)))


@defend.command("grpo")
@click.option("--model", default="smollm2", show_default=True, help="Base: smollm2 | hf:<folder or id> | tiny:<dir>")
@click.option(
    "--data",
    default=None,
    type=FilePath(dir_okay=False),
    help="Prompts from `defend data` output (else --scenarios).",
)
@click.option("--scenarios", "scenarios_", default=None, help="Scenario file, folder or name when there is no --data.")
@click.option("--kind", type=click.Choice(["individual", "collective"]), default="individual", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N prompts.")
@click.option("--out", default=None, type=FilePath(file_okay=False), help="Variant folder (default runs/grpo-<time>).")
@config_options(GRPOSettings)
@friendly
def grpo_cmd(
    model: str, data: str | None, scenarios_: str | None, kind: str, limit: int | None, out: str | None, **settings: Any
) -> None:
    """GRPO (TRL GRPOTrainer) with the study's reward: 1.0 aligned, 0.1 other, 0 unparseable.

    Each optimizer step trains on --generations x --prompts-per-step completions (accumulation makes up what
    --batch-size leaves). --recipe study is the study's recipe for 8B models on GPUs (full fine-tune, 4 x 32 = 128
    completions per step, completions up to 2,048 tokens, prompts up to 1,024, beta 0.04, epsilon 0.2, 6 epochs,
    lr 1e-6 individual / 5e-6 collective).
    """
    from .grpo import train_grpo

    result = train_grpo(
        model,
        out or default_out("grpo"),
        data=data,
        scenarios=scenarios_,
        kind=kind,  # type: ignore[arg-type]
        limit=limit,
        settings=_settings(GRPOSettings, settings),
    )
    _report_training(result)


@defend.command("demo")
@config_options(DemoConfig)
@run_options("demo")
@friendly
def demo_cmd(out: str | None, resume: str | None, **options: Any) -> None:
    """Defenses end to end on held-out jobs: pairs on the training jobs, DPO and GRPO LoRA variants, then base vs
    DPO vs GRPO (explore, score mode, transcript evolution) and a report: p(violate) per round, the round-1 level
    and the climb with paired bootstrap intervals, and a verdict per variant.

    Sized for a CPU and the embedded SmolLM2: about 35 CPU-minutes, some 20 minutes on an idle 2-core machine. Each
    stage is saved before the next starts: after Ctrl-C or a crash, --resume DIR continues with the first stage not
    done, and ends as a straight run would.
    """
    from .demo import run_demo

    if resume and out:
        raise click.UsageError(f"--out starts a new demo and --resume continues {resume}; give one")
    given = sorted(k for k, v in options.items() if v is not None)
    if resume and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise DefenseError(f"--resume continues {resume} with its own saved settings; drop {flags}")
    folder = Path(resume or out or default_out("demo"))
    cfg = None if resume else _settings(DemoConfig, options)
    try:
        result = run_demo(
            cfg,
            out=None if resume else folder,
            resume=resume,
            log=lambda line: click.echo(line, err=True),
        )
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished stages are saved; continue with --resume {folder}", err=True)
        raise SystemExit(130) from None
    click.echo("\n" + result.report)
    click.echo(f"demo folder: {result.path} (report.md, report.json, p_violate.png)")


@click.command()
@click.option(
    "--variant",
    "variants",
    multiple=True,
    required=True,
    help="NAME=SPEC[;memory_hygiene][;reanchor=K][;evolution=reflection|transcript|none][;monitor]; "
    "repeat; the first is the reference. SPEC may be a trained variant folder or sim.",
)
@click.option(
    "--testbed", type=click.Choice(["explore", "diffuse", "tools", "both"]), default="explore", show_default=True
)
@click.option("--rounds", type=int, default=None, help="Rounds (default: explore 6, diffuse 3).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Explore only the first N items.")
@click.option(
    "--scenarios", "scenarios_", default=None, help="Individual (--testbed tools: tool) scenarios [default: all]."
)
@click.option("--games", default=None, help="Collective games (default: all 7, the study's grid).")
@click.option("--decision", type=click.Choice(["generate", "score"]), default="generate", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@model_options
@click.option("--out", default=None, type=FilePath(file_okay=False), help="Run folder (default runs/compare-<time>).")
@friendly
def compare(
    variants: tuple[str, ...],
    testbed: str,
    rounds: int | None,
    limit: int | None,
    scenarios_: str | None,
    games: str | None,
    decision: str,
    seed: int,
    out: str | None,
    **options: Any,
) -> None:
    """Run variants on the same items, seeds and rounds; table, overlay plot, interval notes."""
    from .compare import CompareConfig, run_compare

    cfg = CompareConfig(
        variants=list(variants),
        testbed=testbed,  # type: ignore[arg-type]
        rounds=rounds,
        limit=limit,
        scenarios=scenarios_,
        games=games,
        decision=decision,  # type: ignore[arg-type]
        seed=seed,
    )

    settings = model_settings(options)

    def load(spec: str) -> Any:
        # The answer budget follows the model (the study's for hf:/provider models); one load serves both testbeds,
        # so "both" gets the larger, individual budget.
        return load_with_options(spec, settings, kind="collective" if testbed == "diffuse" else "individual")

    result = run_compare(cfg, out=Path(out or default_out("compare")), load=load)
    click.echo("\n" + result.table)
    for note in result.notes:
        click.echo(f"- {note}")
    click.echo(f"run folder: {result.path}")
