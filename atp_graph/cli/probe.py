"""``atp probe MODULE:ATTRIBUTE --scenario NAME``: probe your own LangGraph agent from the command line.

Registered lazily on the main command group (:class:`atp_graph.cli.main.LazyGroup`).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import printable
from ..probes import PATTERNS, ProbeError
from ..probes.probe import MAX_REPEATS, MAX_RETRIES, MAX_ROUNDS
from ..run.rundir import RunDir, RunDirError
from ..scenarios.loader import FileProblem, json_object
from .options import FilePath
from .support import default_out, friendly


def import_object(target: str) -> Any:
    """Import ``MODULE:ATTRIBUTE`` (the attribute may be dotted); the current directory is importable, as with
    ``python -m``. Raises :class:`ProbeError` with one line when the target is malformed or missing."""
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
        raise ProbeError(f"importing {module_name!r} failed: {type(e).__name__}: {e}") from None
    except Exception as e:  # the user's module is broken: say so in one line
        raise ProbeError(f"importing {module_name!r} failed: {type(e).__name__}: {e}") from None
    except SystemExit as e:
        raise ProbeError(f"importing {module_name!r} called sys.exit({e.code!r})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ProbeError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_agent(target: str) -> Any:
    """The Runnable at ``MODULE:ATTRIBUTE``, calling it first if it is a zero-argument factory."""
    from langchain_core.runnables import Runnable

    obj = import_object(target)
    if callable(obj) and not isinstance(obj, Runnable):
        try:
            inspect.signature(obj).bind()
        except TypeError:
            raise ProbeError(f"{target} needs arguments; expose a graph or a zero-argument factory") from None
        except ValueError:
            pass  # no signature (a builtin): just call it
        try:
            obj = obj()
        except Exception as e:
            raise ProbeError(f"{target}() failed: {type(e).__name__}: {e}") from None
        except SystemExit as e:
            raise ProbeError(f"{target}() called sys.exit({e.code!r})") from None
    if not isinstance(obj, Runnable):
        raise ProbeError(f"{target} is a {type(obj).__name__}, not a compiled LangGraph graph or LangChain Runnable")
    return obj


class _TooLong(BaseException):
    """Raised by the alarm inside the user's module (a BaseException: its ``except Exception`` cannot swallow it)."""


def within(seconds: float, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or a :class:`ProbeError` once it has run ``seconds`` (``--load-timeout``): a module or factory
    that loops or blocks forever ends the probe instead of hanging it. Uses ``SIGALRM``, so it bounds Python code
    and interruptible waits in the main thread of a Unix process; elsewhere, or inside a C extension that never
    returns to Python, it cannot (Ctrl-C still can)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return fn(*args)
    armed = True

    def expire(signum: int, frame: Any) -> None:
        if armed:
            raise _TooLong

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        try:
            return fn(*args)
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    except _TooLong:
        raise ProbeError(f"{what} did not finish within {seconds:g} s (--load-timeout)") from None


def _json_object(value: str | None, option: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        return json_object(value)
    except FileProblem as e:
        raise ProbeError(f"{option}: {e}") from None


def _context(agent: Any, values: dict[str, Any] | None) -> Any:
    """``--context`` as the graph's context_schema type when that is a class (pydantic model or dataclass)."""
    if values is None:
        return None
    schema = getattr(agent, "context_schema", None)
    if isinstance(schema, type) and not issubclass(schema, dict) and not hasattr(schema, "__total__"):
        try:
            return schema(**values)
        except (TypeError, ValueError) as e:
            raise ProbeError(f"--context does not fit the agent's {schema.__name__}: {e}") from None
    return values


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """Refuse ``inf`` and ``nan``, which ``FloatRange`` lets through."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number of seconds", ctx, param)
    return value


def _new_folder(out: str) -> Path:
    """``--out`` as a new or empty folder the report may be written to (never among the user's files)."""
    try:
        folder = RunDir.check_new(out)
    except RunDirError:
        report = False
        with contextlib.suppress(OSError, ValueError):
            report = (Path(out) / "report.json").is_file()
        if report:  # the commonest case, said plainly
            raise ProbeError(f"{printable(out)} already holds a probe report; choose another --out") from None
        raise
    if folder.is_symlink() and not folder.exists():
        raise ProbeError(
            f"{folder}: a link to nowhere; a probe writes only into a new or empty folder: choose another --out"
        )
    return folder


@click.command("probe")
@click.argument("target", metavar="MODULE:ATTRIBUTE")
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    required=True,
    help="Individual scenario: built-in name or YAML file (repeat for several).",
)
@click.option("--rounds", type=click.IntRange(1, MAX_ROUNDS), default=6, show_default=True, help="Rounds per thread.")
@click.option("--variant", type=click.IntRange(min=0), default=None, help="Only this variant (default: all).")
@click.option(
    "--repeats",
    type=click.IntRange(1, MAX_REPEATS),
    default=1,
    show_default=True,
    help="Independent fresh threads per variant.",
)
@click.option(
    "--supervision",
    type=click.Choice(PATTERNS),
    default="all_unsupervised",
    show_default=True,
    help="When the supervisor checks.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random supervision pattern.")
@click.option("--run-id", default=None, help="Names the probe's threads atp-probe:<run-id>:... (default: random).")
@click.option("--thread-id", default=None, help="Probe on this thread of yours (needs --on-existing continue).")
@click.option(
    "--on-existing",
    type=click.Choice(["error", "continue"]),
    default="error",
    show_default=True,
    help="When a thread already has history: refuse, or play on top of it.",
)
@click.option("--delete-threads", is_flag=True, help="Delete the probe's threads from the checkpointer afterwards.")
@click.option("--messages-key", default="messages", show_default=True, help="State key holding the conversation.")
@click.option(
    "--extract",
    default=None,
    metavar="MODULE:ATTRIBUTE",
    help="Function: the agent's final output -> the chosen option's text or None.",
)
@click.option("--context", "context_json", default=None, metavar="JSON", help="Run context (context_schema graphs).")
@click.option("--state", "state_json", default=None, metavar="JSON", help="Extra state keys sent every round.")
@click.option(
    "--retries", type=click.IntRange(0, MAX_RETRIES), default=2, show_default=True, help="Retries of a failed call."
)
@click.option(
    "--backoff",
    type=click.FloatRange(min=0),
    callback=_finite,
    default=1.0,
    show_default=True,
    help="Seconds before the first retry (doubled each time, at most 60).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds one call may take before it counts as failed and is retried.",
)
@click.option(
    "--load-timeout",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite,
    default=120.0,
    show_default=True,
    help="Seconds importing MODULE (and --extract's) and calling a zero-argument factory may take.",
)
@click.option(
    "--invalid-threshold",
    type=click.FloatRange(0, 1),
    default=0.2,
    show_default=True,
    help="Warn when more than this share of answers names no option.",
)
@click.option("--max-concurrency", type=click.IntRange(min=1), default=8, show_default=True, help="Threads at once.")
@click.option(
    "--out",
    type=FilePath(file_okay=False),
    default=None,
    help="Folder for report.json, report.md and the plot (default runs/probe-<time>).",
)
@friendly
def probe(
    target: str,
    scenarios: tuple[str, ...],
    thread_id: str | None,
    delete_threads: bool,
    extract: str | None,
    context_json: str | None,
    state_json: str | None,
    out: str | None,
    load_timeout: float,
    **options: Any,
) -> None:
    """Probe your LangGraph agent (a graph, or a zero-argument factory) for the Alignment Tipping Process."""
    from ..probes import probe as run_probe

    folder = _new_folder(out) if out else default_out("probe")
    agent = within(load_timeout, f"loading {target}", load_agent, target)
    reader = within(load_timeout, f"importing {extract}", import_object, extract) if extract else None
    if reader is not None and not callable(reader):
        raise ProbeError(f"--extract {extract} is a {type(reader).__name__}, not a function")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the report's warnings are printed below, once
        report = run_probe(
            agent,
            list(scenarios),
            config={"configurable": {"thread_id": thread_id}} if thread_id else None,
            context=_context(agent, _json_object(context_json, "--context")),
            state=_json_object(state_json, "--state"),
            extract=reader,
            keep_threads=not delete_threads,
            progress=True,
            target=target,
            **options,
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(report.to_json() + "\n", encoding="utf-8")
        (folder / "report.md").write_text(report.to_markdown(), encoding="utf-8")
        report.plot(folder / "violation_rate.png")
    except OSError as e:
        raise ProbeError(f"{printable(str(folder))}: cannot write the report there: {e.strerror or e}") from None
    click.echo(report.to_markdown())
    kept = "deleted" if delete_threads and report.memory == "checkpointer" else "threads"
    click.echo(f"{kept}: " + ", ".join(report.threads), err=True)
    for w in report.warnings:
        click.secho(f"warning: {w}", fg="red", err=True)
    click.echo(f"wrote report.json, report.md and violation_rate.png to {folder}", err=True)
    if report.stopped:
        click.echo(f"error: the probe stopped early; the partial report is in {folder}", err=True)
        sys.exit(1)
