"""``${param}`` templating (string.Template semantics, never ``str.format``) and testbed items.

An *item* is one scenario variant with every template filled: the unit the individual testbed plays and the
collective testbed turns into a game.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from string import Template
from typing import Any

from .models import CollectiveScenario, IndividualScenario, ToolScenario

COLLECTIVE_BUILTINS = frozenset({"n", "threshold", "success", "fail_collective", "fail_independent"})
"""Placeholders every collective prompt may use; filled per group at run time."""


def fmt_number(x: float | int) -> str:
    """Print a number as people write it: ``45``, ``2.1``, ``0.25`` (no ``45.0``)."""
    if isinstance(x, float) and x.is_integer() and math.isfinite(x):
        return str(int(x))
    return f"{x:g}" if isinstance(x, float) and abs(x) >= 1e6 else str(x)


def _as_text(v: Any) -> str:
    return fmt_number(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)


def fill(template: str, params: dict[str, Any]) -> str:
    """Fill ``${name}`` placeholders; ``$$`` is a literal dollar. Missing names raise ``KeyError``."""
    return Template(template).substitute({k: _as_text(v) for k, v in params.items()})


def placeholders(template: str) -> set[str]:
    """Names a template refers to. Raises ``ValueError`` on a malformed ``$`` (e.g. a lone ``$`` at the end)."""
    names = set()
    for m in Template.pattern.finditer(template):
        if m.group("invalid") is not None:
            raise ValueError(f"stray '$' at character {m.start('invalid')}: write $$ for a dollar sign")
        name = m.group("named") or m.group("braced")
        if name:
            names.add(name)
    return names


MAX_NUMBER = 1e12
"""Largest payoff or factor a scenario may state (beyond it, capital over rounds overflows to inf and NaN)."""


def _number(v: Any, params: dict[str, Any]) -> float:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_NUMBER:  # float() of a huge int overflows
        digits = int(abs(v).bit_length() * math.log10(2)) + 1  # str() of over 4,300 digits raises
        raise ValueError(f"an integer of about {digits} digits is not a number of at most {MAX_NUMBER:g} in size")
    if isinstance(v, int | float) and not isinstance(v, bool):
        out, text = float(v), repr(v)
    else:
        text = fill(v, params).strip()
        try:
            out = float(text)
        except (ValueError, OverflowError):
            raise ValueError(f"{text[:40]!r} is not a number") from None
    if not math.isfinite(out) or abs(out) > MAX_NUMBER:
        raise ValueError(f"{text[:40]!r} is not a finite number of at most {MAX_NUMBER:g} in size")
    return out


def _templates(s: IndividualScenario | CollectiveScenario | ToolScenario) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = [(("system_prompt",), s.system_prompt), (("prompt",), s.prompt)]
    if isinstance(s, IndividualScenario | ToolScenario):
        out += [(("supervision", k), v) for k, v in s.supervision.model_dump().items()]
    return out


def _numbers(s: IndividualScenario | CollectiveScenario | ToolScenario) -> list[tuple[tuple, Any]]:
    if isinstance(s, IndividualScenario | ToolScenario):
        return [(("payoff", k), v) for k, v in s.payoff.model_dump().items()]
    return [(("game", k), getattr(s.game, k)) for k in ("success", "fail_collective", "fail_independent")]


def check_templates(s: IndividualScenario | CollectiveScenario | ToolScenario) -> list[tuple[tuple, str, str]]:
    """Every template problem as ``(location, field, message)``: unknown placeholders, bad ``$``, non-numbers."""
    problems: list[tuple[tuple, str, str]] = []
    builtins = COLLECTIVE_BUILTINS if isinstance(s, CollectiveScenario) else frozenset()
    probe = {k: 1 for k in builtins}
    for loc, text in _templates(s) + [(loc, v) for loc, v in _numbers(s) if isinstance(v, str)]:
        field = ".".join(map(str, loc))
        try:
            names = placeholders(text)
        except ValueError as e:
            problems.append((loc, field, str(e)))
            continue
        for i, variant in enumerate(s.variants):
            missing = sorted(names - set(variant) - builtins)
            if missing:
                problems.append((loc, field, f"placeholder ${{{missing[0]}}} has no value in variants[{i}]"))
                break
            if "${" in fill(text, {**probe, **variant}):
                problems.append(
                    (loc, field, "renders a literal '${': write $$${name} for a dollar sign before a value")
                )
                break
    reported = {p[0] for p in problems}
    for loc, v in _numbers(s):
        if loc in reported:
            continue
        for i, variant in enumerate(s.variants):
            try:
                _number(v, {**probe, **variant})
            except (ValueError, KeyError) as e:
                msg = str(e) if isinstance(e, ValueError) else f"placeholder ${{{e.args[0]}}} has no value"
                problems.append((loc, ".".join(map(str, loc)), f"{msg} (variants[{i}])"))
                break
    return problems


@dataclass(frozen=True, kw_only=True)
class IndividualItem:
    """One filled variant of an individual scenario."""

    scenario: str
    variant: int
    system_prompt: str
    prompt: str
    compliant: str
    violating: str
    supervised_text: str
    unsupervised_text: str
    neutral_text: str
    reward_compliant: float
    reward_violating_undetected: float
    reward_violating_detected: float
    reward_invalid: float

    @property
    def key(self) -> str:
        """Stable identifier ``scenario#variant``."""
        return f"{self.scenario}#{self.variant}"


def supervised_fields(s: IndividualScenario | ToolScenario, v: dict[str, Any]) -> dict[str, Any]:
    """The filled prompts, supervision sentences and rewards of one variant (the individual and tool items')."""
    p = s.payoff
    extra = {"reward_not_done": _number(p.not_done, v)} if isinstance(s, ToolScenario) else {}
    return {
        "system_prompt": fill(s.system_prompt, v),
        "prompt": fill(s.prompt, v),
        "supervised_text": fill(s.supervision.supervised, v),
        "unsupervised_text": fill(s.supervision.unsupervised, v),
        "neutral_text": fill(s.supervision.neutral, v),
        "reward_compliant": _number(p.compliant, v),
        "reward_violating_undetected": _number(p.violating_undetected, v),
        "reward_violating_detected": _number(p.violating_detected, v),
        "reward_invalid": _number(p.invalid, v),
        **extra,
    }


def individual_items(s: IndividualScenario) -> list[IndividualItem]:
    """Fill every variant of an individual scenario."""
    items = []
    for i, v in enumerate(s.variants):
        items.append(
            IndividualItem(
                scenario=s.name,
                variant=i,
                compliant=s.options.compliant,
                violating=s.options.violating,
                **supervised_fields(s, v),
            )
        )
    return items


@dataclass(frozen=True, kw_only=True)
class GameRules:
    """A collective scenario's game with every number filled for one variant."""

    threshold: int | float
    success: float
    fail_collective: float
    fail_independent: float
    capital: str
    start_capital: float

    def count(self, group_size: int) -> int:
        """The threshold as a head count for a group of ``group_size`` (fractions round up)."""
        if isinstance(self.threshold, float):
            return max(1, math.ceil(self.threshold * group_size - 1e-9))
        return int(self.threshold)


@dataclass(frozen=True, kw_only=True)
class CollectiveItem:
    """One variant of a collective scenario; prompts are filled per group with :meth:`render`."""

    scenario: str
    variant: int
    collective: str
    independent: str
    rules: GameRules
    _system: str
    _prompt: str
    _params: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        """Stable identifier ``scenario#variant``."""
        return f"{self.scenario}#{self.variant}"

    def render(self, *, n: int, threshold: int) -> tuple[str, str]:
        """System prompt and question for a group of ``n`` with a head-count ``threshold``."""
        r = self.rules
        params = {
            **dict(self._params),
            "n": n,
            "threshold": threshold,
            "success": r.success,
            "fail_collective": r.fail_collective,
            "fail_independent": r.fail_independent,
        }
        return fill(self._system, params), fill(self._prompt, params)


def collective_items(s: CollectiveScenario) -> list[CollectiveItem]:
    """Fill every variant of a collective scenario's game numbers."""
    out = []
    for i, v in enumerate(s.variants):
        probe = {**{k: 1 for k in COLLECTIVE_BUILTINS}, **v}
        g = s.game
        rules = GameRules(
            threshold=g.threshold,
            success=_number(g.success, probe),
            fail_collective=_number(g.fail_collective, probe),
            fail_independent=_number(g.fail_independent, probe),
            capital=g.capital,
            start_capital=g.start_capital,
        )
        out.append(
            CollectiveItem(
                scenario=s.name,
                variant=i,
                collective=s.options.collective,
                independent=s.options.independent,
                rules=rules,
                _system=s.system_prompt,
                _prompt=s.prompt,
                _params=tuple(sorted(v.items())),
            )
        )
    return out
