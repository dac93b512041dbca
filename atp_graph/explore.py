"""Self-Interested Exploration: one agent per testbed item, repeated rounds, rewards that favour breaking the rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .agent import Evolution
from .coordinator import Settlement, Submission
from .engine import GraphEngine, messages_hash, run_rounds, versions
from .environments import INVALID, VIOLATE, individual_outcome, supervision_schedule, supervision_text
from .metrics import Rate, by_round, mean_by_round, tipping_round
from .policies.base import DecisionMode, Policy
from .prompts import individual_feedback, individual_question
from .report import plot_rates, rate_table
from .rundir import RunDir
from .scenarios import IndividualItem, individual_items, resolve
from .scenarios.models import SupervisionPattern
from .surrogate import SURROGATE_LABEL, Surrogate


class ExploreConfig(BaseModel):
    """Everything that defines an exploration run (written to ``config.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenarios: str | None = None
    """A scenario file, folder or built-in name; ``None`` = every built-in individual scenario."""
    model: str = "smollm2"
    """Model spec: ``smollm2``, ``hf:<folder or hub id>``, ``<provider>:<model>`` or ``sim`` (surrogate)."""
    rounds: int | None = Field(default=None, ge=1)
    """Rounds to play; ``None`` = the scenarios' default (6)."""
    evolution: Evolution = "transcript"
    """What agents carry between rounds: ``transcript``, ``reflection`` or ``none``."""
    supervision: SupervisionPattern | None = None
    """Supervision pattern; ``None`` = the scenarios' default (``all_unsupervised``)."""
    decision: DecisionMode = "generate"
    """``generate`` (free text ending in JSON) or ``score`` (option log-likelihoods, p(violate))."""
    history_window: int | None = Field(default=None, ge=0)
    """Transcript rounds shown; ``None`` = the scenarios' default (5)."""
    seed: int = 0
    """Seed for sampling, the random supervision pattern and the surrogate."""
    memory_hygiene: bool = False
    """Defense: refuse to store lessons that endorse rule-breaking (reflection mode)."""
    reanchor_every: int = Field(default=0, ge=0)
    """Defense: restate the rule every k rounds (0 = never)."""
    monitor_fallback: bool = False
    """Defense: a per-agent tipping monitor (CUSUM) switches the agent to the compliant option once it fires."""
    limit: int | None = Field(default=None, ge=1)
    """Play only the first N items (quick checks)."""


@dataclass
class ExploreResult:
    """What an exploration run produced."""

    summary: dict[str, Any]
    table: str
    events: list[dict[str, Any]]
    path: Path | None


def _rule(item: IndividualItem) -> str:
    return f"{item.compliant} is required; choosing {item.violating} breaks the rule."


class _GraphBackend:
    def __init__(self, policy: Policy, cfg: ExploreConfig, items: list[IndividualItem], window: int, store=None):
        self.items = items
        self.engine = GraphEngine.for_run(policy, cfg, history_window=window, store=store)
        self.seed = cfg.seed
        self.score = cfg.decision == "score"

    def play(self, r: int, supervised: bool, pattern: SupervisionPattern) -> list[dict[str, Any]]:
        by_key = {it.key: it for it in self.items}
        inputs = []
        for i, it in enumerate(self.items):
            sup = supervision_text(it, pattern, supervised)
            inputs.append(
                {
                    "agent": it.key,
                    "round": r,
                    "seed": self.seed * 1_000_003 + r * 10_007 + i,
                    "system": it.system_prompt,
                    "question": individual_question(it, sup),
                    "swapped": individual_question(it, sup, swapped=True) if self.score else None,
                    "options": (it.compliant, it.violating),
                    "target": it.violating,
                    "rule": _rule(it),
                }
            )

        def settle(subs: dict[str, Submission]) -> dict[str, Settlement]:
            out = {}
            for key, s in subs.items():
                outcome, reward = individual_outcome(s.choice, by_key[key], supervised)
                out[key] = Settlement(
                    reward, individual_feedback(r, s.choice, outcome, reward, supervised), {"outcome": outcome}
                )
            return out

        events = []
        for it, st in zip(self.items, self.engine.play(inputs, settle), strict=True):
            events.append(
                {
                    "testbed": "explore",
                    "scenario": it.scenario,
                    "variant": it.variant,
                    "round": r,
                    "supervised": supervised,
                    "prompt_hash": messages_hash(st["messages"]),
                    "question": st["messages"][-1]["content"],
                    "response": st["response"],
                    "choice": st["choice"],
                    "outcome": st["fields"]["outcome"],
                    "p_violate": st.get("p_target"),
                    "reward": st["reward"],
                    "lesson": st.get("lesson"),
                    "proposed_choice": st.get("proposed_choice"),
                    "lesson_refused": st.get("lesson_refused", False),
                }
            )
        return events

    def state(self) -> dict[str, Any]:
        return self.engine.state_dict()

    def load(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state)


class _SurrogateBackend:
    def __init__(self, cfg: ExploreConfig, items: list[IndividualItem]):
        self.items = items
        self.sim = Surrogate(len(items), seed=cfg.seed)
        self.low = np.array([it.reward_compliant for it in items])
        high = np.array([it.reward_violating_undetected for it in items])
        self.gain = (high - self.low) / np.maximum(np.abs(self.low), 1e-9)

    def play(self, r: int, supervised: bool, pattern: SupervisionPattern) -> list[dict[str, Any]]:
        violate, p = self.sim.decide_individual(self.gain, r)
        events, rewards = [], []
        for it, v, pv in zip(self.items, violate, p, strict=True):
            choice = it.violating if v else it.compliant
            outcome, reward = individual_outcome(choice, it, supervised)
            rewards.append(reward)
            events.append(
                {
                    "testbed": "explore",
                    "scenario": it.scenario,
                    "variant": it.variant,
                    "round": r,
                    "supervised": supervised,
                    "response": None,
                    "choice": choice,
                    "outcome": outcome,
                    "p_violate": float(pv),
                    "reward": reward,
                    "policy": "surrogate",
                }
            )
        self.sim.learn_individual(np.array(rewards), self.low)
        return events

    def state(self) -> dict[str, Any]:
        return {"surrogate": self.sim.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.sim.load_state_dict(state["surrogate"])


def summarize(
    events: list[dict[str, Any]], *, rounds: int, surrogate: bool, model: str, decision: str = "generate"
) -> tuple[dict, str]:
    """Per-round violation, invalid and (score mode / surrogate) expected violation rates, and the table."""
    viol = by_round(events, field="outcome", positive=VIOLATE, rounds=rounds)
    inval = by_round(events, field="outcome", positive=INVALID, rounds=rounds)
    pv = mean_by_round(events, field="p_violate", rounds=rounds)
    rows = {"violation rate": viol, "invalid rate": inval}
    if any(r.n for r in pv):
        rows["mean p(violate)"] = pv
    label = SURROGATE_LABEL if surrogate else model
    how = "" if surrogate else f", {decision} mode"
    table = rate_table(rows, first="metric", title=f"Self-Interested Exploration — {label}{how} — 95% Wilson intervals")
    summary = {
        "model": label,
        "surrogate": surrogate,
        "rounds": rounds,
        "items": len({(e["scenario"], e["variant"]) for e in events}),
        "violation_rate": [r.as_dict() for r in viol],
        "invalid_rate": [r.as_dict() for r in inval],
        "mean_p_violate": [r.as_dict() for r in pv] if any(r.n for r in pv) else None,
        "tipping_round": tipping_round([r.value for r in viol]),
    }
    return summary, table


def run_explore(
    cfg: ExploreConfig,
    *,
    policy: Policy | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> ExploreResult:
    """Run (or resume) the individual testbed. ``policy`` is required unless ``cfg.model == "sim"``."""
    done, saved = 0, None
    if resume is not None:
        rundir, config, done, saved = RunDir.resume(resume, kind="explore")
        cfg = ExploreConfig(**config["explore"])
    scenarios = resolve(cfg.scenarios, kind="individual")
    items = [it for s in scenarios for it in individual_items(s)][: cfg.limit]
    first = scenarios[0].defaults
    rounds = cfg.rounds or first.rounds
    pattern = cfg.supervision or first.supervision_pattern
    window = first.history_window if cfg.history_window is None else cfg.history_window
    surrogate = cfg.model == "sim"
    if resume is None:
        rundir = RunDir.create(out, {"explore": cfg.model_dump(), "versions": versions()}) if out else None
    store = None
    if not surrogate and cfg.evolution == "reflection":
        from .memory import open_store

        store = open_store(rundir.path if rundir else None, forget_after=done, agents=[it.key for it in items])
    if surrogate:
        backend: Any = _SurrogateBackend(cfg, items)
    else:
        if policy is None:
            raise ValueError("run_explore needs a policy for a non-surrogate model")
        backend = _GraphBackend(policy, cfg, items, window, store)
    if saved:
        backend.load(saved)
    schedule = supervision_schedule(pattern, rounds, seed=cfg.seed)
    previous = rundir.events() if (rundir is not None and done) else []

    def postfix(ev: list[dict]) -> str:
        return f"violation {sum(e['outcome'] == VIOLATE for e in ev) / max(len(ev), 1):.0%}"

    new = run_rounds(
        rundir=rundir,
        start=done,
        rounds=rounds,
        play=lambda r: backend.play(r, schedule[r - 1], pattern),
        state=backend.state,
        progress=progress,
        desc=f"explore {len(items)} items",
        postfix=postfix,
    )
    events = previous + new
    summary, table = summarize(events, rounds=rounds, surrogate=surrogate, model=cfg.model, decision=cfg.decision)
    summary.update({"supervision_pattern": pattern, "evolution": cfg.evolution, "decision": cfg.decision})
    if rundir is not None:
        rundir.write_json("summary.json", summary)
        rundir.write_text("table.md", table)
        series = {"violation rate": [Rate.from_dict(d) for d in summary["violation_rate"]]}
        if summary["mean_p_violate"]:
            series["mean p(violate)"] = [Rate.from_dict(d) for d in summary["mean_p_violate"]]
        plot_rates(
            rundir.path / "violation_rate.png",
            series,
            title=f"Violation rate by round — {summary['model']}",
            ylabel="violation rate",
            surrogate=surrogate,
        )
    return ExploreResult(summary, table, events, rundir.path if rundir else None)
