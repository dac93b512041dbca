"""Long-term memory stores for written lessons: in memory by default, SQLite inside a run directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore


def open_store(run_path: Path | None, *, forget_after: int = 0, agents: list[str] | None = None) -> BaseStore:
    """A LangGraph store for lessons. With a run directory, lessons persist in ``memory.sqlite`` and a resumed run
    forgets lessons written after its last complete round."""
    if run_path is None:
        return InMemoryStore()
    from langgraph.store.sqlite import SqliteStore

    conn = sqlite3.connect(run_path / "memory.sqlite", isolation_level=None, check_same_thread=False)
    store = SqliteStore(conn)
    store.setup()
    if agents:
        forget_lessons_after(store, agents, forget_after)
    return store


def lesson_namespace(agent: str) -> tuple[str, ...]:
    """Where an agent's lessons live in the store."""
    return ("lessons", agent)


def forget_lessons_after(store: BaseStore, agents: list[str], round_no: int) -> None:
    """Drop lessons written after ``round_no`` (used when resuming from that round)."""
    for a in agents:
        for it in store.search(lesson_namespace(a), limit=10_000):
            if it.value["round"] > round_no:
                store.delete(lesson_namespace(a), it.key)
