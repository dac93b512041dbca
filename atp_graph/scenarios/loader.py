"""Read scenario YAML safely and report every problem as ``PATH:LINE: field: message``.

Scenario files are untrusted: only plain YAML scalars, mappings and lists are accepted. Aliases, anchors and
tags (which can build Python objects or blow up memory) are refused before anything is constructed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from ..errors import UserError, validation_message
from .models import SCENARIO_KINDS, CollectiveScenario, IndividualScenario, Scenario, ToolScenario
from .render import check_templates
from .tools import check_tools

AnyScenario = IndividualScenario | CollectiveScenario | ToolScenario
_KINDS = ", ".join(repr(k) for k in SCENARIO_KINDS[:-1]) + f" or {SCENARIO_KINDS[-1]!r}"

_ADAPTER: TypeAdapter[AnyScenario] = TypeAdapter(Scenario)
_PLAIN_TAGS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


class ScenarioError(UserError):
    """Raised with every problem found; ``str()`` gives one line per problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class BadYAML(Exception):
    """A YAML document that cannot be used: ``line``, ``field`` and ``message`` say why."""

    def __init__(self, line: int, field: str, message: str):
        self.line, self.field, self.message = line, field, message


def _plain(node: yaml.Node, where: str, lines: dict[tuple, int], key: tuple) -> Any:
    """Build Python data from a composed node, recording the line of every key path."""
    line = node.start_mark.line + 1
    lines[key] = line
    if node.tag not in _PLAIN_TAGS:
        raise BadYAML(line, where or "(top level)", f"YAML tag {node.tag!r} is not allowed")
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for k_node, v_node in node.value:
            k = _plain(k_node, where, {}, key)  # a key's own line is recorded below, under its path
            if not isinstance(k, str | int | float | bool) or k is None:
                raise BadYAML(k_node.start_mark.line + 1, where or "(top level)", "mapping keys must be plain scalars")
            name = f"{where}.{k}" if where else str(k)
            if k in out:
                raise BadYAML(k_node.start_mark.line + 1, name, "duplicate key")
            out[k] = _plain(v_node, name, lines, (*key, k))
            lines[(*key, k)] = k_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v, f"{where}[{i}]", lines, (*key, i)) for i, v in enumerate(node.value)]
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except ValueError:  # an integer of more digits than Python converts (4,300)
        message = f"a number of {len(node.value):,} characters is too large"
        raise BadYAML(line, where or "(top level)", message) from None


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (about 7x faster on large files), else the pure one."""
MAX_BYTES = 1_000_000
"""Largest scenario (or protocol, or sweep spec) file read."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists accepted (a scenario needs fewer than 6)."""
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_events(text: str) -> None:
    """Refuse anchors, aliases and nesting deeper than :data:`MAX_DEPTH`, reading the parser's events lazily before
    anything is composed (a document nested 100,000 deep stops at level 33; brackets inside a quoted string are
    text, not nesting)."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise BadYAML(line, "(yaml)", "anchors and aliases are not allowed")
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise BadYAML(line, "(yaml)", f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, _CLOSE):
            depth -= 1


def parse_yaml(text: str, path: str) -> tuple[Any, dict[tuple, int]]:
    """Parse one YAML document into plain data and a map from key path to line number (size and depth are checked
    first: untrusted files cannot exhaust time or memory)."""
    if len(text) > MAX_BYTES:
        raise BadYAML(1, "(file)", f"larger than {MAX_BYTES:,} bytes")
    try:
        _check_events(text)
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = (mark.line + 1) if mark else 1
        if "nesting depth" in str(e.problem):  # libyaml's own limit (1,000), met while it looks ahead
            raise BadYAML(line, "(yaml)", f"nested deeper than {MAX_DEPTH} levels") from None
        raise BadYAML(line, "(yaml)", f"syntax error: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise BadYAML(1, "(yaml)", f"syntax error: {e}") from None
    if node is None:
        raise BadYAML(1, "(file)", "the file is empty")
    lines: dict[tuple, int] = {}
    return _plain(node, "", lines, ()), lines


def line_for(lines: dict[tuple, int], loc: tuple) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


class FileProblem(ValueError):
    """A file that is not read: not a regular file, too large, or unreadable (the message says which)."""


def read_regular(path: str | Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of ``path``, read only when it is a regular file of at most ``limit`` bytes (never a device, FIFO
    or folder, which could block or never end); raise :class:`FileProblem` otherwise."""
    path = Path(path)
    try:
        if not path.exists():
            raise FileProblem("cannot read: no such file")
        if not path.is_file():
            raise FileProblem("not a regular file")
        if path.stat().st_size > limit:
            raise FileProblem(f"larger than {limit:,} bytes")
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise FileProblem(f"cannot read: {e.strerror or e}") from None
    if len(raw) > limit:
        raise FileProblem(f"larger than {limit:,} bytes")
    return raw


def json_object(text: str, *, expected: str = "a JSON object") -> dict[str, Any]:
    """The JSON object in ``text`` (a command-line value, a line of a data file), or a :class:`FileProblem` saying
    what is wrong with it: not JSON, nested too deeply for the parser, or not ``expected``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise FileProblem(f"not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise FileProblem("nested too deeply") from None
    if not isinstance(value, dict):
        raise FileProblem(f"expected {expected}, got {type(value).__name__}")
    return value


def load_scenario_file(path: str | Path) -> AnyScenario:
    """Load and fully validate one scenario file; raise :class:`ScenarioError` listing every problem."""
    return _load(path)[0]


def _load(path: str | Path) -> tuple[AnyScenario, dict[tuple, int]]:
    path = Path(path)
    shown = str(path)
    try:
        raw = read_regular(path)
    except FileProblem as e:
        raise ScenarioError([Problem(shown, 1, "(file)", str(e))]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        msg = f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})"
        raise ScenarioError([Problem(shown, raw[: e.start].count(b"\n") + 1, "(file)", msg)]) from None
    try:
        data, lines = parse_yaml(text, shown)
    except BadYAML as b:
        raise ScenarioError([Problem(shown, b.line, b.field, b.message)]) from None
    if not isinstance(data, dict):
        raise ScenarioError([Problem(shown, 1, "(top level)", "must be a mapping of scenario fields")])
    if "kind" not in data:
        raise ScenarioError([Problem(shown, 1, "kind", f"missing; use {_KINDS}")])
    try:
        scenario = _ADAPTER.validate_python(data)
    except ValidationError as e:
        problems: dict[str, Problem] = {}
        for err in e.errors():
            loc = tuple(err["loc"])
            if loc and loc[0] in SCENARIO_KINDS:
                loc = loc[1:]
            while len(loc) > 1 and loc not in lines and loc[:-1] in lines and not err["type"].startswith("missing"):
                loc = loc[:-1]  # drop union-branch names such as 'int' / 'str'
            field = ".".join(str(x) for x in loc) or "(top level)"
            msg = validation_message(err)
            if err["type"] == "union_tag_invalid":
                loc, field = ("kind",), "kind"
                msg = f"unknown kind {data.get('kind')!r}; use {_KINDS}"
            if field in problems:  # several union branches failed on one value
                msg = "must be a number or a ${param} template" if loc[0] in ("payoff", "game") else msg
            problems[field] = Problem(shown, line_for(lines, loc), field, msg)
        raise ScenarioError(list(problems.values())) from None
    template_problems = [
        Problem(shown, line_for(lines, loc), field, msg)
        for loc, field, msg in check_templates(scenario) + check_tools(scenario)
    ]
    if template_problems:
        raise ScenarioError(template_problems)
    return scenario, lines


def validate_document(doc: Any) -> str | None:
    """``None`` when ``doc`` (plain data) is a valid scenario, else the first problem as ``field: message``."""
    try:
        scenario = _ADAPTER.validate_python(doc)
    except ValidationError as e:
        err = e.errors()[0]
        return f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {validation_message(err)}"
    problems = check_templates(scenario) + check_tools(scenario)
    return f"{problems[0][1]}: {problems[0][2]}" if problems else None


def scenario_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of ``*.yaml``/``*.yml`` files."""
    files: list[Path] = []
    for given in paths:
        if not str(given).strip():  # Path("") is the current folder: never what an empty name meant
            raise ScenarioError([Problem(repr(str(given)), 1, "(path)", "an empty name: give a file or folder")])
        p = Path(given)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file()))
        elif p.exists():
            files.append(p)
        else:
            raise ScenarioError([Problem(str(p), 1, "(path)", "no such file or folder")])
    return files


def load_scenarios(paths: Iterable[str | Path]) -> list[AnyScenario]:
    """Load every scenario under ``paths``; collect the problems of all files before raising."""
    problems: list[Problem] = []
    loaded: list[AnyScenario] = []
    seen: dict[str, Path] = {}
    for f in scenario_files(paths):
        try:
            s, lines = _load(f)
        except ScenarioError as e:
            problems.extend(e.problems)
            continue
        if s.name in seen:
            line = lines.get(("name",), 1)
            problems.append(Problem(str(f), line, "name", f"{s.name!r} is already defined in {seen[s.name]}"))
            continue
        seen[s.name] = f
        loaded.append(s)
    if problems:
        raise ScenarioError(problems)
    return loaded
