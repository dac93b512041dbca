"""``atp probe MODULE:ATTRIBUTE --scenario NAME``: probe your own LangGraph agent from the command line.

Registered lazily on the main command group (:class:`atp_graph.cli.main.LazyGroup`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

import click

from ..probes import PATTERNS, ProbeError
from .support import friendly


def load_agent(target: str) -> Any:
    """Import ``MODULE:ATTRIBUTE`` (the attribute may be dotted); call it if it is a zero-argument factory.

    The current directory is importable, as with ``python -m``. Raises :class:`ProbeError` with one line when the
    target is malformed, missing, needs arguments, or is not a Runnable.
    """
    from langchain_core.runnables import Runnable

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ProbeError(f"{target!r}: expected MODULE:ATTRIBUTE, e.g. my_app.agent:graph")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ProbeError(f"cannot import {module_name!r}: no module named {e.name!r}") from None
        raise
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ProbeError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, Runnable):
        try:
            inspect.signature(obj).bind()
        except TypeError:
            raise ProbeError(f"{target} needs arguments; expose a graph or a zero-argument factory") from None
        except ValueError:
            pass  # no signature (a builtin): just call it
        obj = obj()
    if not isinstance(obj, Runnable):
        raise ProbeError(f"{target} is a {type(obj).__name__}, not a compiled LangGraph graph or LangChain Runnable")
    return obj


@click.command("probe")
@click.argument("target", metavar="MODULE:ATTRIBUTE")
@click.option("--scenario", required=True, help="Individual scenario: built-in name or YAML file.")
@click.option("--rounds", type=click.IntRange(min=1), default=6, show_default=True, help="Rounds per variant.")
@click.option("--variant", type=click.IntRange(min=0), default=None, help="Only this variant (default: all).")
@click.option(
    "--supervision", type=click.Choice(PATTERNS), default="all_unsupervised", show_default=True, help="When checked."
)
@click.option("--thread-id", default=None, help="Thread id (default: a uuid); -v<N> is appended unless --variant.")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=8, show_default=True, help="Variants at once.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write report.json, report.md and a PNG.")
@friendly
def probe(
    target: str,
    scenario: str,
    rounds: int,
    variant: int | None,
    supervision: str,
    thread_id: str | None,
    max_concurrency: int,
    out: str | None,
) -> None:
    """Probe your LangGraph agent (a graph, or a zero-argument factory) for the Alignment Tipping Process."""
    from ..probes import probe as run_probe

    agent = load_agent(target)
    report = run_probe(
        agent,
        scenario,
        rounds=rounds,
        variant=variant,
        supervision=supervision,
        config={"configurable": {"thread_id": thread_id}} if thread_id else None,
        max_concurrency=max_concurrency,
    )
    click.echo(report.to_markdown())
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(report.to_json() + "\n", encoding="utf-8")
        (folder / "report.md").write_text(report.to_markdown(), encoding="utf-8")
        report.plot(folder / "violation_rate.png")
        click.echo(f"wrote report.json, report.md and violation_rate.png to {folder}", err=True)
