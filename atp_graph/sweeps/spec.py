"""A sweep spec: one command, a base config, axes to vary, per-run resources; loaded from YAML with ``PATH:LINE``
errors.

The YAML is read by the scenario loader's safe parser (:func:`atp_graph.scenarios.loader.parse_yaml`: no tags,
anchors, aliases or duplicate keys), which also maps every key path to its line, so each problem is reported as
``PATH:LINE: field: message``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ..config import AgentConfig, DiffuseConfig, ExploreConfig
from ..errors import UserError, validation_message
from ..policies.options import ModelOptions
from ..scenarios.loader import BadYAML, FileProblem, Problem, line_for, parse_yaml, read_regular

Command = Literal["explore", "diffuse"]
"""The commands a sweep can run."""

CONFIGS: dict[str, type[AgentConfig]] = {"explore": ExploreConfig, "diffuse": DiffuseConfig}
"""Each command's config class: the fields ``base``, ``grid`` and ``runs`` may set."""

NOT_SWEEPABLE = {
    "compare": "compare is a sweep over models: use command explore or diffuse with a model axis listing the "
    "variants, e.g. grid: {model: [hf:BASE, hf:BASE+adapter:VARIANT]}; the sweep report compares them",
    "probe": "probe targets your own agent (MODULE:ATTRIBUTE), not a run config: run `python cli.py probe` per target",
}
"""Commands a sweep refuses, and what to do instead."""

MAX_MEMORY = 10**18
"""Most memory a run may reserve, in bytes (an exabyte: anything larger is a typo)."""
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


class SpecError(UserError):
    """Every problem of a sweep spec; ``str()`` gives one ``PATH:LINE: field: message`` line per problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Resources(BaseModel):
    """What one run needs from the machine that runs it (Ray reserves exactly this; locally, ``cpus`` and ``gpus``
    set the default number of parallel jobs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    cpus: float = Field(default=1, gt=0, allow_inf_nan=False)
    """CPU cores per run (Ray ``num_cpus``; also the run's torch threads)."""
    gpus: float = Field(default=0, ge=0, allow_inf_nan=False)
    """GPUs per run (Ray ``num_gpus``): 1 for a GPU model puts one model on each GPU."""
    memory: int | None = None
    """Memory per run in bytes, or text such as ``4GB`` / ``512MiB`` (Ray ``memory``); None = no reservation."""

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if isinstance(v, str):
            m = _SIZE.match(v)
            if not m:
                raise ValueError(f"{v!r}: expected bytes or a size such as 4GB, 512MiB")
            power = " kmgt".index(m.group(2).lower() or " ")
            base = 1024 if "i" in m.group(3).lower() else 1000
            size = float(m.group(1)) * base**power
            if not 1 <= size <= MAX_MEMORY:
                raise ValueError(f"{v!r}: must be at least 1 byte and at most {MAX_MEMORY:.0e} bytes")
            return int(size)
        if isinstance(v, int) and not isinstance(v, bool) and not 0 < v <= MAX_MEMORY:
            raise ValueError(f"must be at least 1 byte and at most {MAX_MEMORY:.0e} bytes")
        return v


class SweepSpec(BaseModel):
    """Many runs of one command: ``base`` settings, crossed with every combination of ``grid`` and each entry of
    ``runs``. Precedence: ``paper_grid`` < ``base`` < a ``runs`` entry < ``grid``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    command: Command
    """The command every run executes: explore or diffuse."""
    base: dict[str, Any] = {}
    """Config fields shared by every run (any field of the command's config, e.g. model, rounds, topology)."""
    paper_grid: bool = False
    """diffuse only: start from the study's protocol (complete graph of 8, 3 rounds, t=2/4/6/8, all 7 games)."""
    grid: dict[str, list[Any]] = {}
    """Axes to cross: field -> the values to try; every combination is a run (in the order written)."""
    runs: list[dict[str, Any]] = []
    """An explicit list of settings (config fields, plus an optional ``resources`` mapping), each crossed with the
    grid; empty = the grid alone."""
    resources: Resources = Resources()
    """Per-run resources (a ``runs`` entry may override them with its own ``resources``)."""
    model_options: ModelOptions = ModelOptions()
    """How language models are loaded and sampled."""
    retries: int = Field(default=2, ge=0)
    """Ray: times a run is retried when its worker dies (it resumes from its last saved round)."""
    group_by: str | None = None
    """The axis the report's overlay plot groups by (``sweep report --group-by`` overrides it)."""

    _source: str = PrivateAttr(default="<spec>")
    _lines: dict[tuple, int] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        """The file the spec was read from."""
        return self._source

    def problem(self, loc: tuple, message: str) -> Problem:
        """A problem at a key path of the spec, with the line it was written on."""
        return Problem(self._source, line_for(self._lines, loc), _field(loc), message)


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec file; raise :class:`SpecError` with every problem, one line each."""
    shown = str(path)
    try:
        text = read_regular(path).decode("utf-8")
    except FileProblem as e:
        raise SpecError([Problem(shown, 1, "(file)", str(e))]) from None
    except UnicodeDecodeError:
        raise SpecError([Problem(shown, 1, "(file)", "not valid UTF-8")]) from None
    try:
        data, lines = parse_yaml(text, shown)
    except BadYAML as b:
        raise SpecError([Problem(shown, b.line, b.field, b.message)]) from None
    if not isinstance(data, dict):
        raise SpecError([Problem(shown, 1, "(top level)", "must be a mapping with command, base, grid, runs...")])
    return spec_from_data(data, source=shown, lines=lines)


def spec_from_data(data: dict[str, Any], *, source: str = "<spec>", lines: dict[tuple, int] | None = None) -> SweepSpec:
    """A checked spec from plain data (what :func:`load_spec` reads from YAML)."""
    lines = lines or {}

    def at(loc: tuple, message: str) -> Problem:
        return Problem(source, line_for(lines, loc), _field(loc), message)

    if isinstance(data.get("command"), str) and data["command"] in NOT_SWEEPABLE:
        raise SpecError([at(("command",), NOT_SWEEPABLE[data["command"]])])
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        found: dict[str, Problem] = {}
        for err in e.errors():
            loc = tuple(err["loc"])
            msg = validation_message(err)
            if loc == ("command",):
                msg = f"{data.get('command')!r} is not a sweepable command; use explore or diffuse"
            found.setdefault(_field(loc), at(loc, msg))
        raise SpecError(list(found.values())) from None
    spec._source, spec._lines = source, lines
    problems = _check_keys(spec)
    if problems:
        raise SpecError(problems)
    return spec


def _check_keys(spec: SweepSpec) -> list[Problem]:
    """Every key names a field of the command's config; grid axes are non-empty and do not repeat values."""
    fields = CONFIGS[spec.command].model_fields
    known = ", ".join(fields)
    problems = []

    def check(loc: tuple, key: str) -> None:
        if key not in fields:
            problems.append(spec.problem(loc, f"not a {spec.command} config field (fields: {known})"))

    for key in spec.base:
        check(("base", key), key)
    for key, values in spec.grid.items():
        check(("grid", key), key)
        if not values:
            problems.append(spec.problem(("grid", key), "an axis needs at least one value"))
        shown = [repr(v) for v in values]
        for j, s in enumerate(shown):
            if s in shown[:j]:
                problems.append(spec.problem(("grid", key, j), f"value {s} is listed twice"))
    for i, entry in enumerate(spec.runs):
        for key in entry:
            if key == "resources":
                continue
            check(("runs", i, key), key)
            if key in spec.grid:
                problems.append(spec.problem(("runs", i, key), f"{key} is also a grid axis; set it in one place"))
    if spec.paper_grid and spec.command != "diffuse":
        problems.append(spec.problem(("paper_grid",), "only diffuse has the paper grid"))
    return problems
