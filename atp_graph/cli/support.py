"""Helpers shared by the command-line commands: clean one-line errors, model options, default run folders."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input: shown as one line, never as a traceback."""
    from pydantic import ValidationError

    from ..errors import UserError

    return (UserError, ValidationError, FileNotFoundError)


def _one_line(e: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, x['loc'])) or 'value'}: {x['msg'].removeprefix('Value error, ')}" for x in e.errors()
        )
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
            for line in _one_line(e).splitlines():
                click.echo(f"error: {line}", err=True)
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
    """How a language model is loaded and sampled (not part of the run's config; ``--model`` is)."""
    opts = [
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps..."),
        click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16, float16"),
        click.option(
            "--max-new-tokens",
            type=click.IntRange(min=1),
            default=None,
            help="Tokens per answer [default: the study's 32768 individual / 3276 collective for hf: and provider "
            "models; 256 / 160 for the embedded smollm2 and tiny models]. A cut-off answer is recorded as truncated.",
        ),
        click.option("--temperature", type=float, default=None, help="Sampling temperature (model default)."),
        click.option("--top-p", type=float, default=None, help="Nucleus sampling (model default)."),
        click.option("--compile", "compile_", is_flag=True, help="Static KV cache + compiled decode (GPU)."),
        click.option("--trust-remote-code", is_flag=True, help="Allow model folders to run their own code."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def run_options(command: str) -> Callable[[F], F]:
    """``--out`` and ``--resume`` of a command that writes a run folder."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--resume", type=click.Path(file_okay=False), default=None, help="Continue an interrupted run."
        )(fn)
        return click.option(
            "--out", type=click.Path(file_okay=False), default=None, help=f"Run folder (default runs/{command}-<time>)."
        )(fn)

    return decorate


def load_model(
    model: str, options: dict[str, Any], *, kind: str = "individual", default_tokens: int | None = None
) -> Any:
    """The decision maker for a model spec, loaded with the command's model options (the surrogate for ``sim``)."""
    from ..policies import is_surrogate
    from ..policies import load_model as load

    if is_surrogate(model):
        return load(model)
    from ..policies.spec import answer_budget

    budget = options.get("max_new_tokens") or default_tokens or answer_budget(model, kind)
    sampling: dict[str, Any] = {"max_new_tokens": budget}
    for key in ("temperature", "top_p"):
        if options.get(key) is not None:
            sampling[key] = options[key]
    if options.get("compile_"):
        sampling["compile"] = True
    click.echo(f"loading model {model} ...", err=True)
    return load(
        model,
        device=options.get("device", "auto"),
        dtype=options.get("dtype", "auto"),
        trust_remote_code=bool(options.get("trust_remote_code")),
        **sampling,
    )
