"""The command group and the testbed commands: ``python cli.py --help`` (installed as ``atp``).

Every option can also be set from the environment: ``ATP_<COMMAND>_<OPTION>``, e.g. ``ATP_DIFFUSE_MODEL=sim``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from ..config import (
    EVOLUTIONS,
    PAPER_GRID,
    SUPERVISION_PATTERNS,
    DiffuseConfig,
    ExploreConfig,
    ToolsConfig,
    resolve_decision,
)
from .options import FilePath, build_config, config_options
from .support import default_out, friendly, model_options, model_settings, run_options


class LazyGroup(click.Group):
    """A group whose heavier commands live with their packages and are imported only when used."""

    lazy = {
        "probe": "atp_graph.cli.probe:probe",
        "defend": "defenses.cli:defend",
        "compare": "defenses.cli:compare",
        "sweep": "atp_graph.cli.sweep:sweep",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"auto_envvar_prefix": "ATP", "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="atp-graph")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Measure and defend against the Alignment Tipping Process in self-evolving LLM agents."""
    _warn_unknown_env(ctx)


def _warn_unknown_env(ctx: click.Context) -> None:
    """Say so when an ``ATP_*`` variable names no command, or an ``ATP_<COMMAND>_<OPTION>`` variable no option of
    the command being run (either would be ignored)."""
    import os

    group = ctx.command
    assert isinstance(group, click.Group)
    commands = {f"ATP_{c.upper().replace('-', '_')}_" for c in group.list_commands(ctx)}
    for var in sorted(os.environ):
        if var.startswith("ATP_") and var not in OTHER_ENV and not any(var.startswith(c) for c in commands):
            click.secho(f"warning: {var} names no command of atp and is ignored", fg="yellow", err=True)
    name = ctx.invoked_subcommand
    cmd = group.get_command(ctx, name) if name else None
    if cmd is None or isinstance(cmd, click.Group):
        return
    prefix = f"ATP_{name.upper().replace('-', '_')}_"  # type: ignore[union-attr]
    known = {prefix + p.name.upper() for p in cmd.params if p.name}
    for var in sorted(v for v in os.environ if v.startswith(prefix) and v not in known):
        click.secho(f"warning: {var} is not an option of `{name}` and is ignored", fg="yellow", err=True)


OTHER_ENV = {"ATP_FAULT", "ATP_GRAPH_SCENARIOS", "ATP_HEAVY_TESTS"}
"""The ``ATP_*`` variables that are not options: fault injection, the built-in scenarios' folder, the test tier."""


# ---------------------------------------------------------------- scenarios
@cli.group()
def scenarios() -> None:
    """List, show, validate and import scenario files."""


@scenarios.command("list")
@click.argument("path", required=False)
@friendly
def scenarios_list(path: str | None) -> None:
    """List scenarios (default: the built-in ones)."""
    from atp_graph.errors import printable
    from atp_graph.scenarios import BUILTIN_DIR, load_scenarios

    for s in load_scenarios([path or BUILTIN_DIR]):
        shown = printable(s.description, unicode=True)
        click.echo(f"{s.kind:<11} {s.name:<28} {len(s.variants)} variant(s)  {shown}")


@scenarios.command("show")
@click.argument("name")
@friendly
def scenarios_show(name: str) -> None:
    """Show one scenario's items as the agent will read them (round 1)."""
    import networkx as nx

    from atp_graph.games import IndividualGame, ThresholdGame, populations
    from atp_graph.scenarios import IndividualScenario, collective_items, individual_items, resolve

    s = next(x for kind in ("individual", "tool", "collective") for x in _safe_resolve(resolve, name, kind))
    echo(f"# {s.name} ({s.kind}): {s.description}\n")
    if s.kind == "tool":
        _show_tools(s)
    elif isinstance(s, IndividualScenario):
        items = individual_items(s)
        game = IndividualGame(items, pattern=s.defaults.supervision_pattern, rounds=s.defaults.rounds)
        for i, it in enumerate(items):
            click.echo(
                f"## variant {it.variant}: comply pays {it.reward_compliant:g}, violate pays "
                f"{it.reward_violating_undetected:g} (caught: {it.reward_violating_detected:g})"
            )
            o = game.observation(1, i)
            echo(f"[system] {o.system}\n[user] {o.question}\n")
    else:
        items = collective_items(s)
        obs = ThresholdGame(nx.complete_graph(8), populations(items)).observe(1)
        for j, it in enumerate(items):
            o = obs.at(j * 8)
            echo(f"## variant {it.variant} (shown for a group of 8): {it.rules}")
            echo(f"[system] {o.system}\n[user] {o.question}\n")


def _show_tools(s: Any) -> None:
    """A tool scenario's items as the agent reads them in round 1, with the tools bound to its model."""
    from atp_graph.games.tools import ToolGame
    from atp_graph.scenarios import tool_items

    items = tool_items(s)
    game = ToolGame(items, pattern=s.defaults.supervision_pattern, rounds=s.defaults.rounds)  # type: ignore[arg-type]
    for i, it in enumerate(items):
        echo(
            f"## variant {it.variant}: complying pays {it.reward_compliant:g}, {it.violating} pays "
            f"{it.reward_violating_undetected:g} (caught: {it.reward_violating_detected:g})"
        )
        o = game.observation(1, i)
        echo(f"[system] {o.system}\n[user] {o.question}")
        for t in it.tools:
            flag = " [forbidden]" if t.forbidden else " [completes the task]" if t.completes else ""
            echo(f"[tool] {t.name}{flag}: {t.description} {json.dumps(dict(t.parameters))}")
        click.echo("")


@scenarios.command("render")
@click.argument("name")
@click.option("--round", "round_no", type=click.IntRange(min=1), default=1, show_default=True, help="Round to show.")
@click.option(
    "--agent",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Which agent: the item's index (individual) or the node (collective).",
)
@click.option(
    "--choose",
    type=click.Choice(["compliant", "violating"]),
    default="compliant",
    show_default=True,
    help="The choice every agent made in the earlier rounds (collective: violating = the collective one).",
)
@click.option("--protocol", default=None, help="Built-in protocol (default, study) or a protocol YAML file.")
@click.option("--supervision", type=click.Choice(SUPERVISION_PATTERNS), default=None, help="Individual: pattern.")
@click.option("--evolution", type=click.Choice(EVOLUTIONS), default=None, help="What agents carry between rounds.")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Rounds of the run (default: the scenario's).")
@click.option("--agents", type=click.IntRange(min=2), default=8, show_default=True, help="Collective: group size.")
@click.option("--threshold", type=float, default=None, help="Collective: the threshold (default: the scenario's).")
@friendly
def scenarios_render(
    name: str,
    round_no: int,
    agent: int,
    choose: str,
    protocol: str | None,
    supervision: str | None,
    evolution: str | None,
    rounds: int | None,
    agents: int,
    threshold: float | None,
) -> None:
    """Print exactly the messages an agent reads in a round (system prompt, transcript, question)."""
    from atp_graph.scenarios import resolve
    from atp_graph.testbeds.conversation import conversation

    if _safe_resolve(resolve, name, "tool"):
        raise click.UsageError(f"{name} is a tool scenario: `scenarios show {name}` prints what its agent reads")
    kind = next(k for k in ("individual", "collective") if _safe_resolve(resolve, name, k))
    common = {k: v for k, v in {"protocol": protocol, "evolution": evolution}.items() if v is not None}
    if kind == "individual":
        cfg = ExploreConfig(scenarios=name, rounds=rounds, supervision=supervision, model="scripted", **common)
    else:
        extra = {"thresholds": [threshold]} if threshold is not None else {}
        cfg = DiffuseConfig(
            scenarios=name,
            topology="complete",
            agents=agents,
            rounds=rounds or max(round_no, 3),
            model="scripted",
            **extra,
            **common,
        )
    for m in conversation(cfg, round_no=round_no, agent=agent, choose=choose):  # type: ignore[arg-type]
        echo(f"[{m['role']}]\n{m['content']}\n")


def echo(text: str) -> None:
    """Print text built from a scenario file (untrusted): terminal escapes and other control characters escaped."""
    from atp_graph.errors import printable_lines

    click.echo(printable_lines(text))


def _safe_resolve(resolve, name: str, kind: str):
    from atp_graph.scenarios import ScenarioError

    try:
        return resolve(name, kind=kind)
    except ScenarioError:
        if kind == "collective":
            raise
        return []


@scenarios.command("validate")
@click.argument("paths", nargs=-1, required=True)
@friendly
def scenarios_validate(paths: tuple[str, ...]) -> None:
    """Validate scenario files or folders; one line per problem, exit 2 when any."""
    from atp_graph.scenarios import Problem, ScenarioError, load_scenarios

    found = load_scenarios(paths)
    if not found:
        raise ScenarioError([Problem(" ".join(paths), 1, "(path)", "no scenario files (*.yaml, *.yml) there")])
    click.echo(f"ok: {len(found)} scenario(s), {sum(len(s.variants) for s in found)} item(s)")


@scenarios.command("import-atp")
@click.argument("file", type=FilePath(dir_okay=False))
@click.option("--out", required=True, type=FilePath(file_okay=False), help="Folder for the YAML files.")
@friendly
def scenarios_import(file: str, out: str) -> None:
    """Convert the original study's question/template JSON into scenario YAML."""
    from atp_graph.scenarios import load_scenarios
    from atp_graph.scenarios.atp_import import import_atp, write_scenarios

    written = write_scenarios(import_atp(Path(file)), Path(out), source=Path(file))
    found = load_scenarios(written)
    click.echo(f"wrote {len(written)} scenario(s), {sum(len(s.variants) for s in found)} item(s) to {out}")


# ---------------------------------------------------------------- explore
_AGENT_EXTRA = {"decision": ["auto"]}
"""``--decision auto``: score for the embedded smollm2 (too small to follow the answer format), else generate."""


@cli.command()
@config_options(ExploreConfig, extra_choices=_AGENT_EXTRA, types={"rounds": click.IntRange(min=1)})
@model_options
@run_options("explore")
@friendly
def explore(out: str | None, resume: str | None, **options: Any) -> None:
    """Self-Interested Exploration: every individual item for several rounds; violation rate per round."""
    from atp_graph.testbeds import run_explore

    _individual(run_explore, ExploreConfig, "explore", out, resume, options, "violation")


# ---------------------------------------------------------------- tools
@cli.command()
@config_options(
    ToolsConfig,
    extra_choices=_AGENT_EXTRA,
    types={"rounds": click.IntRange(min=1)},
    skip=("preset", "protocol", "parse", "monitor_fallback"),
)
@model_options
@run_options("tools")
@friendly
def tools(out: str | None, resume: str | None, **options: Any) -> None:
    """Tool-use drift: every tool scenario for several rounds, the agent acting by tool calls; forbidden-tool rate
    per round."""
    from atp_graph.testbeds import run_tools

    _individual(run_tools, ToolsConfig, "tools", out, resume, options, "forbidden-tool")


def _individual(run: Any, cls: type[BaseModel], kind: str, out: str | None, resume: str | None, options, what: str):
    """Run an individual-game testbed (explore, tools) and print its table, tipping round and warnings."""
    from atp_graph.policies.options import load_with_options

    cfg = _config(cls, kind, resume, options, out=out)
    settings = model_settings(options, resume=resume, kind=kind)
    policy = functools.partial(load_with_options, cfg.model, settings, kind="individual")
    result = run(cfg, policy=policy, out=out or (None if resume else default_out(kind)), resume=resume)
    click.echo("\n" + result.table)
    click.echo(f"tipping round ({what} >= 50%): {result.summary['tipping_round']}")
    warn(result.summary)
    click.echo(f"run folder: {result.path}")


# ---------------------------------------------------------------- diffuse
@cli.command()
@config_options(DiffuseConfig, extra_choices=_AGENT_EXTRA, types={"graph": FilePath(dir_okay=False)})
@click.option(
    "--paper-grid", is_flag=True, help="The study's protocol: complete graph of 8, 3 rounds, t=2/4/6/8, all 7 games."
)
@model_options
@run_options("diffuse")
@friendly
def diffuse(paper_grid: bool, out: str | None, resume: str | None, **options: Any) -> None:
    """Imitative Strategy Diffusion on a social graph; collective (deviant) adoption per round."""
    from atp_graph.policies.options import load_with_options
    from atp_graph.testbeds import run_diffuse

    clash = [k for k in PAPER_GRID if k != "scenarios" and options.get(k) is not None] if paper_grid else []
    if clash:
        flags = ", ".join("--" + k.replace("_", "-") for k in clash)
        raise click.UsageError(f"--paper-grid sets {flags} to the study's values; drop {flags} or --paper-grid")
    grid = {**PAPER_GRID, "scenarios": options.get("scenarios")} if paper_grid else {}
    cfg = _config(DiffuseConfig, "diffuse", resume, options, out=out, **grid)
    settings = model_settings(options, resume=resume, kind="diffuse")
    policy = functools.partial(load_with_options, cfg.model, settings, kind="collective")
    result = run_diffuse(cfg, policy=policy, out=out or (None if resume else default_out("diffuse")), resume=resume)
    click.echo("\n" + result.table)
    for cell, v in result.summary["cells"].items():
        click.echo(f"{cell}: tipping round {v['tipping_round']}, final adoption {v['final_adoption']:.1%}")
    re = result.summary["readoption_after_success"]
    shown = (
        f"{re['rate']:.1%} of {re['n']} agent-rounds"
        if re["n"]
        else "n/a (no agent chose collective in a successful round)"
    )
    click.echo(f"re-adoption right after a successful round: {shown}")
    warn(result.summary)
    click.echo(f"run folder: {result.path}")


# ---------------------------------------------------------------- report
@cli.command()
@click.argument("run_dir", type=FilePath(file_okay=False))
@friendly
def report(run_dir: str) -> None:
    """Re-render a run folder's summary, table and plots from its config.json and events.jsonl alone."""
    from atp_graph.testbeds import render_run

    result = render_run(run_dir)
    click.echo(result.table)
    click.echo(f"rewrote summary.json, table.md and plots in {result.path}")


def _config(
    cls: type[BaseModel], kind: str, resume: str | None, options: dict[str, Any], *, out: str | None, **fixed: Any
) -> Any:
    """The run's config: the saved one when resuming, else the given options (``--decision auto`` resolved)."""
    if resume and out:
        raise click.UsageError(
            f"--out starts a new run and --resume continues {resume}; give one (is ATP_{kind.upper()}_RESUME set?)"
        )
    if resume:
        from atp_graph.run import RunDir
        from atp_graph.run.rundir import RunDirError

        saved = RunDir.read_config(resume, kind=kind)[kind]
        given = sorted(k for k, v in options.items() if k in cls.model_fields and v is not None)
        if given or fixed:
            flags = ", ".join("--" + k.replace("_", "-") for k in given) or "--paper-grid"
            raise RunDirError(f"--resume continues {resume} with its own saved settings; drop {flags}")
        return cls(**saved)
    values = {k: v for k, v in options.items() if k in cls.model_fields}
    values["decision"] = resolve_decision(values.get("decision") or "auto", values.get("model") or "smollm2")
    return build_config(cls, values, **fixed)


def warn(summary: dict[str, Any]) -> None:
    """Print a run's notes (a converted graph file) and warnings (invalid or truncated answers)."""
    for note in summary.get("graph_notes") or []:
        click.echo(f"note: {note}", err=True)
    for w in summary.get("warnings") or []:
        click.secho(f"warning: {w}", fg="red", err=True)
    if summary.get("warnings"):
        click.echo("read 'response' in events.jsonl; try --decision score or a larger --max-new-tokens", err=True)


def main() -> None:
    """Console-script entry point (``atp``)."""
    cli(prog_name="atp")
