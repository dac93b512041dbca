"""Click options derived from pydantic config fields: name, type, default and help are written once, on the field.

``lora_rank`` becomes ``--lora-rank``; ``Literal`` fields become choices, ``bool`` fields flags, ``list[float]``
fields comma-separated numbers and ``list[tuple[float, float, float]]`` fields ``a/b/c,d/e/f``. Every option
defaults to ``None`` (= keep the config's own default, shown in the help), so a config built from the given options
equals one built in Python. With the group's ``auto_envvar_prefix`` every option also reads ``ATP_<COMMAND>_<OPTION>``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])


class FilePath(click.Path):
    """``click.Path`` that refuses a path the OS cannot even look at (a NUL byte, a name too long) as a usage error
    instead of a traceback."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except (ValueError, OSError) as e:
            self.fail(f"{ascii(str(value))[:80]} is not a usable path ({e})", param, ctx)


def _inner(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _numbers(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated numbers", param_hint=flag) from None


def _triples(text: str, flag: str) -> list[tuple[float, ...]]:
    out = []
    for part in text.split(","):
        nums = part.split("/")
        try:
            if len(nums) != 3:
                raise ValueError
            out.append(tuple(float(x) for x in nums))
        except ValueError:
            raise click.BadParameter(f"{part!r}: expected a/b/c, e.g. 1.2/1/0.8", param_hint=flag) from None
    return out


def _parser(annotation: Any) -> Callable[[str, str], Any] | None:
    """A text parser for list-valued fields."""
    if typing.get_origin(annotation) is not list:
        return None
    (item,) = typing.get_args(annotation)
    return _triples if typing.get_origin(item) is tuple else _numbers


def click_type(annotation: Any) -> Any:
    """The click type of a field (``X | None`` -> ``X``, ``Literal`` -> a choice, lists -> text)."""
    annotation = _inner(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    return {int: int, float: float, bool: bool}.get(annotation, str)


def config_options(
    cls: type[BaseModel],
    *,
    skip: Iterable[str] = (),
    extra_choices: dict[str, list[str]] | None = None,
    types: dict[str, click.ParamType] | None = None,
) -> Callable[[F], F]:
    """Add one ``--option`` per field of ``cls`` (except ``skip``); ``extra_choices`` adds CLI-only choices
    (e.g. ``decision: ["auto"]``); ``types`` gives a field a more precise click type (e.g. an existing file)."""
    skip, extra, precise = set(skip), extra_choices or {}, types or {}

    def decorate(fn: F) -> F:
        for name, info in reversed(list(cls.model_fields.items())):
            if name in skip:
                continue
            flag = "--" + name.replace("_", "-")
            kind = precise.get(name) or click_type(info.annotation)
            if name in extra and isinstance(kind, click.Choice):
                kind = click.Choice([*extra[name], *kind.choices])
            default = info.default
            shown = extra[name][0] if name in extra else default
            help_text = (info.description or "").strip() + ("" if shown is None else f" [default: {shown}]")
            if kind is bool:  # a --x/--no-x pair: not given = None = the config's own default
                fn = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)(fn)
                continue
            parser = _parser(_inner(info.annotation))
            callback = None
            if parser is not None:
                callback = (lambda p: lambda ctx, param, v: None if v in (None, "") else p(v, param.opts[0]))(parser)
            fn = click.option(flag, name, type=kind, default=None, callback=callback, help=help_text)(fn)
        return fn

    return decorate


def build_config(cls: type[BaseModel], values: dict[str, Any], **fixed: Any) -> Any:
    """An instance of ``cls`` from the options that were given (``None`` = not given) plus ``fixed`` values."""
    given = {k: v for k, v in values.items() if k in cls.model_fields and v is not None}
    return cls(**{**given, **fixed})
