"""What a worker does with one run: start it, resume it from its last saved round, or see that it is finished.

:func:`run_task` runs in a local worker process or a Ray task; it only ever writes its own run folder.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from ..run.rundir import LOCK
from .manifest import exclusive, hold_shared, run_state

DEFAULT_TOKENS = {"explore": 256, "diffuse": 160}
"""Tokens per decision when the spec's model options do not say (the commands' own defaults)."""


@dataclass(frozen=True)
class Task:
    """One run handed to an executor (plain data: it travels to other processes and machines)."""

    command: str
    """explore or diffuse."""
    name: str
    """The run's name."""
    path: str
    """The run folder (absolute)."""
    config: dict[str, Any]
    """The run's config."""
    model_options: dict[str, Any]
    """How to load its model (:class:`~atp_graph.sweeps.spec.ModelOptions` fields)."""
    cpus: float = 1
    """CPU cores it may use (torch threads; Ray ``num_cpus``)."""
    gpus: float = 0
    """GPUs it needs (Ray ``num_gpus``)."""
    memory: int | None = None
    """Bytes of memory to reserve (Ray ``memory``)."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended."""

    name: str
    """The run's name."""
    status: Literal["done", "failed"]
    """done: its summary is written; failed: see ``error``."""
    seconds: float
    """Wall time in the worker."""
    resumed_from: int
    """Rounds already on disk when it started."""
    error: str | None = None
    """Why it failed (one line)."""
    traceback: str | None = None
    """The traceback of an unexpected failure."""


def run_task(task: Task) -> Outcome:
    """Run or resume one run; a user error (a bad scenario path...) comes back as a failed outcome, anything else
    is raised (so Ray can retry it and the driver can record the traceback)."""
    start = time.monotonic()
    path = Path(task.path)
    state, done = run_state(path)
    if state == "done":
        return Outcome(task.name, "done", 0.0, done)
    try:
        _run(task, path, resume=state == "partial")
    except UserError as e:
        return Outcome(task.name, "failed", time.monotonic() - start, done, error="; ".join(str(e).splitlines()))
    return Outcome(task.name, "done", time.monotonic() - start, done)


def _run(task: Task, path: Path, *, resume: bool) -> None:
    from ..policies import is_surrogate
    from ..policies.options import ModelOptions, load_with_options
    from ..run import RunDir, RunDirError
    from ..testbeds import TESTBEDS

    testbed = TESTBEDS[task.command]
    cfg = testbed.config(**task.config)
    if (path / LOCK).exists():  # a worker of a killed driver may take a moment to die (Ray reaps them lazily)
        with exclusive(path / LOCK, f"{path}: another process still writes this run after 30 s", wait=30):
            pass
    if resume and testbed.config(**RunDir.read_config(path, kind=task.command)[task.command]) != cfg:
        raise RunDirError(f"{path}: holds a run of another config; move it away to rerun this one")
    if not is_surrogate(cfg.model):
        import torch

        torch.set_num_threads(max(1, int(task.cpus)))
    options = ModelOptions(**task.model_options)
    policy = load_with_options(cfg.model, options, default_tokens=DEFAULT_TOKENS[task.command])
    if resume:
        testbed.run(cfg, policy=policy, resume=path, progress=False)
    else:
        testbed.run(cfg, policy=policy, out=path, progress=False)


def init_local_worker(workers_lock: str, threads: int) -> None:
    """Set up a local worker process: mark it alive in the sweep's ``workers.lock``, cap its threads, and exit it
    as soon as its driver dies (so a killed driver loses at most the rounds in flight, and the next driver never
    meets a stray writer). It leaves the terminal's process group: a Ctrl-C reaches the driver only, which passes
    exactly one on to each busy worker (save the round, then stop)."""
    os.setpgrp()
    hold_shared(Path(workers_lock))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.05)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="atp-sweep-orphan-watch", daemon=True).start()
