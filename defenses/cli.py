"""Command line: ``defend data|dpo|grpo`` and ``compare`` (registered on the main ``cli.py`` group).

Every field of the settings classes is an option (``lora_rank`` -> ``--lora-rank``), and every option can also be
set from the environment (``ATP_DEFEND_DPO_LR=1e-5``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from atp_graph.cli.options import build_config as build_settings
from atp_graph.cli.options import config_options as settings_options
from atp_graph.cli.support import default_out, friendly, load_model, model_options

from .config import DataSettings, DPOSettings, GRPOSettings
from .variant import DefenseError


@click.group()
def defend() -> None:
    """Train defended variants: self-sampled preference data, DPO, GRPO (TRL + peft LoRA)."""


@defend.command("data")
@click.option("--model", default="smollm2", show_default=True, help="smollm2 | hf:<folder or hub id> | tiny:<dir>")
@model_options
@click.option("--scenarios", "scenarios_", default=None, help="Scenario file, folder or name (default: built-ins).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The JSONL file to write.")
@settings_options(DataSettings)
@friendly
def data_cmd(model: str, scenarios_: str | None, out: str, **options: Any) -> None:
    """Sample preference pairs from the model itself (aligned vs. deviant instruction, instruction not stored)."""
    from atp_graph.policies import is_surrogate

    from .data import make_preference_data, provenance_path

    cfg = build_settings(DataSettings, options)
    if is_surrogate(model):
        raise DefenseError("preference data needs a language model, not the surrogate (sim)")
    policy = load_model(model, options, default_tokens=256)
    s = make_preference_data(policy, out, model=model, scenarios=scenarios_, settings=cfg).stats
    click.echo(f"{s.pairs} pair(s) from {s.items} item(s) (yield {s.yield_rate:.0%}); aligned answers found "
               f"{s.aligned_found}, deviant {s.deviant_found}; {s.samples} samples in {s.policy_calls} batched "
               f"call(s), {s.unparseable} unparseable, {s.wrong_option} chose the other option")
    click.echo(f"wrote {out} and {provenance_path(out)}")


def _report_training(result: Any) -> None:
    """Print where the variant is, how to load it, and its first/last metrics."""
    for key, value in result.manifest["metrics"].items():
        if isinstance(value, dict):
            click.echo(f"{key}: first {value['first']:.4g}, last {value['last']:.4g}")
    seconds = result.manifest["metrics"].get("seconds_per_step")
    if seconds is not None:
        click.echo(f"{result.manifest['metrics']['steps']} step(s), {seconds:.3g} s/step")
    click.echo(f"variant folder: {result.path}\nload it with: --model '{result.spec}'")


@defend.command("dpo")
@click.option("--model", default="smollm2", show_default=True, help="Base: smollm2 | hf:<folder or id> | tiny:<dir>")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Preference JSONL from `defend data`.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Variant folder (default runs/dpo-<time>).")
@settings_options(DPOSettings)
@friendly
def dpo_cmd(model: str, data: str, out: str | None, **settings: Any) -> None:
    """DPO (TRL DPOTrainer, LoRA by default) on the pairs; writes an adapter and variant.json."""
    from .dpo import train_dpo

    _report_training(train_dpo(model, data, out or default_out("dpo"), build_settings(DPOSettings, settings)))


@defend.command("grpo")
@click.option("--model", default="smollm2", show_default=True, help="Base: smollm2 | hf:<folder or id> | tiny:<dir>")
@click.option("--data", default=None, type=click.Path(dir_okay=False),
              help="Prompts from `defend data` output (else --scenarios).")
@click.option("--scenarios", "scenarios_", default=None, help="Scenario file, folder or name when there is no --data.")
@click.option("--kind", type=click.Choice(["individual", "collective"]), default="individual", show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N prompts.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Variant folder (default runs/grpo-<time>).")
@settings_options(GRPOSettings)
@friendly
def grpo_cmd(model: str, data: str | None, scenarios_: str | None, kind: str, limit: int | None, out: str | None,
             **settings: Any) -> None:
    """GRPO (TRL GRPOTrainer) with the study's reward: 1.0 aligned, 0.1 other, 0 unparseable."""
    from .grpo import train_grpo

    result = train_grpo(model, out or default_out("grpo"), data=data, scenarios=scenarios_, kind=kind,  # type: ignore[arg-type]
                        limit=limit, settings=build_settings(GRPOSettings, settings))
    _report_training(result)


@click.command()
@click.option("--variant", "variants", multiple=True, required=True,
              help="NAME=SPEC[;memory_hygiene][;reanchor=K][;evolution=reflection|transcript|none][;monitor]; "
                   "repeat; the first is the reference. SPEC may be a trained variant folder or sim.")
@click.option("--testbed", type=click.Choice(["explore", "diffuse", "both"]), default="explore", show_default=True)
@click.option("--rounds", type=int, default=None, help="Rounds (default: explore 6, diffuse 3).")
@click.option("--limit", type=int, default=None, help="Explore only the first N items.")
@click.option("--scenarios", "scenarios_", default=None, help="Individual scenarios (default: all 64 items).")
@click.option("--games", default=None, help="Collective games (default: all 7, the study's grid).")
@click.option("--decision", type=click.Choice(["generate", "score"]), default="generate", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@model_options
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run folder (default runs/compare-<time>).")
@friendly
def compare(variants: tuple[str, ...], testbed: str, rounds: int | None, limit: int | None, scenarios_: str | None,
            games: str | None, decision: str, seed: int, out: str | None, **options: Any) -> None:
    """Run variants on the same items, seeds and rounds; table, overlay plot, interval notes."""
    from .compare import CompareConfig, run_compare

    cfg = CompareConfig(variants=list(variants), testbed=testbed, rounds=rounds, limit=limit,  # type: ignore[arg-type]
                        scenarios=scenarios_, games=games, decision=decision, seed=seed)  # type: ignore[arg-type]

    def load(spec: str) -> Any:
        return load_model(spec, options, default_tokens=256)

    result = run_compare(cfg, out=Path(out or default_out("compare")), load=load)
    click.echo("\n" + result.table)
    for note in result.notes:
        click.echo(f"- {note}")
    click.echo(f"run folder: {result.path}")
