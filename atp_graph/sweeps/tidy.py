"""Tidy tables of a sweep, ready for pandas: every event with its run's axis values as columns (``events.csv``,
and ``events.parquet`` when pyarrow is installed), and every rate per round (``rates.csv``).

An axis whose name is also an event field (``rewards``: the run's list vs the cell's triple) becomes
``sweep_<name>``. Lists and tuples are written as JSON; empty cells are ``None``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import operator
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..events import DiffuseEvent, ExploreEvent
from .plan import label

EVENT_TYPES = {"explore": ExploreEvent, "diffuse": DiffuseEvent}


def event_fields(command: str) -> list[str]:
    """The event fields of a command, in the events' own order."""
    return [f.name for f in dataclasses.fields(EVENT_TYPES[command])]


def axis_columns(command: str, axes: Sequence[str]) -> dict[str, str]:
    """Axis -> its column name (``sweep_<axis>`` when an event field has the same name)."""
    fields = set(event_fields(command))
    return {a: f"sweep_{a}" if a in fields or a == "run" else a for a in axes}


def scalar(value: Any) -> Any:
    """A plain scalar as it is; anything else (a list, a triple) as its short label."""
    return value if value is None or isinstance(value, bool | int | float | str) else label(value)


def _is_list(hint: Any) -> bool:
    return any(typing.get_origin(h) in (list, tuple) for h in (hint, *typing.get_args(hint)))


class EventTable:
    """Writes ``events.csv`` (and ``events.parquet`` when pyarrow is there) run by run, never holding more than one
    run's events."""

    def __init__(self, folder: Path, command: str, axes: Sequence[str], values: Sequence[dict[str, Any]] = ()):
        """``values``: every run's axis values (they fix the Parquet column types)."""
        self.folder = folder
        self.columns = axis_columns(command, axes)
        self.fields = event_fields(command)
        hints = typing.get_type_hints(EVENT_TYPES[command])
        self._lists = [i for i, f in enumerate(self.fields) if _is_list(hints[f])]
        self._get = operator.attrgetter(*self.fields)
        self.header = ["run", *self.columns.values(), *self.fields]
        self._file = open(folder / "events.csv", "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(self.header)
        self._parquet: Any = None
        arrow = _pyarrow()
        if arrow is not None:
            pa, pq = arrow
            schema = [pa.field("run", pa.string())]
            schema += [pa.field(c, _infer(pa, [scalar(v.get(a)) for v in values])) for a, c in self.columns.items()]
            schema += [pa.field(f, _arrow(pa, hints[f])) for f in self.fields]
            self._schema = pa.schema(schema)
            self._parquet = pq.ParquetWriter(folder / "events.parquet", self._schema)

    def add(self, run: str, axes: dict[str, Any], events: Sequence[Any]) -> None:
        """Append one run's events."""
        lead = [run, *(scalar(axes.get(a)) for a in self.columns)]
        rows = []
        for e in events:
            values = list(self._get(e))
            for i in self._lists:
                values[i] = json.dumps(values[i])
            rows.append(lead + values)
        self._csv.writerows(rows)
        if self._parquet is not None and rows:
            import pyarrow as pa

            columns = dict(zip(self.header, (list(c) for c in zip(*rows, strict=True)), strict=True))
            self._parquet.write_table(pa.Table.from_pydict(columns, schema=self._schema))

    def close(self) -> list[Path]:
        """Finish the files; return the ones written."""
        self._file.close()
        if self._parquet is None:
            return [self.folder / "events.csv"]
        self._parquet.close()
        return [self.folder / "events.csv", self.folder / "events.parquet"]


def write_rates(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rates.csv``: one row per (run, cell, metric, round) with k, n, rate and its 95% Wilson interval."""
    header = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return path


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    return pa, pq


def _arrow(pa: Any, hint: Any) -> Any:
    """The Arrow type of an event field (``X | None`` -> X; lists, tuples and literals -> JSON / text)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = args[0] if len(args) == 1 else str
    return {bool: pa.bool_(), int: pa.int64(), float: pa.float64()}.get(hint, pa.string())


def _infer(pa: Any, values: list[Any]) -> Any:
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64()
    if kinds and kinds <= {int, float}:
        return pa.float64()
    return pa.string()
