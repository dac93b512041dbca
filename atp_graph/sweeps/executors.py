"""Where runs execute: local worker processes (``concurrent.futures``, spawn) or a Ray cluster.

Neither schedules anything itself: locally, a process pool runs at most ``jobs`` runs at a time; on Ray, each run is
a task that reserves its resources (``num_cpus``, ``num_gpus``, ``memory``) and is retried by Ray when its worker
dies. Both yield each run's :class:`~atp_graph.sweeps.worker.Outcome` as soon as it ends.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

from .manifest import WORKERS_LOCK, SweepError, wait_for_workers
from .worker import Outcome, Task, init_local_worker, run_task

OnStart = Callable[[Task], None]
"""Called when a run is handed to the executor."""

RAY_EXTRA = "the ray executor needs Ray: pip install 'atp-graph[ray]'"
RETRY_ON: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
"""Exceptions (besides a dead worker) after which Ray retries a run: transient trouble reaching a model server."""


class Executor(Protocol):
    """Runs tasks and yields their outcomes as they end."""

    name: str

    def run(self, tasks: Sequence[Task], on_start: OnStart) -> Iterator[Outcome]: ...


def failed(task: Task, error: BaseException | str, *, trace: str | None = None) -> Outcome:
    """A failed outcome from an exception raised outside :func:`run_task`'s own handling."""
    if isinstance(error, BaseException):
        trace = trace or "".join(traceback.format_exception(error))
        text = f"{type(error).__name__}: {error}"
    else:
        text = error
    return Outcome(task.name, "failed", 0.0, 0, error=" ".join(text.split()), traceback=trace)


class LocalExecutor:
    """At most ``jobs`` runs at a time, each in a worker process of a ``ProcessPoolExecutor`` (spawn)."""

    name = "local"

    def __init__(self, jobs: int, folder: Path):
        self.jobs = max(1, jobs)
        self.folder = folder

    def run(self, tasks: Sequence[Task], on_start: OnStart) -> Iterator[Outcome]:
        wait_for_workers(self.folder)
        queue: deque[Task] = deque(tasks)
        running: dict[Future[Outcome], Task] = {}
        pool: ProcessPoolExecutor | None = None
        threads = max(1, int(max((t.cpus for t in tasks), default=1)))
        try:
            while queue or running:
                if pool is None:
                    pool = ProcessPoolExecutor(
                        max_workers=min(self.jobs, len(queue) + len(running)),
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=init_local_worker,
                        initargs=(str(self.folder / WORKERS_LOCK), threads),
                    )
                while queue and len(running) < self.jobs:
                    task = queue.popleft()
                    on_start(task)
                    running[pool.submit(run_task, task)] = task
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for future in finished:
                    task = running.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        yield failed(task, "a worker process died (killed, out of memory or crashed)")
                    except Exception as e:
                        yield failed(task, e)
                if broken:
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = None
        finally:
            if pool is not None:
                _stop(pool, interrupted=bool(running))


def _stop(pool: ProcessPoolExecutor, *, interrupted: bool) -> None:
    """Shut the pool down; runs still in flight get a Ctrl-C so they save their current round and stop (a second
    Ctrl-C stops at once)."""
    if interrupted:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGINT)
    pool.shutdown(wait=True, cancel_futures=True)


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`SweepError` naming the extra."""
    try:
        import ray
    except ImportError:
        raise SweepError(RAY_EXTRA) from None
    return ray


class RayExecutor:
    """One Ray task per run on the cluster at ``address`` (``None``: the running Ray session, else a local one
    started here with ``ray.init()``)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, retries: int = 2):
        self.address = address
        self.retries = retries

    def run(self, tasks: Sequence[Task], on_start: OnStart) -> Iterator[Outcome]:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            local = {"include_dashboard": False} if self.address is None else {}
            ray.init(address=self.address, log_to_driver=False, **local)
        remote = ray.remote(run_task)
        refs: dict[Any, Task] = {}
        try:
            for task in tasks:
                options: dict[str, Any] = {
                    "num_cpus": task.cpus,
                    "num_gpus": task.gpus,
                    "max_retries": self.retries,
                    "retry_exceptions": list(RETRY_ON),
                    "name": f"atp-sweep:{task.name}",
                }
                if task.memory:
                    options["memory"] = task.memory
                on_start(task)
                refs[remote.options(**options).remote(task)] = task
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    task = refs.pop(ref)
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else None
                        yield failed(task, cause or e, trace=str(e))
                    except ray.exceptions.RayError as e:
                        yield failed(task, e)
        finally:
            for ref in refs:
                ray.cancel(ref)
            if started:
                ray.shutdown()


def default_jobs(tasks: Sequence[Task]) -> int:
    """Parallel local runs when ``--jobs`` is not given: the cores over each run's CPUs; 1 when runs need a GPU
    (one model at a time on this machine's GPU; use Ray to spread GPU runs)."""
    if any(t.gpus for t in tasks):
        return 1
    per_run = max((t.cpus for t in tasks), default=1)
    return max(1, min(len(tasks) or 1, int((os.cpu_count() or 1) // per_run)))
