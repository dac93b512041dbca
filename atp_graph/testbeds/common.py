"""What every testbed run does: resolve the config into a game, make the agents, play the durable loop, report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents import make_agents
from ..config import AgentConfig
from ..contracts import Game
from ..errors import UserError
from ..events import Event
from ..policies.base import Policy
from ..policies.options import answer_knobs
from ..policies.spec import SurrogateModel, load_model
from ..run import RunDir, faults, play_rounds, versions
from ..run.rundir import RunDirError, read_json

Build = Callable[[Any], tuple[Game, dict[str, Any]]]
"""config -> (game, resolved values: at least ``rounds`` and ``history_window``)."""
Report = Callable[[Any, Mapping[str, Any], Iterable[Any]], tuple[dict[str, Any], str]]
"""(config, resolved, events, *, surrogate) -> (summary, table). ``events`` may be an :class:`EventLog`: iterate it
without holding it in a list."""
Plot = Callable[[Path, dict[str, Any], Iterable[Any]], Any]
"""(folder, summary, events) -> writes the PNGs (``events`` as for :data:`Report`)."""


class RunResult:
    """What a testbed run produced."""

    def __init__(self, summary: dict[str, Any], table: str, events: Iterable[Event], path: Path | None):
        self.summary = summary
        """The numbers (also ``summary.json``)."""
        self.table = table
        """The Markdown table (also ``table.md``)."""
        self.path = path
        """The run folder, when one was written."""
        self._events = events

    @property
    def events(self) -> list[Event]:
        """Every decision of the run, typed (also ``events.jsonl``; read from there on first use, so a large run's
        events are in memory only when asked for)."""
        if not isinstance(self._events, list):
            self._events = list(self._events)
        return self._events


@dataclass(frozen=True)
class Testbed:
    """One testbed: how its config becomes a game, and how its events become a report."""

    kind: str
    """The command and the key of its config in ``config.json``."""
    config: type[AgentConfig]
    """Its config class."""
    build: Build
    report: Report
    plot: Plot
    postfix: Callable[[Sequence[Any]], str] | None = None
    """Progress-bar text for a round's events."""
    agents: Callable[..., Any] = make_agents
    """Makes the agents (arguments as :func:`~atp_graph.agents.make_agents`)."""

    def run(
        self,
        cfg: AgentConfig,
        *,
        policy: Policy | Callable[[], Policy | SurrogateModel] | None = None,
        out: str | Path | None = None,
        resume: str | Path | None = None,
        progress: bool = True,
    ) -> RunResult:
        """Run (or resume) the testbed.

        Args:
            cfg: The run's settings (ignored when resuming: the run folder's own config is used).
            policy: A loaded language model, or a function that loads one (called once the inputs are checked);
                ``None`` loads ``cfg.model`` (the surrogate for ``sim``).
            out: Run folder to write (``None``: nothing is written).
            resume: Run folder of an interrupted run to continue.
            progress: Show a progress bar.
        """
        done, saved, rundir = 0, None, None
        if resume is not None:
            rundir, config, done, saved = RunDir.resume(resume, kind=self.kind)
            cfg = self.config(**config[self.kind])
        game, resolved = self.build(cfg)
        resolved = {**resolved, "fingerprint": game.fingerprint()}  # type: ignore[attr-defined]
        if resume is not None and config["resolved"].get("fingerprint") not in (None, resolved["fingerprint"]):
            raise RunDirError(
                f"{resume}: the run's inputs changed since it started (a scenario, graph or protocol file, or the "
                "code's defaults); a resume would mix two experiments: restore them, or start a new run"
            )
        if resume is None and out is not None:
            RunDir.check_new(out)  # before the (slow) model load
        model = policy if policy is not None else load_model(cfg.model)
        if not isinstance(model, Policy | SurrogateModel) and callable(model):
            model = model()  # a loader: called only once the inputs are known to be good
        knobs = answer_knobs(model)
        if resume is not None:
            _same_knobs(resume, config.get("answer_knobs", {}), knobs)
        if resume is None and out is not None:
            rundir = RunDir.create(
                out,
                {self.kind: cfg.model_dump(), "resolved": resolved, "answer_knobs": knobs, "versions": versions()},
            )
        agents = self.agents(
            model,
            cfg,
            history_window=resolved["history_window"],
            agent_ids=game.agents,  # type: ignore[attr-defined]
            run_path=rundir.path if rundir else None,
            completed=done,
        )
        new = play_rounds(
            game,
            agents,
            rounds=resolved["rounds"],
            rundir=rundir,
            completed=done,
            saved=saved,
            progress=progress,
            desc=f"{self.kind} {len(game.agents)} agents",  # type: ignore[attr-defined]
            postfix=self.postfix,
            keep=rundir is None,
        )
        events = rundir.events() if rundir is not None else new
        return self._finish(cfg, resolved, events, rundir, surrogate=agents.surrogate)

    def render(self, path: Path, config: Mapping[str, Any]) -> RunResult:
        """Re-render a run folder's summary, table and plots from its config and events alone."""
        rundir = RunDir(path)
        state = path / "state.json"
        ckpt = read_json(state) if state.exists() else {}
        done = ckpt.get("round") if isinstance(ckpt, dict) else None
        rundir.check_events(done if isinstance(done, int) else config["resolved"]["rounds"])
        events = rundir.events()
        surrogate = any(e.policy == "surrogate" for e in events)  # stops at the first one
        cfg = self.config(**config[self.kind])
        return self._finish(cfg, config["resolved"], events, rundir, surrogate=surrogate)

    def _finish(
        self,
        cfg: AgentConfig,
        resolved: Mapping[str, Any],
        events: Iterable[Event],
        rundir: RunDir | None,
        *,
        surrogate: bool,
    ) -> RunResult:
        """Summary and table from the events; with a run folder, also summary.json, table.md and the plots."""
        summary, table = self.report(cfg, resolved, events, surrogate=surrogate)  # type: ignore[call-arg]
        if rundir is not None:
            with rundir.locked():  # no concurrent resume writes them at the same time
                rundir.write_json("summary.json", summary)
                faults.checkpoint("summary")
                rundir.write_text("table.md", table)
                faults.checkpoint("table")
                self.plot(rundir.path, summary, events)
                faults.checkpoint("plots")
        return RunResult(summary, table, events, rundir.path if rundir else None)


def check_study_items(cfg: AgentConfig, scenarios: Sequence[Any]) -> None:
    """Under ``preset: study``, every scenario must be one of the study's own imported items (``atp-*``)."""
    if cfg.preset != "study":
        return
    ours = [s.name for s in scenarios if not s.name.startswith("atp-")]
    if ours:
        raise UserError(
            f"preset study plays the study's own items, but {ours[0]!r} is not one: import them with "
            "`python cli.py scenarios import-atp <study JSON> --out DIR` and pass --scenarios DIR"
        )


def _same_knobs(path: str | Path, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """Refuse, in one line, a resume whose model answers differently from the run's (a knob both report differs;
    a wrapped policy that reports none is trusted)."""
    k = next((k for k in sorted(saved.keys() & now.keys()) if saved[k] != now[k]), None)
    if k is None:
        return
    flag = (
        f"--{k.replace('_', '-')} {saved[k]}" if k in ("max_new_tokens", "temperature", "top_p") else f"{k}={saved[k]}"
    )
    raise RunDirError(
        f"{path}: the run's model answered with {k}={saved[k]}, this one with {now[k]}; a resume would mix two "
        f"experiments: resume with {flag}"
    )
