"""Command line: ``defend data|dpo|grpo`` and ``compare`` (registered on the main ``cli.py`` group).

Every field of the settings classes is an option (``lora_rank`` -> ``--lora-rank``), and every option can also be
set from the environment (``ATP_DEFEND_DPO_LR=1e-5``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from atp_graph.cli_support import default_out, friendly, load_model, model_options

from .config import DataSettings, DPOSettings, GRPOSettings
from .variant import DefenseError

F = TypeVar("F", bound=Callable[..., Any])


def _click_type(annotation: Any) -> Any:
    """The click type of a settings field (``X | None`` -> ``X``, ``Literal`` -> a choice)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _click_type(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    return {int: int, float: float, bool: bool}.get(annotation, str)


def settings_options(cls: type[BaseModel], *, skip: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Add one ``--option`` per field of ``cls`` (default ``None`` = keep the settings' default)."""

    def decorate(fn: F) -> F:
        for name, info in reversed(cls.model_fields.items()):
            if name in skip:
                continue
            flag = "--" + name.replace("_", "-")
            kind = _click_type(info.annotation)
            help_text = f"{info.description or ''} [default: {info.default}]"
            if kind is bool:
                fn = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)(fn)
            else:
                fn = click.option(flag, name, type=kind, default=None, help=help_text)(fn)
        return fn

    return decorate


def build_settings(cls: type[BaseModel], values: dict[str, Any]) -> Any:
    """An instance of ``cls`` from the options that were given."""
    return cls(**{k: v for k, v in values.items() if k in cls.model_fields and v is not None})


@click.group()
def defend() -> None:
    """Train defended variants: self-sampled preference data, DPO, GRPO (TRL + peft LoRA)."""


@defend.command("data")
@model_options
@click.option("--scenarios", "scenarios_", default=None, help="Scenario file, folder or name (default: built-ins).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The JSONL file to write.")
@settings_options(DataSettings)
@friendly
def data_cmd(model: str, device: str, dtype: str, max_new_tokens: int | None, temperature: float | None,
             top_p: float | None, compile_: bool, trust_remote_code: bool, scenarios_: str | None, out: str,
             **settings: Any) -> None:
    """Sample preference pairs from the model itself (aligned vs. deviant instruction, instruction not stored)."""
    from .data import make_preference_data, provenance_path

    cfg = build_settings(DataSettings, settings)
    policy = load_model(model, device=device, dtype=dtype, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, compile_=compile_, trust_remote_code=trust_remote_code, default_tokens=256)
    if policy is None:
        raise DefenseError("preference data needs a language model, not the surrogate (sim)")
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
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, mps...")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16, float16")
@click.option("--max-new-tokens", type=int, default=None, help="Tokens to generate per decision (default 256).")
@click.option("--temperature", type=float, default=None, help="Sampling temperature (model default).")
@click.option("--top-p", type=float, default=None, help="Nucleus sampling (model default).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model folders to run their own code.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run folder (default runs/compare-<time>).")
@friendly
def compare(variants: tuple[str, ...], testbed: str, rounds: int | None, limit: int | None, scenarios_: str | None,
            games: str | None, decision: str, seed: int, device: str, dtype: str, max_new_tokens: int | None,
            temperature: float | None, top_p: float | None, trust_remote_code: bool, out: str | None) -> None:
    """Run variants on the same items, seeds and rounds; table, overlay plot, interval notes."""
    from .compare import CompareConfig, run_compare

    cfg = CompareConfig(variants=list(variants), testbed=testbed, rounds=rounds, limit=limit,  # type: ignore[arg-type]
                        scenarios=scenarios_, games=games, decision=decision, seed=seed)  # type: ignore[arg-type]

    def load(spec: str) -> Any:
        return load_model(spec, device=device, dtype=dtype, max_new_tokens=max_new_tokens, temperature=temperature,
                          top_p=top_p, compile_=False, trust_remote_code=trust_remote_code, default_tokens=256)

    result = run_compare(cfg, out=Path(out or default_out("compare")), load=load)
    click.echo("\n" + result.table)
    for note in result.notes:
        click.echo(f"- {note}")
    click.echo(f"run folder: {result.path}")
