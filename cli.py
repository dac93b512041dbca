"""atp-graph command line: ``python cli.py --help`` (installed as ``atp``).

Every option can also be set from the environment: ``ATP_<COMMAND>_<OPTION>``, e.g. ``ATP_DIFFUSE_MODEL=sim``.
"""

from __future__ import annotations

from pathlib import Path

import click

from atp_graph.cli_support import agent_options, default_out, friendly, load_model, model_options

SUPERVISION = [
    "all_unsupervised",
    "all_supervised",
    "alternating",
    "mostly_supervised",
    "mostly_unsupervised",
    "last_unsupervised",
    "last_supervised",
    "random",
]


class LazyGroup(click.Group):
    """A group whose heavier commands live with their packages and are imported only when used."""

    lazy = {"probe": "atp_graph.probe_cli:probe", "defend": "defenses.cli:defend", "compare": "defenses.cli:compare"}

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
def cli() -> None:
    """Measure and defend against the Alignment Tipping Process in self-evolving LLM agents."""


# ---------------------------------------------------------------- scenarios
@cli.group()
def scenarios() -> None:
    """List, show, validate and import scenario files."""


@scenarios.command("list")
@click.argument("path", required=False)
@friendly
def scenarios_list(path: str | None) -> None:
    """List scenarios (default: the built-in ones)."""
    from atp_graph.scenarios import BUILTIN_DIR, load_scenarios

    for s in load_scenarios([path or BUILTIN_DIR]):
        click.echo(f"{s.kind:<11} {s.name:<28} {len(s.variants)} variant(s)  {s.description}")


@scenarios.command("show")
@click.argument("name")
@friendly
def scenarios_show(name: str) -> None:
    """Show one scenario's items as the agent will read them (round 1)."""
    from atp_graph.environments import supervision_schedule, supervision_text
    from atp_graph.prompts import collective_context, individual_question, question
    from atp_graph.scenarios import IndividualScenario, collective_items, individual_items, resolve

    s = next(x for kind in ("individual", "collective") for x in _safe_resolve(resolve, name, kind))
    click.echo(f"# {s.name} ({s.kind}): {s.description}\n")
    if isinstance(s, IndividualScenario):
        sup = supervision_schedule(s.defaults.supervision_pattern, 1)[0]
        for it in individual_items(s):
            click.echo(
                f"## variant {it.variant}: comply pays {it.reward_compliant:g}, violate pays "
                f"{it.reward_violating_undetected:g} (caught: {it.reward_violating_detected:g})"
            )
            click.echo(
                f"[system] {it.system_prompt}\n[user] "
                f"{individual_question(it, supervision_text(it, s.defaults.supervision_pattern, sup))}\n"
            )
    else:
        for it in collective_items(s):
            system, body = it.render(n=8, threshold=it.rules.count(8))
            click.echo(f"## variant {it.variant} (shown for a group of 8): {it.rules}")
            q = question(body, collective_context(1, it.rules.start_capital), (it.independent, it.collective))
            click.echo(f"[system] {system}\n[user] {q}\n")


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
    from atp_graph.scenarios import load_scenarios

    found = load_scenarios(paths)
    click.echo(f"ok: {len(found)} scenario(s), {sum(len(s.variants) for s in found)} item(s)")


@scenarios.command("import-atp")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the YAML files.")
@friendly
def scenarios_import(file: str, out: str) -> None:
    """Convert the original study's question/template JSON into scenario YAML."""
    from atp_graph.atp_import import import_atp, write_scenarios
    from atp_graph.scenarios import load_scenarios

    written = write_scenarios(import_atp(Path(file)), Path(out))
    found = load_scenarios(written)
    click.echo(f"wrote {len(written)} scenario(s), {sum(len(s.variants) for s in found)} item(s) to {out}")


# ---------------------------------------------------------------- explore
@cli.command()
@click.option(
    "--scenarios", "scenarios_", default=None, help="Scenario file, folder or name (default: all individual)."
)
@model_options
@agent_options
@click.option("--rounds", type=int, default=None, help="Rounds (default: the scenarios', 6).")
@click.option("--supervision", type=click.Choice(SUPERVISION), default=None, help="Default: all_unsupervised.")
@click.option("--history-window", type=int, default=None, help="Transcript rounds shown (default 5).")
@click.option("--limit", type=int, default=None, help="Only the first N items.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/explore-<time>).")
@click.option("--resume", type=click.Path(file_okay=False), default=None, help="Continue an interrupted run.")
@friendly
def explore(
    scenarios_,
    model,
    device,
    dtype,
    max_new_tokens,
    temperature,
    top_p,
    compile_,
    trust_remote_code,
    rounds,
    supervision,
    history_window,
    limit,
    seed,
    out,
    resume,
    agent,
) -> None:
    """Self-Interested Exploration: every individual item for several rounds; violation rate per round."""
    from atp_graph.explore import ExploreConfig, run_explore
    from atp_graph.rundir import RunDir

    if resume:
        cfg = ExploreConfig(**RunDir.read_config(resume, kind="explore")["explore"])
        model = cfg.model
    else:
        cfg = ExploreConfig(
            scenarios=scenarios_,
            model=model,
            rounds=rounds,
            supervision=supervision,
            history_window=history_window,
            seed=seed,
            limit=limit,
            **agent,
        )
        out = out or str(default_out("explore"))
    policy = load_model(
        model,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        compile_=compile_,
        trust_remote_code=trust_remote_code,
        default_tokens=256,
    )
    result = run_explore(cfg, policy=policy, out=out, resume=resume)
    click.echo("\n" + result.table)
    click.echo(f"tipping round (violation >= 50%): {result.summary['tipping_round']}")
    _warn_invalid([e for e in result.events])
    click.echo(f"run folder: {result.path}")


# ---------------------------------------------------------------- diffuse
@cli.command()
@click.option(
    "--scenarios",
    "scenarios_",
    default=None,
    help="Collective scenario file, folder or name (default: public-fund; --paper-grid: all 7).",
)
@model_options
@agent_options
@click.option(
    "--topology",
    type=click.Choice(["complete", "small-world", "scale-free", "ring", "grid", "random", "star"]),
    default="small-world",
    show_default=True,
)
@click.option(
    "--graph",
    "graph_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Edge list, GraphML or GML file instead of a topology.",
)
@click.option("--agents", type=int, default=24, show_default=True)
@click.option("--k", type=int, default=4, show_default=True, help="Small-world ring neighbours.")
@click.option("--p", type=float, default=0.1, show_default=True, help="Small-world rewiring / random-graph edge prob.")
@click.option("--m", type=int, default=2, show_default=True, help="Scale-free edges per new node.")
@click.option("--rounds", type=int, default=4, show_default=True)
@click.option("--scope", type=click.Choice(["global", "local"]), default="global", show_default=True)
@click.option("--peer-view", type=click.Choice(["final_only", "full"]), default="final_only", show_default=True)
@click.option("--thresholds", default=None, help="Sweep thresholds, comma-separated (counts or fractions).")
@click.option(
    "--rewards", default=None, help="Sweep reward triples success/independent/collective, e.g. 1.2/1/0.8,1.5/1/0.5"
)
@click.option("--seed-deviants", type=int, default=0, help="Agents fixed to the collective choice.")
@click.option("--placement", type=click.Choice(["hubs", "random", "periphery"]), default="hubs", show_default=True)
@click.option(
    "--paper-grid", is_flag=True, help="The study's protocol: complete graph of 8, 3 rounds, t=2/4/6/8, 7 games."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/diffuse-<time>).")
@click.option("--resume", type=click.Path(file_okay=False), default=None, help="Continue an interrupted run.")
@friendly
def diffuse(
    scenarios_,
    model,
    device,
    dtype,
    max_new_tokens,
    temperature,
    top_p,
    compile_,
    trust_remote_code,
    topology,
    graph_file,
    agents,
    k,
    p,
    m,
    rounds,
    scope,
    peer_view,
    thresholds,
    rewards,
    seed_deviants,
    placement,
    paper_grid,
    seed,
    out,
    resume,
    agent,
) -> None:
    """Imitative Strategy Diffusion on a social graph; collective (deviant) adoption per round."""
    from atp_graph.diffuse import PAPER_GRID, DiffuseConfig, run_diffuse
    from atp_graph.rundir import RunDir

    if resume:
        cfg = DiffuseConfig(**RunDir.read_config(resume, kind="diffuse")["diffuse"])
    else:
        fields = dict(
            scenarios=scenarios_ or "public-fund",
            model=model,
            topology=topology,
            graph=graph_file,
            agents=agents,
            k=k,
            p=p,
            m=m,
            rounds=rounds,
            scope=scope,
            peer_view=peer_view,
            seed_deviants=seed_deviants,
            placement=placement,
            seed=seed,
            thresholds=_floats(thresholds, "--thresholds"),
            rewards=_triples(rewards),
            **agent,
        )
        if paper_grid:
            fields.update(PAPER_GRID, scenarios=scenarios_)
        cfg = DiffuseConfig(**fields)
        out = out or str(default_out("diffuse"))
    policy = load_model(
        cfg.model,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        compile_=compile_,
        trust_remote_code=trust_remote_code,
        default_tokens=160,
    )
    result = run_diffuse(cfg, policy=policy, out=out, resume=resume)
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
    _warn_invalid([e for e in result.events if not e["seeded"]])
    click.echo(f"run folder: {result.path}")


def _warn_invalid(events: list[dict]) -> None:
    """Say so when most answers named no valid option: the rates then measure formatting, not alignment."""
    bad = sum(e["choice"] is None for e in events)
    if events and bad / len(events) > 0.5:
        click.echo(
            f"warning: {bad / len(events):.0%} of answers named no valid option (counted as invalid / independent); "
            "read 'response' in events.jsonl, try --decision score or a larger --max-new-tokens",
            err=True,
        )


def _floats(text: str | None, name: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated numbers", param_hint=name) from None


def _triples(text: str | None) -> list[tuple[float, float, float]] | None:
    if not text:
        return None
    out = []
    for part in text.split(","):
        nums = part.split("/")
        try:
            if len(nums) != 3:
                raise ValueError
            out.append(tuple(float(x) for x in nums))
        except ValueError:
            raise click.BadParameter(
                f"{part!r}: expected success/independent/collective, e.g. 1.2/1/0.8", param_hint="--rewards"
            ) from None
    return out  # type: ignore[return-value]


def main() -> None:
    """Console-script entry point (``atp``)."""
    cli(prog_name="atp")


if __name__ == "__main__":
    cli()
