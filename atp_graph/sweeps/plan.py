"""Expanding a spec into runs: the same spec always gives the same runs, in the same order, with the same names."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..config import PAPER_GRID, resolve_decision
from ..errors import validation_message
from .spec import CONFIGS, Resources, SpecError, SweepSpec


class PlannedRun(BaseModel):
    """One run of a sweep: its folder name, the axis values that set it apart, and its full config."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    index: int
    """Position in the plan, from 0."""
    name: str
    """Folder name under ``DIR/runs/``: the index, then ``axis=value`` for every axis."""
    axes: dict[str, Any]
    """Axis -> this run's value (JSON form, as in ``config.json``)."""
    config: dict[str, Any]
    """The run's whole config (``ExploreConfig`` / ``DiffuseConfig`` fields, JSON form)."""
    resources: Resources
    """What the run needs."""


def axes_of(spec: SweepSpec) -> list[str]:
    """The axes: keys set by ``runs`` entries (first seen first), then the grid's keys."""
    keys = [k for entry in spec.runs for k in entry if k != "resources"]
    return list(dict.fromkeys([*keys, *spec.grid]))


def label(value: Any) -> str:
    """Short text of an axis value: ``None`` -> none, 1.0 -> 1, [[1.2, 1, 0.8]] -> 1.2/1/0.8, [2, 4] -> 2,4."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, list | tuple) for v in value):
            return ",".join("/".join(label(x) for x in v) for v in value)
        return ",".join(label(v) for v in value)
    return str(value)


def _name(index: int, width: int, axes: dict[str, Any]) -> str:
    parts = [f"{index:0{width}d}"]
    for key, value in axes.items():
        text = re.sub(r"[^A-Za-z0-9._,+=-]+", "-", label(value)).strip("-") or "x"
        parts.append(f"{key}={text[:40]}")
    return "_".join(parts)[:180]


MAX_RUNS = 10_000
"""Most runs one sweep spec may expand to."""


def expand(spec: SweepSpec) -> list[PlannedRun]:
    """Every run of the spec (``runs`` entries in order, each crossed with the grid in the order written).

    Raises:
        SpecError: A run's config is invalid (the line of the value at fault), or two runs are the same.
    """
    cls = CONFIGS[spec.command]
    base = {**(PAPER_GRID if spec.paper_grid else {}), **spec.base}
    origin = {k: ("paper_grid",) for k in PAPER_GRID} if spec.paper_grid else {}
    origin.update({k: ("base", k) for k in spec.base})
    total = math.prod(len(v) for v in spec.grid.values()) * len(spec.runs or [{}])
    if total > MAX_RUNS:
        where = ("grid",) if spec.grid else ("runs",)
        raise SpecError([spec.problem(where, f"the spec expands to {total:,} runs, over the limit of {MAX_RUNS:,}")])
    combos = list(itertools.product(*[list(enumerate(v)) for v in spec.grid.values()]))
    keys = axes_of(spec)
    problems: dict[str, Any] = {}
    made: list[tuple[dict[str, Any], Resources]] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(spec.runs or [{}]):
        settings = {k: v for k, v in entry.items() if k != "resources"}
        resources = _resources(spec, i, entry.get("resources"), problems)
        for combo in combos:
            where = {**origin, **{k: ("runs", i, k) for k in settings}}
            values = {**base, **settings}
            for key, (j, value) in zip(spec.grid, combo, strict=True):
                values[key], where[key] = value, ("grid", key, j)
            values["decision"] = resolve_decision(values.get("decision") or "auto", values.get("model") or "smollm2")
            try:
                config = cls(**values).model_dump(mode="json")
            except ValidationError as e:
                for err in e.errors():
                    field = str(err["loc"][0]) if err["loc"] else "preset"
                    loc = where.get(field, ("runs", i) if spec.runs else ("base",))
                    p = spec.problem(loc, validation_message(err))
                    problems.setdefault(str(p), p)
                continue
            key = json.dumps(config, sort_keys=True)
            if key in seen:
                p = spec.problem(("runs", i) if spec.runs else ("grid",), f"run {len(made)} repeats run {seen[key]}")
                problems.setdefault(str(p), p)
            seen[key] = len(made)
            made.append((config, resources or spec.resources))
    if problems:
        raise SpecError(list(problems.values()))
    width = max(3, len(str(len(made) - 1)))
    runs = []
    for index, (config, resources) in enumerate(made):
        axes = {k: config[k] for k in keys}
        runs.append(
            PlannedRun(index=index, name=_name(index, width, axes), axes=axes, config=config, resources=resources)
        )
    return runs


def _resources(spec: SweepSpec, i: int, given: Any, problems: dict[str, Any]) -> Resources | None:
    """A ``runs`` entry's own resources over the spec's."""
    if given is None:
        return None
    if not isinstance(given, dict):
        p = spec.problem(("runs", i, "resources"), "must be a mapping of cpus, gpus, memory")
        problems.setdefault(str(p), p)
        return None
    try:
        return Resources.model_validate({**spec.resources.model_dump(exclude_unset=True), **given})
    except ValidationError as e:
        for err in e.errors():
            loc = ("runs", i, "resources", *err["loc"])
            p = spec.problem(loc, validation_message(err))
            problems.setdefault(str(p), p)
        return None


def spec_hash(spec: SweepSpec, runs: list[PlannedRun]) -> str:
    """What makes two specs the same sweep: the command, every run's name and config, and the model options
    (resources, retries and the report's grouping may change between invocations)."""
    what = {
        "command": spec.command,
        "runs": [[r.name, r.config] for r in runs],
        "model_options": spec.model_options.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
