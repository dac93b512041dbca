"""Helpers shared by the command-line commands: clean one-line errors, model options, default run folders."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from .options import FilePath

F = TypeVar("F", bound=Callable[..., Any])
MAX_ERROR = 1000
"""Longest error line printed (a longer one is cut with ``...``)."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input: shown as one line, never as a traceback."""
    from pydantic import ValidationError

    from ..errors import UserError

    return (UserError, ValidationError, FileNotFoundError)


def _one_line(e: BaseException) -> str:
    from pydantic import ValidationError

    from ..errors import validation_message

    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, x['loc'])) or 'value'}: {validation_message(x)}" for x in e.errors())
    return str(e)


def friendly(fn: F) -> F:
    """Run a command; user errors exit 2 with ``error: ...``; Ctrl-C exits 130 and says how to resume."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            out = kwargs.get("out") or kwargs.get("resume")
            resumable = out and "resume" in kwargs and (Path(out) / "config.json").exists()  # a run folder exists
            hint = f"; completed rounds are saved: resume with --resume {out}" if resumable else ""
            click.echo(f"\ninterrupted{hint}", err=True)
            sys.exit(130)
        except expected_errors() as e:
            from ..errors import printable

            for line in _one_line(e).split("\n"):  # a name or value from the input may hold control bytes
                click.echo(f"error: {printable(line, MAX_ERROR)}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def default_out(command: str) -> Path:
    """``runs/<command>-<timestamp>`` (``-2``, ``-3``... when taken): every run is saved somewhere of its own."""
    base = Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def model_options(fn: F) -> F:
    """How a language model is loaded and sampled: one option per field of
    :class:`~atp_graph.policies.options.ModelOptions` (not part of the run's config; ``--model`` is)."""
    from ..policies.options import ModelOptions
    from .options import config_options

    return config_options(ModelOptions)(fn)


def model_settings(options: dict[str, Any], *, resume: str | None = None, kind: str = "") -> Any:
    """The :class:`~atp_graph.policies.options.ModelOptions` of the options a command was given (checked at once,
    before anything slow). A resume loads the model with the answer budget and sampling its run recorded, unless
    the command names them (a different value is then refused by the run)."""
    from ..policies.options import ModelOptions
    from ..run import RunDir
    from .options import build_config

    settings = build_config(ModelOptions, options)
    if resume:
        saved = RunDir.read_config(resume, kind=kind).get("answer_knobs", {})
        fill = {k: v for k, v in saved.items() if k in ModelOptions.model_fields and options.get(k) is None}
        settings = ModelOptions(**{**settings.model_dump(), **fill})
    return settings


def run_options(command: str) -> Callable[[F], F]:
    """``--out`` and ``--resume`` of a command that writes a run folder."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--resume", type=FilePath(file_okay=False), default=None, help="Continue an interrupted run."
        )(fn)
        return click.option(
            "--out", type=FilePath(file_okay=False), default=None, help=f"Run folder (default runs/{command}-<time>)."
        )(fn)

    return decorate
