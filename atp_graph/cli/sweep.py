"""``atp sweep plan / run / report``: many runs from one spec, locally or on a Ray cluster, one comparative report.

Registered lazily on the main command group (:class:`atp_graph.cli.main.LazyGroup`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UserError
from .options import FilePath
from .support import friendly


@click.group()
def sweep() -> None:
    """Many runs from one spec (YAML): plan them, run them (local processes or Ray), compare them."""


@sweep.command("plan")
@click.argument("spec")
@friendly
def plan(spec: str) -> None:
    """List the runs a spec expands to, with their folder names and resources, without running anything."""
    from ..sweeps import axes_of, expand, load_spec, spec_hash

    s = load_spec(spec)
    runs = expand(s)
    axes = ", ".join(axes_of(s)) or "none"
    click.echo(f"{s.command} sweep: {len(runs)} run(s); axes: {axes}; spec hash {spec_hash(s, runs)}")
    for r in runs:
        res = r.resources
        memory = f" memory={res.memory / 1e9:g}GB" if res.memory else ""
        click.echo(f"{r.name}  model={r.config['model']}  cpus={res.cpus:g} gpus={res.gpus:g}{memory}")


@sweep.command("run")
@click.argument("spec")
@click.option("--out", type=FilePath(file_okay=False), default=None, help="Sweep folder [default: runs/sweep-<spec>].")
@click.option(
    "--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="Where runs go."
)
@click.option(
    "--jobs", type=click.IntRange(min=1), default=None, help="Local runs at a time [default: cores / cpus per run]."
)
@click.option("--address", default=None, help="Ray cluster (auto, ray://HOST:10001) [default: start a local Ray].")
@click.option("--retry-failed", is_flag=True, help="Also rerun runs that failed (from their last saved round).")
@click.option("--group-by", default=None, help="Axis of the report's overlay plot [default: the first non-seed axis].")
@friendly
def run(
    spec: str,
    out: str | None,
    executor: str,
    jobs: int | None,
    address: str | None,
    retry_failed: bool,
    group_by: str | None,
) -> None:
    """Run every run of SPEC into a sweep folder; run the same command again to skip finished runs and resume
    interrupted ones. Ends with the comparative report."""
    from ..sweeps import load_spec, run_sweep

    if address and executor != "ray":
        raise UserError("--address needs --executor ray")
    if jobs and executor == "ray":
        raise UserError("--jobs is for the local executor; Ray places runs by their resources (spec: resources)")
    s = load_spec(spec)
    folder = out or str(Path("runs") / f"sweep-{Path(spec).stem}")
    try:
        result = run_sweep(
            s,
            folder,
            executor=executor,  # type: ignore[arg-type]
            jobs=jobs,
            address=address,
            retry_failed=retry_failed,
            group_by=group_by,
        )
    except KeyboardInterrupt:
        click.echo(f"\nstopped: finished rounds are saved; run the same command (--out {folder}) to continue", err=True)
        raise
    done = sum(r.status == "done" for r in result.manifest.runs)
    click.echo(f"{done} of {len(result.manifest.runs)} runs finished; sweep folder: {result.path}")
    click.echo(f"report: {result.report.path} (plots, events.csv, rates.csv beside it)")
    for r in result.manifest.runs:
        if r.status != "done":
            click.echo(f"{r.status}: {r.name}" + (f": {r.error}" if r.error else ""), err=True)
    if result.failed:
        click.echo("rerun with --retry-failed to try the failed runs again", err=True)
        sys.exit(1)


@sweep.command("report")
@click.argument("sweep_dir", type=FilePath(file_okay=False))
@click.option("--group-by", default=None, help="Axis of the overlay plot [default: the first non-seed axis].")
@friendly
def report(sweep_dir: str, group_by: str | None) -> None:
    """(Re)write a sweep folder's comparative report from its run folders: report.md, plots, events.csv."""
    from ..sweeps import write_report

    result = write_report(sweep_dir, group_by=group_by)
    click.echo(result.markdown)
    click.echo(f"wrote {', '.join(p.name for p in result.files)} in {sweep_dir}")
