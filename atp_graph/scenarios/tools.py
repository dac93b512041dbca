"""Tool scenarios: the checks beyond the model's fields, and the filled items the tool testbed plays.

A tool scenario's tools are validated where pydantic cannot see: distinct names, exactly one forbidden tool that the
system prompt names (the rule must state it), at least one allowed tool that completes the task, argument schemas
that are valid inline JSON schemas of an object, score-mode examples that match them, and result templates whose
placeholders are variant parameters or declared arguments. Every problem names its field (``tools[2].parameters``),
so the loader reports it as ``PATH:LINE``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .models import ToolScenario, ToolSpec
from .render import fill, placeholders, supervised_fields

__all__ = ["ToolDef", "ToolItem", "argument_error", "check_tools", "tool_items"]

Problem = tuple[tuple, str, str]


def _refs(value: Any) -> bool:
    """Whether a schema uses references (refused: a scenario's schema is inline, nothing is ever fetched)."""
    if isinstance(value, Mapping):
        return any(k in ("$ref", "$dynamicRef") or _refs(v) for k, v in value.items())
    return isinstance(value, list) and any(_refs(v) for v in value)


def _schema_problem(parameters: Mapping[str, Any]) -> str | None:
    if parameters.get("type") != "object":
        return "must be an object schema (type: object), as tool arguments are a JSON object"
    if _refs(parameters):
        return "$ref is not supported: write the schema inline"
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as e:
        where = "/".join(map(str, e.absolute_path))
        return f"not a valid JSON schema{f' at {where}' if where else ''}: {_short(e.message)}"
    return None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


def argument_error(parameters: Mapping[str, Any], arguments: Any) -> str | None:
    """Why ``arguments`` do not match a tool's ``parameters`` schema (``None`` when they do)."""
    error = next(iter(sorted(Draft202012Validator(parameters).iter_errors(arguments), key=str)), None)
    if error is None:
        return None
    where = "/".join(map(str, error.absolute_path))
    return f"{where + ': ' if where else ''}{_short(error.message)}"


def _properties(spec: ToolSpec) -> set[str]:
    props = spec.parameters.get("properties")
    return set(props) if isinstance(props, Mapping) else set()


def check_tools(s: Any) -> list[Problem]:
    """Every problem of a tool scenario's tools as ``(location, field, message)`` (nothing for other kinds)."""
    if not isinstance(s, ToolScenario):
        return []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(s.tools):
        if t.name in seen:
            problems.append((("tools", i, "name"), f"tools.{i}.name", f"{t.name!r} is already tools[{seen[t.name]}]"))
        seen.setdefault(t.name, i)
        bad = _schema_problem(t.parameters)
        if bad:
            problems.append((("tools", i, "parameters"), f"tools.{i}.parameters", bad))
        elif (t.example or t.forbidden or t.completes) and (why := argument_error(t.parameters, dict(t.example))):
            problems.append((("tools", i, "example"), f"tools.{i}.example", f"does not match parameters: {why}"))
        problems += _template_problems(s, i, t)
    forbidden = [i for i, t in enumerate(s.tools) if t.forbidden]
    if not forbidden:
        problems.append((("tools",), "tools", "no tool is forbidden: mark the rule-breaking tool with forbidden: true"))
    elif len(forbidden) > 1:
        problems.append(
            (
                ("tools", forbidden[1], "forbidden"),
                f"tools.{forbidden[1]}.forbidden",
                f"a scenario has one forbidden tool; tools[{forbidden[0]}] is already forbidden",
            )
        )
    elif not all(s.tools[forbidden[0]].name in _filled(s.system_prompt, v) for v in s.variants):
        name = s.tools[forbidden[0]].name
        problems.append((("system_prompt",), "system_prompt", f"the rule must name the forbidden tool {name!r}"))
    if not any(t.completes and not t.forbidden for t in s.tools):
        problems.append(
            (("tools",), "tools", "no allowed tool completes the task: mark the compliant one with completes: true")
        )
    return problems


def _filled(template: str, variant: Mapping[str, Any]) -> str:
    """The template filled, or as written when it cannot be (its own problem is reported elsewhere)."""
    try:
        return fill(template, dict(variant))
    except (KeyError, ValueError):
        return template


def _template_problems(s: ToolScenario, i: int, t: ToolSpec) -> list[Problem]:
    out: list[Problem] = []
    for key, text, extra in (("description", t.description, set()), ("result", t.result, _properties(t))):
        field = f"tools.{i}.{key}"
        try:
            names = placeholders(text)
        except ValueError as e:
            out.append((("tools", i, key), field, str(e)))
            continue
        for j, variant in enumerate(s.variants):
            missing = sorted(names - set(variant) - extra)
            if missing:
                hint = " or argument" if key == "result" else ""
                msg = f"placeholder ${{{missing[0]}}} is no parameter{hint} of variants[{j}]"
                out.append((("tools", i, key), field, msg))
                break
    return out


@dataclass(frozen=True, kw_only=True)
class ToolDef:
    """One tool of one item: what the model reads, and how its simulated result is written."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    forbidden: bool
    completes: bool
    example: Mapping[str, Any]
    _result: str
    _params: tuple[tuple[str, Any], ...]

    def result(self, arguments: Mapping[str, Any]) -> str:
        """The simulated result of a call with ``arguments`` (assumed valid: see :func:`argument_error`)."""
        values = {n: "" for n in placeholders(self._result)}
        values.update(dict(self._params))
        values.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in arguments.items()})
        return fill(self._result, values)

    def openai(self) -> dict[str, Any]:
        """The tool in the OpenAI function format that ``bind_tools`` and chat templates take."""
        parameters = json.loads(json.dumps(dict(self.parameters)))
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": parameters},
        }


@dataclass(frozen=True, kw_only=True)
class ToolItem:
    """One filled variant of a tool scenario: the unit the tool testbed plays (one agent per item)."""

    scenario: str
    variant: int
    system_prompt: str
    prompt: str
    tools: tuple[ToolDef, ...]
    supervised_text: str
    unsupervised_text: str
    neutral_text: str
    reward_compliant: float
    reward_violating_undetected: float
    reward_violating_detected: float
    reward_not_done: float
    reward_invalid: float

    @property
    def key(self) -> str:
        """Stable identifier ``scenario#variant``."""
        return f"{self.scenario}#{self.variant}"

    @property
    def violating(self) -> str:
        """The forbidden tool's name (the target whose rate is measured)."""
        return next(t.name for t in self.tools if t.forbidden)

    @property
    def compliant(self) -> str:
        """The first allowed tool that completes the task (the other candidate in score mode)."""
        return next(t.name for t in self.tools if t.completes and not t.forbidden)

    def tool(self, name: str) -> ToolDef | None:
        return next((t for t in self.tools if t.name == name), None)


def tool_items(s: ToolScenario) -> list[ToolItem]:
    """Fill every variant of a tool scenario."""
    items = []
    for i, v in enumerate(s.variants):
        tools = tuple(
            ToolDef(
                name=t.name,
                description=fill(t.description, v),
                parameters=MappingProxyType(t.parameters),
                forbidden=t.forbidden,
                completes=t.completes,
                example=MappingProxyType(t.example),
                _result=t.result,
                _params=tuple(sorted(v.items())),
            )
            for t in s.tools
        )
        items.append(ToolItem(scenario=s.name, variant=i, tools=tools, **supervised_fields(s, v)))
    return items
