r"""What one line of ``events.jsonl`` is: one validated, frozen record type per event kind.

Writers build these records; every reader (metrics, summaries, compare, the CLI, ``atp report``) reads them back
with :func:`parse_event` / :func:`read_events`, never by raw string keys. The ``testbed`` field names the kind.
``SCHEMA_VERSION`` is written to every run's ``config.json``.

They are pydantic dataclasses with slots rather than ``BaseModel``\s: the same validation, and about a tenth of the
memory per event (a 10,000-agent, 20-round run holds 200,000 of them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from .errors import UserError

SCHEMA_VERSION = 2
"""Version of the event and checkpoint format (1 = before typed events and checkpointer memory)."""


_RECORD = dict(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid", use_attribute_docstrings=True))


@dataclass(**_RECORD)  # type: ignore[call-overload]
class _Event:
    """Fields every event has."""

    round: int = Field(ge=1)
    """Round number, from 1."""
    agent: str
    """Agent id, also its LangGraph thread id (``scenario#variant``, ``population/node``)."""
    choice: str | None
    """The option the game was handed; ``None`` = the answer named no valid option."""
    response: str | None = None
    """The raw answer (``None`` for the surrogate and seeded agents)."""
    reward: float
    """What the agent was paid this round (collective: the factor or increment)."""
    prompt_hash: str | None = None
    """Short hash of the conversation the model read (LLM agents)."""
    question: str | None = None
    """The question as the agent read it (LLM agents)."""
    lesson: str | None = None
    """The lesson written after the round (reflection mode)."""
    proposed_choice: str | None = None
    """The model's own choice before the tipping-monitor fallback (``--monitor-fallback``)."""
    lesson_refused: bool = False
    """Memory hygiene refused this round's lesson."""
    policy: Literal["surrogate"] | None = None
    """``surrogate`` when a non-LLM policy decided."""
    finish: Literal["stop", "length"] | None = None
    """Why generation ended: ``stop`` (the model finished) or ``length`` (cut off at the token budget: truncated);
    ``None`` where nothing was generated (score mode, the surrogate)."""
    tokens: int | None = None
    """Tokens the model generated for this answer (where the backend reports it)."""


@dataclass(**_RECORD)  # type: ignore[call-overload]
class ExploreEvent(_Event):
    """One decision of the individual (supervision) game."""

    testbed: Literal["explore"] = "explore"
    scenario: str
    """Scenario name."""
    variant: int
    """Variant index in the scenario."""
    supervised: bool
    """Whether the supervisor checked this round."""
    outcome: Literal["comply", "violate", "invalid"]
    """What the choice was."""
    p_violate: float | None = None
    """p(violating option): score mode and the surrogate."""


@dataclass(**_RECORD)  # type: ignore[call-overload]
class DiffuseEvent(_Event):
    """One agent's round of a threshold game on a graph (seeded deviants included, marked ``seeded``)."""

    testbed: Literal["diffuse"] = "diffuse"
    population: str
    """The (game, threshold, rewards) cell this agent plays in."""
    game: str
    """Collective scenario name."""
    threshold: float
    """The cell's threshold (a count, or a fraction of the group)."""
    rewards: tuple[float, float, float]
    """(success, fail_independent, fail_collective)."""
    node: int
    """The agent's node in the graph."""
    seeded: bool
    """A seeded deviant (fixed to the collective option; excluded from rates)."""
    collective: bool
    """Whether the agent counted as choosing the collective option."""
    p_collective: float | None = None
    """p(collective): score mode and the surrogate."""
    success: bool
    """Whether the agent's group met its threshold."""
    group_collective: int
    """Collective choosers in the agent's group."""
    group_size: int
    """Size of the agent's group."""
    capital: float
    """The agent's capital after the round."""
    neighbours: list[int]
    """The agent's neighbours."""


@dataclass(**_RECORD)  # type: ignore[call-overload]
class ToolCallRecord:
    """One tool call of a tool round, in the order made."""

    name: str
    """The tool called."""
    arguments: dict[str, Any]
    """Its arguments."""
    error: str | None = None
    """Why it did not run (unknown tool, arguments against the schema); ``None``: it ran."""
    forbidden: bool = False
    """It called the forbidden tool."""


@dataclass(**_RECORD)  # type: ignore[call-overload]
class ToolEvent(_Event):
    """One agent's round of the tool game (``choice``: the forbidden tool when it ran, else the completing tool)."""

    testbed: Literal["tools"] = "tools"
    scenario: str
    """Scenario name."""
    variant: int
    """Variant index in the scenario."""
    supervised: bool
    """Whether the forbidden tool's use was checked this round."""
    outcome: Literal["comply", "violate", "not_done", "invalid"]
    """violate: the forbidden tool ran; comply: a completing tool ran without it; not_done: calls ran but the task
    was not finished; invalid: no call ran."""
    p_forbidden: float | None = None
    """p(forbidden tool's call): score mode and the surrogate."""
    calls: list[ToolCallRecord] = Field(default_factory=list)
    """The round's tool-call trace."""
    steps: int | None = None
    """Model calls made this round (LLM agents)."""
    step_limit: bool = False
    """The round stopped at the step limit with the task unfinished."""


Event = Annotated[ExploreEvent | DiffuseEvent | ToolEvent, Field(discriminator="testbed")]
_ADAPTER: TypeAdapter[ExploreEvent | DiffuseEvent | ToolEvent] = TypeAdapter(Event)
_DUMP = {cls: TypeAdapter(cls) for cls in (ExploreEvent, DiffuseEvent, ToolEvent)}
"""One serializer per kind (faster than dispatching through the union for every line)."""


class EventError(UserError):
    """An events file line that is not a valid event."""


def parse_event(data: dict | str | bytes) -> ExploreEvent | DiffuseEvent | ToolEvent:
    """One event from its dict or JSON line."""
    if isinstance(data, dict):
        return _ADAPTER.validate_python(data)
    return _ADAPTER.validate_json(data)


def dump_event(event: ExploreEvent | DiffuseEvent | ToolEvent) -> str:
    """One JSON line (no newline)."""
    return _DUMP[type(event)].dump_json(event).decode()


def read_events(path: str | Path) -> list[ExploreEvent | DiffuseEvent | ToolEvent]:
    """Every event of an ``events.jsonl`` in a list (see :func:`iter_events`; :class:`EventLog` streams them)."""
    return list(iter_events(path))


def iter_events(path: str | Path) -> Iterator[ExploreEvent | DiffuseEvent | ToolEvent]:
    """The events of an ``events.jsonl``, one line at a time (the file is never read whole).

    A torn LAST line (a crash mid-write: no newline and no closing brace) is ignored; any other bad line is an
    :class:`EventError` naming the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise EventError(f"{p}: not a file")
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                if not raw.endswith(b"\n"):
                    return  # torn last line, cut inside a character
                raise EventError(f"{p}:{n}: not text (UTF-8); not a line atp-graph wrote") from None
            if not line.strip():
                continue
            try:
                yield parse_event(line)
            except ValidationError as e:
                if not line.endswith("\n") and not line.rstrip().endswith("}"):
                    return  # torn last line: only the last line can lack its newline
                err = e.errors()[0]
                where = ".".join(map(str, err["loc"])) or "line"
                raise EventError(f"{p}:{n}: {where}: {err['msg']}") from None


class EventLog:
    """A run's ``events.jsonl`` as a sequence that can be iterated many times without holding it in memory.

    Summaries and plots of large runs (100,000 agents x 20 rounds is 2 million events) read it this way.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __iter__(self) -> Iterator[ExploreEvent | DiffuseEvent | ToolEvent]:
        return iter_events(self.path) if self.path.exists() else iter(())

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r})"


def write_lines(f, events: Iterable[ExploreEvent | DiffuseEvent | ToolEvent]) -> None:
    """Append events to an open text file, one JSON line each."""
    f.writelines(dump_event(e) + "\n" for e in events)
