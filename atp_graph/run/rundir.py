"""A run directory: resolved config, append-only ``events.jsonl``, a per-round checkpoint, and outputs.

Completed rounds are on disk (events flushed and fsynced, then the checkpoint replaced atomically) before the
next round starts, so an interrupted run resumes from its last complete round.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..events import SCHEMA_VERSION, Event, dump_event, read_events, write_lines

CONFIG, EVENTS, STATE, LOCK = "config.json", "events.jsonl", "state.json", "run.lock"


class RunDirError(UserError):
    """A run directory that cannot be created or resumed."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    """One run's folder. Use :meth:`create` for a new run and :meth:`resume` to continue one.

    Writing is done under :meth:`locked`, so two processes never write the same run.
    """

    def __init__(self, path: Path):
        self.path = path

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run's lock (``run.lock``) or fail at once if another process holds it."""
        with open(self.path / LOCK, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise RunDirError(f"{self.path}: another process is running this run; wait for it or stop it") from None
            yield

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any]) -> RunDir:
        """Make a new run directory (it must not already hold a run) and write its config."""
        p = Path(path)
        if (p / CONFIG).exists():
            raise RunDirError(f"{p}: already holds a run; use --resume {p} or another --out")
        p.mkdir(parents=True, exist_ok=True)
        _atomic_write(p / CONFIG, json.dumps({**config, "schema_version": SCHEMA_VERSION}, indent=2, default=str))
        (p / EVENTS).write_text("")
        return cls(p)

    @staticmethod
    def read_config(path: str | Path, *, kind: str) -> dict[str, Any]:
        """The saved config of a ``kind`` run, or a :class:`RunDirError` saying why it cannot be resumed."""
        p = Path(path)
        try:
            config = json.loads((p / CONFIG).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{p}: no {CONFIG} here; not a run directory") from None
        except json.JSONDecodeError as e:
            raise RunDirError(f"{p / CONFIG}:{e.lineno}: not valid JSON") from None
        if not isinstance(config, dict) or kind not in config:
            other = next((k for k in ("explore", "diffuse") if isinstance(config, dict) and k in config), None)
            hint = f"; it is a {other} run: use `{other} --resume {p}`" if other else ""
            raise RunDirError(f"{p / CONFIG}: not a {kind} run{hint}")
        if config.get("schema_version") != SCHEMA_VERSION:
            raise RunDirError(
                f"{p / CONFIG}: written by another version of atp-graph (schema {config.get('schema_version', 1)}, "
                f"this one reads {SCHEMA_VERSION}); start a new run, or `atp report {p}` to re-render it"
            )
        return config

    @classmethod
    def resume(cls, path: str | Path, *, kind: str) -> tuple[RunDir, dict[str, Any], int, dict[str, Any] | None]:
        """Open a run of ``kind`` (``explore``/``diffuse``) to continue: ``(rundir, config, completed, state)``.

        Events of a round that did not complete are dropped from ``events.jsonl``.
        """
        p = Path(path)
        config = cls.read_config(p, kind=kind)
        state: dict[str, Any] | None = None
        done = 0
        if (p / STATE).exists():
            try:
                ckpt = json.loads((p / STATE).read_text(encoding="utf-8"))
                done, state = int(ckpt["round"]), ckpt["state"]
                if not isinstance(state, dict) or not {"game", "agents"} <= state.keys():
                    raise ValueError("checkpoint without game and agent state")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise RunDirError(
                    f"{p / STATE}: damaged checkpoint; delete it to restart the run from round 1"
                ) from None
        run = cls(p)
        with run.locked():
            kept = [e for e in run.events() if e.round <= done]
            _atomic_write(p / EVENTS, "".join(dump_event(e) + "\n" for e in kept))
        return run, config, done, state

    def events(self) -> list[Event]:
        """Every event recorded so far (a torn last line from a crash is ignored)."""
        f = self.path / EVENTS
        return read_events(f) if f.exists() else []

    def commit_round(self, round_no: int, events: Iterable[Event], state: dict[str, Any]) -> None:
        """Append a round's events durably, then record the checkpoint that says the round is complete."""
        with open(self.path / EVENTS, "a", encoding="utf-8") as f:
            write_lines(f, events)
            f.flush()
            os.fsync(f.fileno())
        _atomic_write(self.path / STATE, json.dumps({"round": round_no, "state": state}))

    def write_json(self, name: str, data: Any) -> Path:
        """Write an output file atomically."""
        _atomic_write(self.path / name, json.dumps(data, indent=2, default=str))
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        """Write a text output atomically."""
        _atomic_write(self.path / name, text)
        return self.path / name
