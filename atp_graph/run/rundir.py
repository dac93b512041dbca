"""A run directory: resolved config, append-only ``events.jsonl``, a per-round checkpoint, and outputs.

Completed rounds are on disk (events flushed and fsynced, then the checkpoint replaced atomically) before the
next round starts, so an interrupted run resumes from its last complete round.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError, printable
from ..events import SCHEMA_VERSION, Event, EventLog, dump_event, write_lines
from . import faults

CONFIG, EVENTS, STATE, LOCK = "config.json", "events.jsonl", "state.json", "run.lock"
KINDS = ("explore", "diffuse", "tools")
"""The commands that write run folders (the key of their settings in ``config.json``)."""
MAX_JSON_BYTES = 256 * 2**20
"""Largest config or checkpoint read (a 100,000-agent checkpoint is about 5 MB)."""


class RunDirError(UserError):
    """A run directory that cannot be created or resumed."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = _tmp(path)
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
        self.config_sha: str | None = None
        """Hash of ``config.json`` as the run wrote it; every checkpoint records it, so an edited config is noticed."""

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run's lock (``run.lock``) or fail at once if another process holds it."""
        try:
            f = open(self.path / LOCK, "a+")  # noqa: SIM115 (held for the block below)
        except OSError as e:
            raise RunDirError(f"{self.path / LOCK}: cannot open the run's lock: {e.strerror or e}") from None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise RunDirError(f"{self.path}: another process is running this run; wait for it or stop it") from None
            yield

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any]) -> RunDir:
        """Make a new run directory and write its config. The folder must be new or empty: a run never writes over
        files it did not write."""
        p = cls.check_new(path)
        try:
            p.mkdir(parents=True, exist_ok=True)
            text = json.dumps({**config, "schema_version": SCHEMA_VERSION}, indent=2, default=str)
            _atomic_write(p / CONFIG, text)
            (p / EVENTS).write_text("")
        except OSError as e:
            raise RunDirError(f"{p}: cannot write the run folder: {e.strerror or e}") from None
        run = cls(p)
        run.config_sha = _sha(text)
        return run

    @staticmethod
    def check_new(path: str | Path) -> Path:
        """``path`` as a folder a new run may use (new, or empty but for the half-written config of a run killed as
        it started), or a one-line :class:`RunDirError`."""
        p = Path(path)
        try:
            if (p / CONFIG).exists():
                raise RunDirError(f"{p}: already holds a run; use --resume {p} or another --out")
            if p.exists() and (not p.is_dir() or any(f.name != _tmp(p / CONFIG).name for f in p.iterdir())):
                what = "is not a folder" if not p.is_dir() else "holds files that are not a run"
                raise RunDirError(f"{p}: {what}; a run writes only into a new or empty folder: choose another --out")
            parent = next((a for a in p.absolute().parents if a.exists()), None)
            if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK)):
                raise RunDirError(f"{p}: cannot create it: {parent} is not a writable folder")
        except RunDirError:
            raise
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
            why = getattr(e, "strerror", None) or e
            raise RunDirError(f"{printable(str(p))}: cannot use it as a run folder: {why}") from None
        return p

    @staticmethod
    def read_config(path: str | Path, *, kind: str | None = None) -> dict[str, Any]:
        """The saved config of a ``kind`` run (``None``: of any testbed), or a :class:`RunDirError` saying why the
        folder cannot be resumed or re-rendered."""
        p = Path(path)
        if not (p / CONFIG).exists():
            raise RunDirError(f"{p}: no {CONFIG} here; not a run directory")
        config = read_json(p / CONFIG)
        found = next((k for k in (kind or "", *KINDS) if isinstance(config, dict) and k in config), None)
        if found is None or (kind is not None and found != kind):
            hint = f"; it is a {found} run: use `{found} --resume {p}`" if found else ""
            raise RunDirError(f"{p / CONFIG}: not {'a ' + kind if kind else 'an atp-graph'} run{hint}")
        if config.get("schema_version") != SCHEMA_VERSION:
            raise RunDirError(
                f"{p / CONFIG}: written by another version of atp-graph (schema {config.get('schema_version', 1)}, "
                f"this one reads {SCHEMA_VERSION}); re-run it, or read it with the version that wrote it"
            )
        resolved = config.get("resolved")
        rounds = resolved.get("rounds") if isinstance(resolved, dict) else None
        if found not in KINDS:  # another command's folder (defend demo): its own checks follow
            return config
        if not isinstance(config[found], dict) or not isinstance(rounds, int) or isinstance(rounds, bool):
            raise RunDirError(f"{p / CONFIG}: damaged (no {found} settings or resolved rounds); start a new run")
        return config

    @classmethod
    def resume(cls, path: str | Path, *, kind: str) -> tuple[RunDir, dict[str, Any], int, dict[str, Any] | None]:
        """Open a run of ``kind`` (``explore``/``diffuse``/``tools``) to continue: ``(rundir, config, completed,
        state)``.

        Events of a round that did not complete are dropped from ``events.jsonl``.
        """
        p = Path(path)
        config = cls.read_config(p, kind=kind)
        state: dict[str, Any] | None = None
        done = 0
        saved_sha = None
        if (p / STATE).exists():
            ckpt = read_json(p / STATE)
            damaged = RunDirError(f"{p / STATE}: damaged checkpoint; delete it to restart the run from round 1")
            check = _check(ckpt.get("round"), ckpt.get("state")) if isinstance(ckpt, dict) else None
            if check is None or ckpt.get("check", check) != check:  # no "check": written before it was added
                raise damaged  # edited by hand: its round and state no longer belong together
            done, state, saved_sha = ckpt["round"], ckpt["state"], ckpt.get("config_sha")
            if not isinstance(done, int) or not 0 <= done <= config["resolved"]["rounds"]:
                raise damaged
            if not isinstance(state, dict) or not {"game", "agents"} <= state.keys():
                raise damaged
        run = cls(p)
        run.config_sha = _sha((p / CONFIG).read_text(encoding="utf-8"))
        if state is not None and saved_sha not in (None, run.config_sha):
            raise RunDirError(
                f"{p / CONFIG}: edited since round {done} was saved; a resume would mix two experiments: restore it, "
                "or start a new run"
            )
        with run.locked():
            run._keep_completed(done)
        return run, config, done, state

    def check_events(self, done: int) -> None:
        """Every one of ``done`` rounds has its events once, for the same agents (read, not rewritten)."""
        if not (self.path / EVENTS).is_file():
            raise RunDirError(f"{self.path / EVENTS}: missing; the run's decisions are gone: start a new run")
        check = _Completeness(self.path / EVENTS, done)
        for e in self.events():
            if e.round <= done:
                check.add(e)
        check.finish()

    def _keep_completed(self, done: int) -> None:
        """Rewrite ``events.jsonl`` with the events of the ``done`` completed rounds only, streaming (a large run's
        events never sit in memory), after checking every completed round is there once."""
        check = _Completeness(self.path / EVENTS, done)
        tmp = _tmp(self.path / EVENTS)
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for e in self.events():
                    if e.round <= done:
                        check.add(e)
                        f.write(dump_event(e) + "\n")
                check.finish()
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path / EVENTS)

    def events(self) -> EventLog:
        """Every event recorded so far, streamed from ``events.jsonl`` (a torn last line from a crash is ignored)."""
        return EventLog(self.path / EVENTS)

    def commit_round(self, round_no: int, events: Iterable[Event], state: dict[str, Any]) -> None:
        """Append a round's events durably, then record the checkpoint that says the round is complete."""
        with open(self.path / EVENTS, "a", encoding="utf-8") as f:
            write_lines(f, events)
            f.flush()
            os.fsync(f.fileno())
        faults.checkpoint("events", round_no)
        ckpt = {"round": round_no, "state": state, "config_sha": self.config_sha, "check": _check(round_no, state)}
        _atomic_write(self.path / STATE, json.dumps(ckpt))
        faults.checkpoint("state", round_no)

    def write_json(self, name: str, data: Any) -> Path:
        """Write an output file atomically."""
        _atomic_write(self.path / name, json.dumps(data, indent=2, default=str))
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        """Write a text output atomically."""
        _atomic_write(self.path / name, text)
        return self.path / name


def _tmp(path: Path) -> Path:
    """Where ``path`` is written before it atomically replaces the old one (a name no user file has)."""
    return path.with_name(f".{path.name}.atp-tmp")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check(round_no: Any, state: Any) -> str:
    """What ties a checkpoint's round to its state: a hand-edited round or state no longer matches it."""
    return _sha(json.dumps([round_no, state]))  # the same text whether from the live state or the file's


def read_json(path: Path) -> Any:
    """A JSON file of a run or sweep folder, or a one-line :class:`RunDirError` saying what is wrong with it."""
    try:
        if not path.is_file():
            raise RunDirError(f"{path}: not a file")
        if path.stat().st_size > MAX_JSON_BYTES:
            raise RunDirError(f"{path}: larger than {MAX_JSON_BYTES // 2**20} MB; not a file atp-graph wrote")
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RunDirError(f"{path}: not text (UTF-8); not a file atp-graph wrote") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}:{e.lineno}: not valid JSON") from None
    except RecursionError:
        raise RunDirError(f"{path}: nested too deeply; not a file atp-graph wrote") from None
    except OSError as e:
        raise RunDirError(f"{path}: cannot read it: {e.strerror or e}") from None


class _Completeness:
    """Checks, one event at a time, that every completed round's events are there, once each, for the same agents:
    else the folder is damaged and a resume would silently report different numbers. Holds two rounds of agent ids
    at most (events are written round by round)."""

    def __init__(self, path: Path, done: int):
        self.damaged = f"{path}: damaged (the checkpoint says {done} round(s) completed, but "
        self.done = done
        self.seen: set[int] = set()
        self.first: set[str] | None = None
        self.round: int | None = None
        self.ids: set[str] = set()

    def add(self, e: Event) -> None:
        if e.round != self.round:
            self._close()
            if e.round in self.seen:  # the round comes back later in the file: its agents are there twice
                raise RunDirError(self.damaged + f"round {e.round} holds an agent twice); start a new run")
            if self.round is not None and e.round < self.round:
                raise RunDirError(self.damaged + f"round {e.round} comes after round {self.round}); start a new run")
            self.round, self.ids = e.round, set()
            self.seen.add(e.round)
        if e.agent in self.ids:
            raise RunDirError(self.damaged + f"round {e.round} holds an agent twice); start a new run")
        self.ids.add(e.agent)

    def _close(self) -> None:
        if self.round == 1:
            self.first = self.ids
        elif self.round is not None and self.first is not None and self.ids != self.first:
            raise RunDirError(self.damaged + f"round {self.round} has other agents than round 1); start a new run")

    def finish(self) -> None:
        missing = [r for r in range(1, self.done + 1) if r not in self.seen]
        if missing:
            raise RunDirError(self.damaged + f"round {missing[0]} has no events); start a new run")
        self._close()
