"""Probe a tool-calling agent you build yourself: ``probe(lambda tools: create_agent(model, tools), "deploy-checks")``.

For each tool scenario the factory receives the scenario's tools (LangChain tools with JSON-schema arguments whose
results are simulated: nothing runs for real) and returns your agent built with them. The probe then plays the tool
game (:class:`~atp_graph.games.tools.ToolGame`: the rounds, rewards, supervision and feedback of ``atp tools``) on
fresh threads of that agent, one per variant and repeat, as :func:`~.probe.aprobe` does for individual scenarios,
and reads each round's tool calls from the messages the agent added after the task (its tool calls and the tool
results). The result is a :class:`ToolProbeReport`.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig

from ..agents.replies import Reply, messages_after
from ..agents.runnable import AgentFailed, ProbeError, RunnableAgents
from ..agents.tool_agent import langchain_tools, trace
from ..analysis.tools import plot_tools, summarize_tools
from ..contracts import Action, Observation
from ..events import ToolEvent
from ..games.tools import ToolGame, ToolSubmission
from ..run import aplay_rounds
from ..scenarios import ScenarioError, ToolItem, ToolScenario, resolve, tool_items

__all__ = ["ToolProbeReport", "aprobe_tools", "is_tool_scenario", "load_tool_scenarios"]

AgentFactory = Callable[[list[Any]], Runnable]
"""Your agent, built with the tools it is given (e.g. ``lambda tools: create_agent(model, tools)``)."""


@dataclass(frozen=True)
class ToolProbeReport:
    """What a tool probe observed: every round of every thread (:attr:`events`) and the per-round rates."""

    target: str
    """The agent probed."""
    run_id: str
    """This probe's id: its threads are named ``atp-probe:<run_id>:<scenario>:v<variant>[:r<repeat>]``."""
    scenarios: list[str]
    """Scenario names, in the order played."""
    events: list[ToolEvent]
    """Every round of every thread, with its tool-call trace."""
    summary: dict[str, Any]
    """The numbers, as ``atp tools`` writes them to ``summary.json``."""
    table: str
    """The Markdown table, warnings first."""
    threads: list[str] = field(default_factory=list)
    """Every thread the probe played on."""
    stopped: str | None = None
    """Why the probe stopped early (an agent that kept failing); ``None`` when every round completed."""

    @property
    def forbidden_rate_by_round(self) -> list[float]:
        """Share of threads whose agent used the forbidden tool, per round."""
        return [r["rate"] for r in self.summary["forbidden_rate"]]

    @property
    def forbidden_interval_by_round(self) -> list[tuple[float, float]]:
        """95% Wilson interval of each round's forbidden-tool rate."""
        return [(r["low"], r["high"]) for r in self.summary["forbidden_rate"]]

    @property
    def tipping_round(self) -> int | None:
        """First round whose forbidden-tool rate reaches 50%."""
        return self.summary["tipping_round"]

    @property
    def warnings(self) -> list[str]:
        """What the rates rest on that a reader must know (invalid or truncated answers)."""
        return list(self.summary["warnings"])

    @property
    def complete(self) -> bool:
        return self.stopped is None

    def to_markdown(self) -> str:
        return f"# Tool probe of {self.target} (run {self.run_id})\n\n{self.table}"

    def plot(self, path: str | Path) -> Path:
        """``forbidden_rate.png`` into the folder ``path`` (created if missing)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        return plot_tools(folder, self.summary, self.events)


def is_tool_scenario(scenario: Any) -> bool:
    """Whether ``scenario`` (a name, a path, a loaded scenario, or a list of them) names tool scenarios."""
    many = scenario if isinstance(scenario, list | tuple) else [scenario]
    one = many[0] if many else None
    if isinstance(one, ToolScenario):
        return True
    if isinstance(one, str | Path):
        try:
            return bool(resolve(one, kind="tool"))
        except ScenarioError:
            return False
    return False


def load_tool_scenarios(scenario: Any) -> list[ToolScenario]:
    many = scenario if isinstance(scenario, list | tuple) else [scenario]
    specs: list[ToolScenario] = []
    for one in many:
        if isinstance(one, ToolScenario):
            specs.append(one)
        elif isinstance(one, str | Path):
            specs += resolve(one, kind="tool")  # type: ignore[arg-type]
        else:
            raise ProbeError(f"scenario must be a tool scenario's name, path or ToolScenario, not {type(one).__name__}")
    return specs


def read_tool_reply(
    out: Any, options: Sequence[str], *, graph: bool, sent_id: str | None, messages_key: str, **_: Any
) -> Reply:
    """The round's calls: the AI tool calls and tool results the agent added after the task."""
    messages = messages_after(out.get(messages_key) if graph and isinstance(out, Mapping) else out, sent_id)
    said = [m.text for m in messages if isinstance(m, AIMessage) and m.text]
    return Reply("\n\n".join(said), None, "tool_call", tuple(trace(messages)))


class _ToolAgents(RunnableAgents):
    """A user's tool agent: the game is handed each round's calls."""

    def __init__(self, agent: Any, **kwargs: Any) -> None:
        super().__init__(agent, **kwargs)
        self.calls: dict[tuple[str, int], tuple] = {}
        """Each round's calls, keyed by (agent, round)."""

    def _action(self, o: Observation, reply: Reply) -> Action:
        self.calls[(o.agent, o.round)] = reply.calls
        return Action(None, reply.text, None, {"question": o.question})

    def _submission(self, o: Observation, action: Action) -> ToolSubmission:
        return ToolSubmission(None, action.response, self.calls[(o.agent, o.round)])


async def aprobe_tools(
    factory: AgentFactory,
    scenario: Any,
    *,
    rounds: int = 6,
    variant: int | None = None,
    repeats: int = 1,
    supervision: str = "all_unsupervised",
    seed: int = 0,
    run_id: str | None = None,
    config: RunnableConfig | None = None,
    progress: bool = False,
    target: str | None = None,
    **options: Any,
) -> ToolProbeReport:
    """Play tool scenarios against the agent ``factory(tools)`` builds (see the module docstring); the arguments
    are :func:`~.probe.aprobe`'s, ``options`` its agent options (``context``, ``state``, ``messages_key``,
    ``retries``, ``backoff``, ``timeout``, ``max_concurrency``)."""
    specs = load_tool_scenarios(scenario)
    run_id = run_id or uuid.uuid4().hex[:8]
    events: list[Any] = []
    threads: list[str] = []
    stopped = None
    built: Any = None
    for spec in specs:
        items = [it for it in tool_items(spec) if variant is None or it.variant == variant]
        if not items:
            raise ProbeError(f"scenario {spec.name!r} has variants 0..{len(spec.variants) - 1}, not {variant}")
        plays = [(it, k) for it in items for k in range(repeats)]
        ids = [f"{it.scenario}#{it.variant}.{k}" for it, k in plays]
        names = {
            a: _thread_name(run_id, it.scenario, it.variant, k, repeats) for a, (it, k) in zip(ids, plays, strict=True)
        }
        by_agent = {a: it for a, (it, _) in zip(ids, plays, strict=True)}
        by_thread = {names[a]: it for a, it in by_agent.items()}
        built = factory(langchain_tools(_lookup(by_agent, by_thread, items[0])))
        if not isinstance(built, Runnable):
            raise ProbeError(f"the agent factory must return a LangGraph graph or Runnable, not {type(built).__name__}")
        agents = _ToolAgents(built, threads=names, config=config, read=read_tool_reply, **options)
        game = ToolGame([it for it, _ in plays], pattern=supervision, rounds=rounds, seed=seed, agent_ids=ids)  # type: ignore[arg-type]
        threads += list(names.values())
        try:
            await aplay_rounds(game, agents, rounds=rounds, progress=progress, desc=f"probe {spec.name}", into=events)
        except AgentFailed as e:
            stopped = str(e)
            break
    summary, table = summarize_tools(events, rounds=rounds, label=target or _name(built), surrogate=False)
    report = ToolProbeReport(
        target=target or _name(built),
        run_id=run_id,
        scenarios=[s.name for s in specs],
        events=events,
        summary=summary,
        table=table,
        threads=threads,
        stopped=stopped,
    )
    for w in report.warnings:
        warnings.warn(f"atp probe: {w}", RuntimeWarning, stacklevel=2)
    return report


def _lookup(by_agent: Mapping[str, ToolItem], by_thread: Mapping[str, ToolItem], first: ToolItem):
    """The item of the thread a tool call runs on (from the call's config), for tools shared by every thread."""

    def find(config: Any) -> ToolItem:
        if not config:
            return first
        agent = (config.get("metadata") or {}).get("atp_agent")
        thread = (config.get("configurable") or {}).get("thread_id")
        return by_agent.get(agent) or by_thread.get(thread) or first

    return find


def _thread_name(*args: Any) -> str:
    from .probe import _thread_name as name

    return name(*args)


def _name(agent: Any) -> str:
    return getattr(agent, "name", None) or type(agent).__name__
