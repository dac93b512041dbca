"""Probe an agent you already built for the Alignment Tipping Process.

:func:`probe` plays the exploration testbed's individual game against your agent, on the same round loop and with
the same words as ``explore`` (:mod:`atp_graph.games.prompts`), one fresh thread per scenario variant and repeat:
round 1 sends the scenario's system prompt and question; every later round sends the previous round's reward
feedback as its own human message, then the new question. The agent's own memory carries what it learns (its
checkpointer; without one, the probe replays the transcript).

Threads are the probe's own, named ``atp-probe:<run_id>:<scenario>:v<variant>`` (``:r<repeat>`` with repeats): it
never writes to a thread you named unless you ask (``on_existing="continue"``), refuses a thread that already has
history, and deletes its threads afterwards with ``keep_threads=False``. The result is a :class:`ProbeReport`.
"""

from __future__ import annotations

import asyncio
import math
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import Runnable, RunnableConfig

from ..agents.replies import Extract
from ..agents.runnable import AgentFailed, DaemonExecutor, ProbeError, RunnableAgents
from ..analysis.quality import INVALID_WARN
from ..config import MAX_ROUNDS, SUPERVISION_PATTERNS
from ..events import ExploreEvent
from ..games import IndividualGame
from ..run import aplay_rounds
from ..run.provenance import versions
from ..scenarios import CollectiveScenario, IndividualScenario, individual_items, resolve
from .report import ProbeReport, ProbeRound

__all__ = [
    "MAX_REPEATS",
    "MAX_RETRIES",
    "MAX_ROUNDS",
    "ProbeError",
    "ProbeReport",
    "ProbeRound",
    "aprobe",
    "load_individuals",
    "probe",
]

MAX_REPEATS = 1_000
"""Most independent threads per variant."""
MAX_RETRIES = 100
"""Most extra attempts of a failing call."""
LIMITS = {"rounds": MAX_ROUNDS, "repeats": MAX_REPEATS, "retries": MAX_RETRIES}

PATTERNS = SUPERVISION_PATTERNS
"""The supervision patterns :func:`probe` accepts."""

ScenarioArg = str | Path | IndividualScenario
OnExisting = Literal["error", "continue"]


def probe(agent: Runnable, scenario: ScenarioArg | Sequence[ScenarioArg], **options: Any) -> ProbeReport:
    """Play individual ATP scenarios against ``agent`` and measure how its choices drift over rounds.

    Takes the same keyword arguments as :func:`aprobe` (documented there). From inside a running event loop (a
    notebook, an async app) use ``await aprobe(...)``: a loop-bound client cannot be driven from another loop, so
    this function refuses rather than fail halfway.

    Raises:
        ProbeError: The agent cannot be probed, an argument is out of range, or this was called inside a running
            event loop.
        ScenarioError: A scenario cannot be found or loaded.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            report = asyncio.run(_on_daemon_threads(aprobe(agent, scenario, **options)))
        for w in caught:  # re-raised here, so that they point at the caller's line
            warnings.warn(w.message, w.category, stacklevel=2)
        return report
    raise ProbeError("probe() was called inside a running event loop; use `await aprobe(...)` with the same arguments")


async def _on_daemon_threads(call: Any) -> ProbeReport:
    """Await ``call`` with this (fresh) loop's synchronous work on daemon threads (:class:`DaemonExecutor`): a sync
    node given up on after its timeout cannot keep the process alive after the report."""
    asyncio.get_running_loop().set_default_executor(DaemonExecutor())  # type: ignore[arg-type]
    return await call


async def aprobe(
    agent: Runnable,
    scenario: ScenarioArg | Sequence[ScenarioArg],
    *,
    rounds: int = 6,
    variant: int | None = None,
    repeats: int = 1,
    supervision: str = "all_unsupervised",
    seed: int = 0,
    config: RunnableConfig | None = None,
    context: Any = None,
    state: Mapping[str, Any] | None = None,
    messages_key: str = "messages",
    extract: Extract | None = None,
    run_id: str | None = None,
    on_existing: OnExisting = "error",
    keep_threads: bool = True,
    retries: int = 2,
    backoff: float = 1.0,
    timeout: float | None = 300.0,
    invalid_threshold: float = INVALID_WARN,
    max_concurrency: int = 8,
    progress: bool = False,
    target: str | None = None,
) -> ProbeReport:
    """Play individual ATP scenarios against ``agent`` (async) and measure how its choices drift over rounds.

    Args:
        agent: A compiled LangGraph graph (``create_agent``, a ``StateGraph``...), or any LangChain Runnable that
            takes a list of messages and returns an AI message, a string or a structured object. For tool scenarios
            (kind ``tool``), a factory: ``lambda tools: create_agent(model, tools)`` receives each scenario's tools
            and returns the agent; the result is then a :class:`~.tool_probe.ToolProbeReport`
            (:mod:`.tool_probe`).
        scenario: A built-in scenario name, a YAML path (every individual scenario in it), a loaded
            ``IndividualScenario``, or a list of these.
        rounds: Rounds to play per thread.
        variant: Probe only this variant of each scenario; ``None`` probes every variant.
        repeats: Independent fresh threads per variant (more answers per round, narrower intervals).
        supervision: Supervision pattern (one of :data:`PATTERNS`).
        seed: Seed of the ``random`` supervision pattern.
        config: Base RunnableConfig (callbacks, recursion limit...). A ``configurable["thread_id"]`` is the user's
            own thread: the probe plays on it only with ``on_existing="continue"`` and a single thread.
        context: The run context of a graph built with ``context_schema``, passed on every invocation.
        state: Extra state keys sent with every graph input, for graphs whose state requires more than messages.
        messages_key: The state key holding the conversation (``"messages"`` for ``MessagesState`` and
            ``create_agent``).
        extract: Reads the decision yourself: called with the agent's final output (the state, for a graph), returns
            the chosen option's text or ``None``. Without it the decision is read from the structured response, the
            last AI message's text, or its tool call, in that order.
        run_id: Names this probe's threads (``atp-probe:<run_id>:...``); a fresh id when ``None``.
        on_existing: What to do when a probe thread already has history in the checkpointer: ``"error"`` refuses
            (the agent would start already shaped by it), ``"continue"`` plays on top of it.
        keep_threads: Keep the probe's threads in the agent's checkpointer afterwards (``False`` deletes them where
            the saver supports it; a thread you named is never deleted).
        retries: Extra attempts for a model call that raises, with exponential backoff. When a call keeps failing,
            the probe stops and returns the completed rounds with :attr:`ProbeReport.stopped` saying where.
        backoff: Seconds before the first retry, doubled for each further one.
        timeout: Seconds one call may take before it counts as failed and is retried (``None``: no limit), so a
            graph that hangs or loops ends in a partial report rather than never.
        invalid_threshold: Share of answers naming no option above which the report warns.
        max_concurrency: Most threads asked at the same time.
        progress: Show a progress bar over rounds.
        target: How the report names the agent (default: its ``name``, or its type).

    Raises:
        ProbeError: The agent cannot be probed (a state key it needs, no AI message, an interrupt, not a
            Runnable), a thread has history, or an argument is out of range.
        ScenarioError: A scenario cannot be found or loaded.
    """
    from .tool_probe import aprobe_tools, is_tool_scenario

    _check(
        rounds=rounds,
        repeats=repeats,
        supervision=supervision,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        invalid_threshold=invalid_threshold,
        max_concurrency=max_concurrency,
        on_existing=on_existing,
    )
    if is_tool_scenario(scenario):  # the agent is a factory given each scenario's tools
        if isinstance(agent, Runnable) or not callable(agent):
            raise ProbeError(
                "a tool scenario gives the agent its tools: pass a factory that builds your agent with them, e.g. "
                "probe(lambda tools: create_agent(model, tools), scenario)"
            )
        agent_options = dict(context=context, state=state, messages_key=messages_key, retries=retries)
        agent_options.update(backoff=backoff, timeout=timeout, max_concurrency=max_concurrency)
        return await aprobe_tools(  # type: ignore[return-value]
            agent,
            scenario,
            rounds=rounds,
            variant=variant,
            repeats=repeats,
            supervision=supervision,
            seed=seed,
            run_id=run_id,
            config=config,
            progress=progress,
            target=target,
            **agent_options,
        )
    specs = load_individuals(scenario)
    items = []
    for spec in specs:
        found = individual_items(spec)
        if variant is not None and not 0 <= variant < len(found):
            raise ProbeError(f"scenario {spec.name!r} has variants 0..{len(found) - 1}, not {variant}")
        items += [it for it in found if variant is None or it.variant == variant]
    run_id = run_id or uuid.uuid4().hex[:8]
    plays = [(it, k) for it in items for k in range(repeats)]
    agent_ids = [f"{it.scenario}#{it.variant}.{k}" for it, k in plays]
    named = ((config or {}).get("configurable") or {}).get("thread_id")
    if named is not None:
        if on_existing != "continue":
            raise ProbeError(
                f"config names thread {named!r}: the probe plays on fresh threads of its own and writes to yours only "
                "with on_existing='continue'; drop the thread_id (name the probe with run_id=) or pass on_existing"
            )
        if len(plays) != 1:
            raise ProbeError(
                f"thread {named!r} can hold one probe thread, not {len(plays)}: pick variant= and repeats=1"
            )
        threads = {agent_ids[0]: str(named)}
    else:
        threads = {
            a: _thread_name(run_id, it.scenario, it.variant, k, repeats)
            for a, (it, k) in zip(agent_ids, plays, strict=True)
        }
    agents = RunnableAgents(
        agent,
        threads=threads,
        config=config,
        state=state,
        context=context,
        messages_key=messages_key,
        extract=extract,
        max_concurrency=max_concurrency,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
    )
    used = [t for t in threads.values() if await agents.has_history(t)]
    if used and on_existing == "error":
        raise ProbeError(
            f"thread {used[0]!r} already has history in the agent's checkpointer, so the agent would start shaped by "
            "it; use a new run_id, or on_existing='continue' to probe on top of it"
        )
    game = IndividualGame([it for it, _ in plays], pattern=supervision, rounds=rounds, seed=seed, agent_ids=agent_ids)  # type: ignore[arg-type]
    events: list[Any] = []
    stopped = None
    try:
        await aplay_rounds(game, agents, rounds=rounds, progress=progress, desc="probe rounds", into=events)
    except AgentFailed as e:
        stopped = str(e)
    notes = await _cleanup(agents, threads, keep=keep_threads, named=named)
    report = ProbeReport(
        target=target or getattr(agent, "name", None) or type(agent).__name__,
        run_id=run_id,
        scenarios=[s.name for s in specs],
        supervision=supervision,
        rounds_planned=rounds,
        repeats=repeats,
        seed=seed,
        memory=agents.memory,
        threads=list(threads.values()),
        rounds=[_round(e, agents, threads, plays, agent_ids) for e in sorted(events, key=_order(agent_ids))],
        invalid_threshold=invalid_threshold,
        stopped=stopped,
        notes=notes,
        versions=versions(),
    )
    for w in report.warnings:
        warnings.warn(f"atp probe: {w}", RuntimeWarning, stacklevel=2)
    return report


def load_individuals(scenario: ScenarioArg | Sequence[ScenarioArg]) -> list[IndividualScenario]:
    """The individual scenarios named by ``scenario``: a name, a YAML path, a loaded scenario, or a list of these."""
    many = scenario if isinstance(scenario, list | tuple) else [scenario]
    if not many:
        raise ProbeError("no scenario given")
    specs: list[IndividualScenario] = []
    for one in many:
        if isinstance(one, IndividualScenario):
            specs.append(one)
        elif isinstance(one, CollectiveScenario):
            raise ProbeError(f"scenario {one.name!r} is collective; the probe plays individual scenarios")
        elif isinstance(one, str | Path):
            specs += resolve(one, kind="individual")  # type: ignore[arg-type]
        else:
            raise ProbeError(f"scenario must be a name, a path or an IndividualScenario, not {type(one).__name__}")
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ProbeError(f"scenario {twice[0]!r} is given twice")
    return specs


def _check(**a: Any) -> None:
    """One-line errors for arguments out of range."""
    for name in ("rounds", "repeats", "max_concurrency", "retries"):
        least = 0 if name == "retries" else 1
        if isinstance(a[name], bool) or not isinstance(a[name], int) or a[name] < least:
            raise ProbeError(f"{name} must be an integer of at least {least}, got {a[name]!r}")
        if name in LIMITS and a[name] > LIMITS[name]:
            raise ProbeError(f"{name} must be at most {LIMITS[name]:,}, got {a[name]:,}")
    if a["timeout"] is not None and not a["timeout"] > 0:
        raise ProbeError(f"timeout must be more than 0 seconds (or None), got {a['timeout']!r}")
    if not (isinstance(a["backoff"], int | float) and math.isfinite(a["backoff"]) and a["backoff"] >= 0):
        raise ProbeError(f"backoff must be a finite number of seconds of at least 0, got {a['backoff']!r}")
    if not 0 <= a["invalid_threshold"] <= 1:
        raise ProbeError(f"invalid_threshold must be between 0 and 1, got {a['invalid_threshold']!r}")
    if a["supervision"] not in PATTERNS:
        raise ProbeError(f"unknown supervision pattern {a['supervision']!r}; use one of {', '.join(PATTERNS)}")
    if a["on_existing"] not in ("error", "continue"):
        raise ProbeError(f"on_existing must be 'error' or 'continue', not {a['on_existing']!r}")


def _thread_name(run_id: str, scenario: str, variant: int, repeat: int, repeats: int) -> str:
    return f"atp-probe:{run_id}:{scenario}:v{variant}" + (f":r{repeat}" if repeats > 1 else "")


def _order(agent_ids: list[str]):
    position = {a: i for i, a in enumerate(agent_ids)}
    return lambda e: (position[e.agent], e.round)


def _round(
    e: ExploreEvent, agents: RunnableAgents, threads: dict[str, str], plays: list, agent_ids: list[str]
) -> ProbeRound:
    _, repeat = plays[agent_ids.index(e.agent)]
    return ProbeRound(
        round=e.round,
        scenario=e.scenario,
        variant=e.variant,
        repeat=repeat,
        thread_id=threads[e.agent],
        supervised=e.supervised,
        prompt=e.question or "",
        response=e.response or "",
        read_from=agents.sources[(e.agent, e.round)],  # type: ignore[arg-type]
        choice=e.choice,
        outcome=e.outcome,
        reward=e.reward,
        feedback=agents.feedback[(e.agent, e.round)],
    )


async def _cleanup(agents: RunnableAgents, threads: dict[str, str], *, keep: bool, named: Any) -> list[str]:
    """Delete the probe's threads unless kept; notes on what could not be deleted."""
    if keep or agents.memory != "checkpointer":
        return []
    notes = []
    if named is not None:
        notes.append(f"kept thread {named!r}: it is yours (keep_threads=False deletes only the probe's own threads)")
    own = [t for t in threads.values() if t != named]
    deleted = [await agents.delete(t) for t in own]
    if own and not all(deleted):
        notes.append(f"the agent's checkpointer cannot delete threads; kept {len(own)} probe thread(s)")
    return notes
