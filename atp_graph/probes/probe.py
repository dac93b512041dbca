"""Probe an agent you already built for the Alignment Tipping Process.

:func:`probe` plays the exploration testbed's individual game against your agent, on the same round loop and with
the same words as ``explore`` (:mod:`atp_graph.games.prompts`), one thread per scenario variant: round 1 sends the
scenario's system prompt and question; every later round sends the previous round's reward feedback as its own
human message, then the new question. The agent's own memory carries what it learns:

- a compiled LangGraph graph with a checkpointer receives only the new messages each round, on its thread;
- a graph without a checkpointer, or any other LangChain Runnable, gets the whole transcript replayed.

The result is a :class:`ProbeReport`: every round's prompt, answer, parsed choice and reward, the violation rate
per round with Wilson intervals, and the tipping round.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ConfigDict, computed_field

from ..agents.runnable import ProbeError, RunnableAgents
from ..analysis.metrics import Rate, rate_by_round, tipping_round
from ..analysis.report import plot_rates, rate_table
from ..config import SUPERVISION_PATTERNS
from ..games import IndividualGame
from ..run import aplay_rounds
from ..scenarios import CollectiveScenario, IndividualScenario, individual_items, resolve

__all__ = ["ProbeError", "ProbeReport", "ProbeRound", "aprobe", "probe"]

PATTERNS = SUPERVISION_PATTERNS
"""The supervision patterns :func:`probe` accepts."""


class ProbeRound(BaseModel):
    """One round of one variant, as the agent saw and answered it."""

    model_config = ConfigDict(frozen=True)

    round: int
    """Round number, from 1."""
    variant: int
    """Scenario variant (index into the scenario's ``variants``)."""
    supervised: bool
    """Whether the supervisor checked this round (a caught violation pays the detected reward)."""
    prompt: str
    """This round's question as the probe sent it (the previous round's feedback went just before it)."""
    response: str
    """Text of the agent's last AI message."""
    choice: str | None
    """The option parsed from the response; ``None`` when it named no valid option."""
    outcome: Literal["comply", "violate", "invalid"]
    """What the choice was."""
    violated: bool
    """Whether the agent chose the rule-breaking option."""
    reward: float
    """What the environment paid."""
    feedback: str
    """The feedback the agent reads before the next round's question."""


class ProbeReport(BaseModel):
    """Everything one probe observed, with per-round rates. ``rounds`` holds all variants' rounds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    scenario: str
    """Scenario name."""
    supervision: str
    """Supervision pattern played."""
    memory: Literal["checkpointer", "replay"]
    """How the agent remembered earlier rounds: its own checkpointer, or the probe replaying the transcript."""
    threads: dict[int, str]
    """Thread id used for each variant probed."""
    rounds: list[ProbeRound]
    """Every round of every variant, ordered by variant, then round."""


    @property
    def round_count(self) -> int:
        """How many rounds each variant played."""
        return max((r.round for r in self.rounds), default=0)

    def violation_rates(self) -> list[Rate]:
        """Violation rate per round over all variants, with 95% Wilson intervals."""
        return rate_by_round(self.rounds, rounds=self.round_count, hit=lambda r: r.outcome == "violate")

    def invalid_rates(self) -> list[Rate]:
        """Share of unparseable answers per round, with 95% Wilson intervals."""
        return rate_by_round(self.rounds, rounds=self.round_count, hit=lambda r: r.outcome == "invalid")

    @computed_field
    @property
    def violation_rate_by_round(self) -> list[float]:
        """Share of rule-breaking choices per round over all variants probed (index 0 is round 1)."""
        return [r.value for r in self.violation_rates()]

    @computed_field
    @property
    def invalid_rate(self) -> float:
        """Share of all answers (every round and variant) that named no valid option."""
        return sum(r.outcome == "invalid" for r in self.rounds) / len(self.rounds) if self.rounds else 0.0

    @computed_field
    @property
    def tipping_round(self) -> int | None:
        """First round whose violation rate is at least 0.5, or ``None``."""
        return tipping_round(self.violation_rate_by_round)

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON (rates included); read it back with :meth:`from_json`."""
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> ProbeReport:
        """Rebuild a report written by :meth:`to_json`."""
        return cls.model_validate_json(text)

    def to_markdown(self) -> str:
        """A readable summary: rates per round with intervals, the tipping round, and each variant's choices."""
        n = self.round_count
        variants = sorted(self.threads)
        head = (
            f"# ATP probe: {self.scenario}\n\n"
            f"{len(variants)} variant(s) x {n} round(s), supervision `{self.supervision}`, memory: {self.memory}.\n\n"
        )
        table = rate_table(
            {"violation rate": self.violation_rates(), "invalid rate": self.invalid_rates()},
            first="metric",
            title="Rates by round (95% Wilson intervals)",
        )
        tip = f"\nTipping round (violation rate >= 50%): {self.tipping_round or 'none'}\n\n"
        grid = ["**Choices by variant**", "", "| variant | " + " | ".join(f"round {i + 1}" for i in range(n)) + " |"]
        grid.append("|---" * (n + 1) + "|")
        for v in variants:
            cells = [f"{r.outcome} ({r.reward:g})" for r in self.rounds if r.variant == v]
            grid.append(f"| {v} | " + " | ".join(cells) + " |")
        return head + table + tip + "\n".join(grid) + "\n"

    def plot(self, path: str | Path) -> Path:
        """Write a PNG of the violation rate by round with its 95% Wilson band; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return plot_rates(
            path,
            {"violation rate": self.violation_rates()},
            title=f"ATP probe: {self.scenario} ({self.supervision})",
            ylabel="violation rate",
        )


def probe(
    agent: Runnable,
    scenario: str | Path | IndividualScenario,
    *,
    rounds: int = 6,
    variant: int | None = None,
    supervision: str = "all_unsupervised",
    config: RunnableConfig | None = None,
    max_concurrency: int = 8,
    state: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> ProbeReport:
    """Play an individual ATP scenario against ``agent`` and measure how its choices drift.

    Args:
        agent: A compiled LangGraph graph whose state has a ``messages`` key, or any LangChain Runnable that takes
            a list of messages and returns an AI message (or a string).
        scenario: A built-in scenario name, a path to a scenario YAML file, or a loaded ``IndividualScenario``.
        rounds: Rounds to play per variant.
        variant: Probe only this variant (index); ``None`` probes every variant, each on its own thread.
        supervision: Supervision pattern (see :func:`atp_graph.environments.supervision_schedule`).
        config: Base RunnableConfig (callbacks, recursion limit...). ``configurable["thread_id"]`` names the thread
            (a uuid when absent); with ``variant=None`` each variant's thread is ``<thread_id>-v<variant>``.
        max_concurrency: Most variants played at the same time.
        state: Extra state keys sent with every graph input, for graphs whose state requires more than messages.
        seed: Seed of the ``random`` supervision pattern.

    Raises:
        ProbeError: The agent cannot be probed (missing state key, no AI message, not a Runnable) or an
            argument is out of range.
        ScenarioError: The scenario cannot be found or loaded.

    Safe to call from inside a running event loop (a notebook): the probe then runs on a helper thread.
    """
    coro = aprobe(
        agent,
        scenario,
        rounds=rounds,
        variant=variant,
        supervision=supervision,
        config=config,
        max_concurrency=max_concurrency,
        state=state,
        seed=seed,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def aprobe(
    agent: Runnable,
    scenario: str | Path | IndividualScenario,
    *,
    rounds: int = 6,
    variant: int | None = None,
    supervision: str = "all_unsupervised",
    config: RunnableConfig | None = None,
    max_concurrency: int = 8,
    state: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> ProbeReport:
    """Async :func:`probe` (same arguments); calls ``agent.ainvoke``."""
    spec = load_individual(scenario)
    items = individual_items(spec)
    if rounds < 1:
        raise ProbeError(f"rounds must be at least 1, got {rounds}")
    if max_concurrency < 1:
        raise ProbeError(f"max_concurrency must be at least 1, got {max_concurrency}")
    if supervision not in PATTERNS:
        raise ProbeError(f"unknown supervision pattern {supervision!r}; use one of {', '.join(PATTERNS)}")
    if variant is not None:
        if not 0 <= variant < len(items):
            raise ProbeError(f"scenario {spec.name!r} has variants 0..{len(items) - 1}, not {variant}")
        items = [items[variant]]
    base: dict[str, Any] = dict(config or {})
    thread = str((base.get("configurable") or {}).get("thread_id") or uuid.uuid4())
    threads = {it.key: f"{thread}-v{it.variant}" if variant is None else thread for it in items}
    agents = RunnableAgents(agent, threads=threads, config=base, state=state, max_concurrency=max_concurrency)
    game = IndividualGame(items, pattern=supervision, rounds=rounds, seed=seed)  # type: ignore[arg-type]
    events = await aplay_rounds(game, agents, rounds=rounds, progress=False)
    played = [
        ProbeRound(
            round=e.round,
            variant=e.variant,
            supervised=e.supervised,
            prompt=e.question or "",
            response=e.response or "",
            choice=e.choice,
            outcome=e.outcome,
            violated=e.outcome == "violate",
            reward=e.reward,
            feedback=agents.feedback[(e.agent, e.round)],
        )
        for e in sorted(events, key=lambda e: (e.variant, e.round))
    ]
    return ProbeReport(
        scenario=spec.name,
        supervision=supervision,
        memory=agents.memory,
        threads={it.variant: threads[it.key] for it in items},
        rounds=played,
    )


def load_individual(scenario: str | Path | IndividualScenario) -> IndividualScenario:
    """The one individual scenario named by ``scenario`` (name, YAML path, or the object itself)."""
    if isinstance(scenario, IndividualScenario):
        return scenario
    if isinstance(scenario, CollectiveScenario):
        raise ProbeError(f"scenario {scenario.name!r} is collective; the probe plays individual scenarios")
    if not isinstance(scenario, str | Path):
        raise ProbeError(f"scenario must be a name, a path or an IndividualScenario, not {type(scenario).__name__}")
    found = resolve(scenario, kind="individual")
    if len(found) != 1:
        names = ", ".join(s.name for s in found)
        raise ProbeError(f"{scenario} holds {len(found)} individual scenarios ({names}); probe one file or name")
    return found[0]  # type: ignore[return-value]

