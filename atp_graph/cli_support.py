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

    from .errors import UserError

    return (UserError, ValidationError, FileNotFoundError)


def _one_line(e: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, x['loc'])) or 'value'}: {x['msg']}" for x in e.errors())
    return str(e)


def friendly(fn: F) -> F:
    """Run a command; user errors exit 2 with ``error: ...``; Ctrl-C exits 130 and says how to resume."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            out = kwargs.get("out") or kwargs.get("resume")
            resumable = out and "resume" in kwargs  # only commands with --resume can continue a run
            hint = f"; completed rounds are saved: resume with --resume {out}" if resumable else ""
            click.echo(f"\ninterrupted{hint}", err=True)
            sys.exit(130)
        except expected_errors() as e:
            for line in _one_line(e).splitlines():
                click.echo(f"error: {line}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def default_out(command: str) -> Path:
    """``runs/<command>-<timestamp>``: every run is saved somewhere."""
    return Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def model_options(fn: F) -> F:
    """The model spec and its loading / sampling options."""
    opts = [
        click.option(
            "--model",
            default="smollm2",
            show_default=True,
            help="smollm2 | hf:<folder or hub id>[+adapter:<folder>] | <provider>:<model> | sim (surrogate)",
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps..."),
        click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16, float16"),
        click.option("--max-new-tokens", type=int, default=None, help="Tokens to generate per decision."),
        click.option("--temperature", type=float, default=None, help="Sampling temperature (model default)."),
        click.option("--top-p", type=float, default=None, help="Nucleus sampling (model default)."),
        click.option("--compile", "compile_", is_flag=True, help="Static KV cache + compiled decode (GPU)."),
        click.option("--trust-remote-code", is_flag=True, help="Allow model folders to run their own code."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def resolve_decision(decision: str, model: str) -> str:
    """``auto`` = ``score`` for the embedded smollm2 (too small to follow the answer format), else ``generate``."""
    if decision != "auto":
        return decision
    return "score" if model == "smollm2" else "generate"


def agent_options(fn: F) -> F:
    """How agents evolve and decide, and the runtime defenses; the command receives them as ``agent``, a dict of
    config fields (with ``--decision auto`` already resolved for the ``model`` option)."""

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        evolution: str,
        decision: str,
        memory_hygiene: bool,
        reanchor_every: int,
        monitor_fallback: bool,
        **kwargs: Any,
    ) -> Any:
        agent = dict(
            evolution=evolution,
            decision=resolve_decision(decision, kwargs.get("model", "")),
            memory_hygiene=memory_hygiene,
            reanchor_every=reanchor_every,
            monitor_fallback=monitor_fallback,
        )
        return fn(*args, agent=agent, **kwargs)

    opts = [
        click.option(
            "--evolution",
            type=click.Choice(["transcript", "reflection", "none"]),
            default="transcript",
            show_default=True,
            help="What agents carry between rounds.",
        ),
        click.option(
            "--decision",
            type=click.Choice(["auto", "generate", "score"]),
            default="auto",
            show_default=True,
            help="generate: free text ending in JSON (the study); score: option log-likelihoods; auto: "
            "score for the embedded smollm2 (too small to follow the answer format), generate otherwise.",
        ),
        click.option("--memory-hygiene", is_flag=True, help="Defense: refuse lessons that endorse rule-breaking."),
        click.option("--reanchor-every", type=int, default=0, help="Defense: restate the rule every k rounds."),
        click.option(
            "--monitor-fallback",
            is_flag=True,
            help="Defense: a per-agent tipping monitor switches the agent to the safe option once it fires.",
        ),
    ]
    for o in reversed(opts):
        wrapper = o(wrapper)
    return wrapper  # type: ignore[return-value]


def load_model(
    model: str,
    *,
    device: str,
    dtype: str,
    max_new_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    compile_: bool,
    trust_remote_code: bool,
    default_tokens: int,
):
    """The policy for a model spec, or ``None`` for the surrogate."""
    if model == "sim":
        return None
    from .policies import load_policy

    sampling: dict[str, Any] = {"max_new_tokens": max_new_tokens or default_tokens}
    if temperature is not None:
        sampling["temperature"] = temperature
    if top_p is not None:
        sampling["top_p"] = top_p
    if compile_:
        sampling["compile"] = True
    click.echo(f"loading model {model} ...", err=True)
    return load_policy(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **sampling)
