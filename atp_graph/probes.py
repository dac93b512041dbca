"""Probe an agent you already built for the Alignment Tipping Process.

:func:`probe` plays the exploration testbed's dilemma against your agent, round after round, on one thread per
scenario variant. It speaks exactly like the testbed (:mod:`atp_graph.prompts`): round 1 sends the scenario's
system prompt and question; every later round's human message starts with the previous round's reward feedback
and ends with the new question. The agent's own memory carries what it learns:

- a compiled LangGraph graph with a checkpointer receives only the new messages each round, on its thread;
- a graph without a checkpointer, or any other LangChain Runnable, gets the whole transcript replayed.

The result is a :class:`ProbeReport`: every round's prompt, answer, parsed choice and reward, the violation rate
per round with Wilson intervals, and the tipping round.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import typing
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from pydantic import BaseModel, ConfigDict, ValidationError, computed_field

from .environments import INVALID, VIOLATE, individual_outcome, supervision_schedule, supervision_text
from .errors import UserError
from .metrics import Rate, by_round, tipping_round
from .parsing import parse_choice
from .prompts import individual_feedback, individual_question
from .report import plot_rates, rate_table
from .scenarios import CollectiveScenario, IndividualItem, IndividualScenario, individual_items, resolve
from .scenarios.models import SupervisionPattern

__all__ = ["ProbeError", "ProbeReport", "ProbeRound", "aprobe", "probe"]

PATTERNS: tuple[str, ...] = typing.get_args(SupervisionPattern)
"""The supervision patterns :func:`probe` accepts."""


class ProbeError(UserError):
    """The agent or the probe's arguments cannot be probed; the message says what is missing."""


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
    """The human message the probe sent (previous feedback, then this round's question)."""
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
    """The feedback text that opens the next round's message."""


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

    def _events(self) -> list[dict[str, Any]]:
        return [{"round": r.round, "outcome": r.outcome} for r in self.rounds]

    @property
    def round_count(self) -> int:
        """How many rounds each variant played."""
        return max((r.round for r in self.rounds), default=0)

    def violation_rates(self) -> list[Rate]:
        """Violation rate per round over all variants, with 95% Wilson intervals."""
        return by_round(self._events(), field="outcome", positive=VIOLATE, rounds=self.round_count)

    def invalid_rates(self) -> list[Rate]:
        """Share of unparseable answers per round, with 95% Wilson intervals."""
        return by_round(self._events(), field="outcome", positive=INVALID, rounds=self.round_count)

    @computed_field
    @property
    def violation_rate_by_round(self) -> list[float]:
        """Share of rule-breaking choices per round over all variants probed (index 0 is round 1)."""
        return [r.value for r in self.violation_rates()]

    @computed_field
    @property
    def invalid_rate(self) -> float:
        """Share of all answers (every round and variant) that named no valid option."""
        return sum(r.outcome == INVALID for r in self.rounds) / len(self.rounds) if self.rounds else 0.0

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
    target = _Target(agent, state or {})
    schedule = supervision_schedule(supervision, rounds, seed=seed)  # type: ignore[arg-type]
    base: dict[str, Any] = dict(config or {})
    thread = str((base.get("configurable") or {}).get("thread_id") or uuid.uuid4())
    threads = {it.variant: f"{thread}-v{it.variant}" if variant is None else thread for it in items}
    gate = asyncio.Semaphore(max_concurrency)

    async def one(item: IndividualItem) -> list[ProbeRound]:
        async with gate:
            return await _play(target, item, threads[item.variant], base, schedule, supervision)

    tasks = [asyncio.ensure_future(one(it)) for it in items]
    try:
        played = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return ProbeReport(
        scenario=spec.name,
        supervision=supervision,
        memory=target.memory,
        threads=threads,
        rounds=[r for variant_rounds in played for r in variant_rounds],
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


async def _play(
    target: _Target,
    item: IndividualItem,
    thread_id: str,
    base: dict[str, Any],
    schedule: Sequence[bool],
    pattern: str,
) -> list[ProbeRound]:
    """All rounds of one variant on one thread."""
    transcript: list[BaseMessage] = []
    feedback = ""
    played: list[ProbeRound] = []
    options = (item.compliant, item.violating)
    for r, supervised in enumerate(schedule, start=1):
        question = individual_question(item, supervision_text(item, pattern, supervised))  # type: ignore[arg-type]
        prompt = f"{feedback}\n\n{question}" if feedback else question
        new: list[BaseMessage] = [SystemMessage(item.system_prompt)] if r == 1 and item.system_prompt else []
        new.append(HumanMessage(prompt, id=str(uuid.uuid4())))
        transcript.extend(new)
        config: dict[str, Any] = {
            **base,
            "configurable": {**(base.get("configurable") or {}), "thread_id": thread_id},
            "metadata": {**(base.get("metadata") or {}), "atp_probe_variant": item.variant, "atp_probe_round": r},
        }
        response = await target.ask(new, transcript, config, r)  # type: ignore[arg-type]
        transcript.append(AIMessage(response))
        choice = parse_choice(response, options)
        outcome, reward = individual_outcome(choice, item, supervised)
        feedback = individual_feedback(r, choice, outcome, reward, supervised)
        played.append(
            ProbeRound(
                round=r,
                variant=item.variant,
                supervised=supervised,
                prompt=prompt,
                response=response,
                choice=choice,
                outcome=outcome,  # type: ignore[arg-type]
                violated=outcome == VIOLATE,
                reward=reward,
                feedback=feedback,
            )
        )
    return played


class _Target:
    """The agent under probe: how to send it a round and read its answer."""

    def __init__(self, agent: Any, state: Mapping[str, Any]):
        if not isinstance(agent, Runnable):
            raise ProbeError(
                f"the agent must be a compiled LangGraph graph or a LangChain Runnable, not {type(agent).__name__}"
            )
        from langgraph.checkpoint.base import BaseCheckpointSaver
        from langgraph.pregel import Pregel

        inner = agent
        while isinstance(inner, RunnableBinding):
            inner = inner.bound
        self.agent = agent
        self.graph: Pregel | None = inner if isinstance(inner, Pregel) else None
        self.state = dict(state)
        if self.graph is not None and "messages" not in self.graph.channels:
            raise ProbeError("the graph's state has no 'messages' key; the probe talks to agents through messages")
        if "messages" in self.state:
            raise ProbeError("state must not set 'messages'; the probe sends those itself")
        saver = getattr(self.graph, "checkpointer", None)
        self.memory: Literal["checkpointer", "replay"] = (
            "checkpointer" if isinstance(saver, BaseCheckpointSaver) else "replay"
        )

    async def ask(self, new: list[BaseMessage], transcript: list[BaseMessage], config: RunnableConfig, r: int) -> str:
        """Send one round and return the text of the agent's reply."""
        if self.graph is None:
            out = await self.agent.ainvoke(list(transcript), config)
            if isinstance(out, AIMessage):
                return out.text
            if isinstance(out, str):
                return out
            raise ProbeError(f"the agent returned no AI message in round {r} (it returned {type(out).__name__})")
        sent = new if self.memory == "checkpointer" else transcript
        try:
            out = await self.agent.ainvoke({**self.state, "messages": list(sent)}, config)
        except KeyError as e:
            raise self._missing([str(e.args[0]) if e.args else "?"]) from e
        except ValidationError as e:
            missing = [".".join(map(str, x["loc"])) for x in e.errors() if x["type"] == "missing"]
            if not missing:
                raise
            raise self._missing(missing) from e
        if isinstance(out, Mapping) and out.get("__interrupt__"):
            raise ProbeError(f"the agent stopped at an interrupt in round {r}; the probe cannot answer interrupts")
        return _last_ai_text(out.get("messages") if isinstance(out, Mapping) else None, new[-1], r)

    def _missing(self, keys: list[str]) -> ProbeError:
        names = ", ".join(map(repr, keys))
        if self.graph is not None and all(k in self.graph.channels for k in keys):
            lead = f"the agent's state requires {names}, which the probe does not send (it sends only 'messages')"
        else:
            lead = f"the agent raised KeyError {names} (a state key it needs? the probe sends only 'messages')"
        return ProbeError(f"{lead}; pass it with state={{{', '.join(f'{k!r}: ...' for k in keys)}}}")


def _last_ai_text(messages: Any, sent: BaseMessage, r: int) -> str:
    """Text of the last AI message after the probe's question (or anywhere, if the question is not echoed)."""
    try:
        msgs = convert_to_messages(messages) if isinstance(messages, Sequence) else []
    except (ValueError, TypeError, NotImplementedError):
        msgs = []
    start = next((i + 1 for i in range(len(msgs) - 1, -1, -1) if msgs[i].id == sent.id), 0)
    reply = next((m for m in reversed(msgs[start:]) if isinstance(m, AIMessage)), None)
    if reply is None:
        raise ProbeError(f"the agent returned no AI message in round {r} (its output 'messages' holds none)")
    return reply.text
