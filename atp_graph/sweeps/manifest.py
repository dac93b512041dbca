"""The sweep folder: ``sweep.json`` (the manifest: spec hash, runs, status, timings, versions), one writer at a time
(``sweep.lock``), and each run's ordinary run folder under ``runs/``.

The manifest is rewritten atomically after every change of a run's status; the run folders themselves say which
rounds are done, so a driver killed at any moment loses at most the rounds in flight.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import UserError, printable
from ..run import RunDir, versions
from ..run.rundir import RunDirError, read_json
from .plan import PlannedRun

MANIFEST, LOCK, WORKERS_LOCK, RUNS = "sweep.json", "sweep.lock", "workers.lock", "runs"
Status = Literal["pending", "running", "done", "failed", "interrupted"]
"""pending: not started; running: handed to an executor; interrupted: the driver stopped while it ran."""


class SweepError(UserError):
    """A sweep folder that cannot be used, or an executor that cannot start."""


def now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunRecord(BaseModel):
    """One run's line in the manifest."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Its folder under ``runs/``."""
    axes: dict[str, Any]
    """Its axis values."""
    config: dict[str, Any]
    """Its whole config."""
    status: Status = "pending"
    """Where it stands."""
    attempts: int = 0
    """Times a driver handed it to an executor."""
    started: str | None = None
    """When the latest attempt was handed over (UTC)."""
    finished: str | None = None
    """When the latest attempt ended (UTC)."""
    seconds: float | None = None
    """Wall time of the latest attempt, measured by the worker."""
    resumed_from: int | None = None
    """Rounds already on disk when the latest attempt started (0 = a fresh start)."""
    error: str | None = None
    """Why the latest attempt failed (one line)."""
    traceback: str | None = None
    """The failure's traceback, when it was not a user error."""


class Manifest(BaseModel):
    """``sweep.json``: what the sweep is and where each run stands."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    spec_hash: str
    """Hash of the command, every run's name and config, and the model options."""
    command: str
    """explore or diffuse."""
    axes: list[str]
    """The axes, in the order of the run names."""
    spec: dict[str, Any]
    """The spec as loaded."""
    created: str
    """When the sweep folder was made (UTC)."""
    updated: str
    """Last change (UTC)."""
    versions: dict[str, str]
    """Package versions of the latest driver."""
    executor: str = "local"
    """The latest driver's executor."""
    runs: list[RunRecord]
    """Every run, in plan order."""


def run_state(path: Path) -> tuple[Literal["new", "partial", "done"], int]:
    """What a run folder holds: nothing yet, some rounds (resumable), or a finished run; and its completed rounds."""
    try:
        config = read_json(path / "config.json")
        rounds = int(config["resolved"]["rounds"])
    except (RunDirError, KeyError, TypeError, ValueError):
        return "new", 0
    try:
        done = int(read_json(path / "state.json")["round"])
    except (RunDirError, KeyError, TypeError, ValueError):
        done = 0
    finished = done >= rounds > 0
    return ("done" if finished and (path / "summary.json").exists() else "partial"), done


class SweepFolder:
    """A sweep's folder; :meth:`open` takes its lock and reads or creates its manifest."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, path: str | Path, *, spec: dict[str, Any], spec_hash: str, runs: list[PlannedRun], axes: list[str]
    ) -> Iterator[SweepFolder]:
        """Hold the sweep's lock while the block runs; refuse a folder that holds another spec's sweep."""
        p = Path(path)
        _make_folder(p)
        with exclusive(p / LOCK, f"{p}: another sweep driver is writing this folder; wait for it or stop it"):
            manifest = read_manifest(p) if (p / MANIFEST).exists() else None
            if manifest is None:
                if any(x.name not in (LOCK, MANIFEST, WORKERS_LOCK) for x in p.iterdir()):
                    raise SweepError(f"{p}: not empty and holds no {MANIFEST}; choose another --out")
                stamp = now()
                records = [RunRecord(name=r.name, axes=r.axes, config=r.config) for r in runs]
                manifest = Manifest(
                    spec_hash=spec_hash,
                    command=str(spec["command"]),
                    axes=axes,
                    spec=spec,
                    created=stamp,
                    updated=stamp,
                    versions={},
                    runs=records,
                )
            elif manifest.spec_hash != spec_hash:
                raise SweepError(
                    f"{p}: holds a sweep of another spec (hash {manifest.spec_hash}, this spec {spec_hash}); "
                    "use another --out, or the spec that made it"
                )
            manifest.versions = versions()
            folder = cls(p, manifest)
            folder.save()
            yield folder

    def run_path(self, name: str) -> Path:
        """A run's folder."""
        return self.path / RUNS / name

    def save(self) -> None:
        """Rewrite ``sweep.json`` atomically."""
        self.manifest.updated = now()
        RunDir(self.path).write_json(MANIFEST, self.manifest.model_dump(mode="json"))


def read_manifest(path: str | Path) -> Manifest:
    """A sweep folder's manifest, or a :class:`SweepError` saying why there is none."""
    f = Path(path) / MANIFEST
    if not f.exists():
        raise SweepError(f"{path}: no {MANIFEST} here; not a sweep folder")
    try:
        return Manifest.model_validate(read_json(f))
    except RunDirError as e:
        raise SweepError(str(e)) from None
    except ValidationError as e:
        raise SweepError(f"{f}: not a sweep manifest of this version of atp-graph ({e.errors()[0]['msg']})") from None


def _make_folder(p: Path) -> None:
    """Create the sweep folder ``p`` (and its parents), or raise a one-line :class:`SweepError` saying why not."""
    try:
        if p.exists() and not p.is_dir():
            raise SweepError(f"{printable(str(p))}: is not a folder; choose another --out")
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent that is a file, a read-only parent, a name too long
        raise SweepError(f"{printable(str(p))}: cannot use it as a sweep folder: {e.strerror or e}") from None


def _open_lock(path: Path) -> Any:
    """``path`` opened for locking, or a one-line :class:`SweepError` (a read-only folder)."""
    try:
        return open(path, "a+")  # noqa: SIM115 (closed by the caller's with block)
    except OSError as e:
        raise SweepError(f"{printable(str(path.parent))}: cannot write {path.name} there: {e.strerror or e}") from None


@contextlib.contextmanager
def exclusive(path: Path, message: str, *, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; wait up to ``wait`` seconds for it, then raise ``SweepError(message)``."""
    with _open_lock(path) as f:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise SweepError(message) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def hold_shared(path: Path) -> int:
    """Take a shared lock on ``path`` for the rest of this process (a local worker's mark; see
    :func:`wait_for_workers`); returns the open descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def wait_for_workers(folder: Path, *, timeout: float = 120.0) -> None:
    """Wait until no local worker of an earlier driver of this sweep is alive (each holds ``workers.lock``
    shared until it exits; an orphaned worker exits within a second of its driver's death)."""
    message = f"{folder}: workers of an earlier driver are still running after {timeout:.0f} s; stop them first"
    with exclusive(folder / WORKERS_LOCK, message, wait=timeout):
        pass
