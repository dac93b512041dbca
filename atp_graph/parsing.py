"""Turn a model's free-text answer into one of the offered options.

Every question ends with :func:`format_instruction`, asking for ``{"choice": "<option>"}``. Models follow
it loosely, so :func:`parse_choice` reads the final decision out of messy text and returns ``None`` when
there is no clear one. The rules, in order:

1. Thinking is ignored: text inside ``<think>...</think>`` (or ``<thinking>``; any case, any number of
   blocks) is dropped. An unclosed ``<think>`` means the model never finished thinking: no decision. A
   closing tag with no opening tag (Qwen3/R1 templates put ``<think>`` in the prompt) marks everything
   before it as thinking.
2. A decision is a ``choice`` key (any case) followed by ``:``, found as
   a quoted key anywhere (``"choice"``, ``'choice'``, ``“choice”``),
   an unquoted key right after ``{`` or ``,`` (``{choice: X}``), or
   a bare line ``choice: X``, optionally bulleted, bolded or prefixed with ``final``/``my``
   (``**Final choice:** Route B``). Prose such as ``I made my choice: B`` mid-sentence is not a key.
3. The LAST decision outside thinking wins, even when it is invalid: a model that corrects itself is
   judged on its correction. Text inside an earlier decision's value is never a decision, but a
   single-quoted key inside another key's string is (``"why": "not 'choice': 'A'"`` after the choice).
4. The value is a JSON string (escapes honoured) or, if unquoted, single-quoted or in typographic
   quotes, the text up to the end of the line, a brace, or a following ``, "key":``. Text after a JSON
   string is ignored (``"B"<|im_end|>``) unless it holds another string: ``"A" or "B"`` is invalid, as
   are list and object values and an echoed template ``{"choice": "A"} or {"choice": "B"}``.
5. The value matches an option exactly, or else after normalisation (case, repeated whitespace,
   typographic quotes, surrounding quotes/backticks/markdown emphasis, trailing ``.,;:!?``). It must
   match exactly one option; partial matches (``B`` for ``Route B``) and mixtures are ``None``.

Everything runs in linear time: the regexes cannot backtrack catastrophically, lookarounds are bounded,
and no text is scanned twice per decision.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from typing import Literal, get_args

__all__ = [
    "ANSWER_FORMAT",
    "ANSWER_PREFIX",
    "PARSE_RULES",
    "ParseRule",
    "choice_json",
    "format_instruction",
    "match_option",
    "parse_choice",
]

_THINK_TAG = re.compile(r"<(/?)think(?:ing)?\s*>", re.IGNORECASE)
_KEY_WORD = re.compile(r"choice", re.IGNORECASE)
_KEY_QUOTES = "\"'`“”‘’"
_LINE_PREFIXES = frozenset({"", "final", "my", "my final"})
_LINE_DECORATION = " \t*_#>-`0123456789.)"
_LOOKBACK = 40
# An unquoted value stops at the end of the line, at a brace, or where the next key starts (`, "why":`).
_VALUE_END = re.compile(r"[\r\n{}]")
# The text after a JSON string value, up to here, must not hold another string (`"A" or "B"`).
_STRING_TAIL_END = re.compile(r"[\r\n{},]")
_NEXT_KEY = re.compile(r",\s*[\"'“‘]?\w+[\"'”’]?\s*:")
# An echoed template: `{"choice": "A"} or {"choice": "B"}`, seen just before the last key.
_ALTERNATIVE = re.compile(r"\}[\s`*]*(?:or|/|\|)[\s`*]*\{\s*[\"'“‘`]?$", re.IGNORECASE)
_TYPOGRAPHIC = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "«": '"', "»": '"'})
_WRAPPERS = " \t\"'`*_"
_TRAILING_PUNCT = ".,;:!?"
_DECODER = json.JSONDecoder()


def choice_json(option: str) -> str:
    """Return the JSON object that selects ``option``, e.g. ``{"choice": "Store A"}``.

    The string is JSON-escaped; ``<`` and ``>`` are written as ``\\u003c``/``\\u003e`` so an option can
    never look like a ``<think>`` tag. ``parse_choice(choice_json(o), options) == o`` for any option.
    """
    dumped = json.dumps({"choice": option}, ensure_ascii=False)
    return dumped.replace("<", "\\u003c").replace(">", "\\u003e")


ANSWER_PREFIX = '{"choice": "'
"""What every :func:`choice_json` starts with: the assistant text score mode puts before each option."""

ANSWER_FORMAT = "IMPORTANT: End your response with your final decision in JSON format: ${examples}"
"""The default answer instruction (a protocol template: ``${examples}``, ``${option_1}``, ``${option_2}``)."""


def format_instruction(options: Sequence[str], template: str = ANSWER_FORMAT) -> str:
    """Return the instruction appended to every question, listing ``options`` in the given order.

    Callers counterbalance the order by passing the options swapped. ``template`` is a protocol's
    ``answer_format``: ``${examples}`` is ``{"choice": "<a>"} or {"choice": "<b>"}``, ``${option_1}`` and
    ``${option_2}`` the options as listed.

    Raises:
        TypeError: If ``options`` is a single string rather than a sequence of them.
        ValueError: If ``options`` is empty.
    """
    _check_options(options)
    if not options:
        raise ValueError("format_instruction needs at least one option")
    examples = [choice_json(option) for option in options]
    listed = examples[0] if len(examples) == 1 else ", ".join(examples[:-1]) + " or " + examples[-1]
    values = {"examples": listed, "option_1": options[0], "option_2": options[-1]}
    return string.Template(template).substitute(values)


ParseRule = Literal["last", "first"]
"""``last``: the last decision outside thinking (ours); ``first``: the first decision anywhere, thinking
included (the study's rule)."""

PARSE_RULES: tuple[str, ...] = get_args(ParseRule)


def parse_choice(text: str, options: Sequence[str], *, rule: ParseRule = "last") -> str | None:
    """Return the option the model chose, exactly as given in ``options``, or ``None``.

    ``None`` means no valid decision: no choice key, an unclosed ``<think>``, an empty, list or unknown
    value, or one that matches several options. See the module docstring for the full rules.

    ``rule="first"`` is the study's rule instead: the FIRST decision anywhere in the text, thinking included
    (an unclosed ``<think>`` does not matter), and its value alone decides: a model that corrects itself, or
    echoes the answer template while thinking, is judged on that first one.

    Raises:
        TypeError: If ``options`` is a single string rather than a sequence of them.
        ValueError: For an unknown ``rule``.
    """
    _check_options(options)
    if rule == "first":
        return _first_choice(text, options)
    if rule != "last":
        raise ValueError(f"unknown parse rule {rule!r}; use one of {', '.join(PARSE_RULES)}")
    visible = _strip_thinking(text)
    if visible is None or not options:
        return None
    last: tuple[str | None, int] | None = None
    skip_until = 0
    for match in _KEY_WORD.finditer(visible):
        if match.start() < skip_until:
            continue  # inside the previous decision's value
        value_start = _value_start(visible, match.start(), match.end())
        if value_start < 0:
            continue
        value, skip_until = _read_value(visible, value_start)
        last = (value, match.start())
    if last is None:
        return None
    value, key_start = last
    if _ALTERNATIVE.search(visible, max(0, key_start - _LOOKBACK), key_start):
        return None
    return match_option(value, options)


def _first_choice(text: str, options: Sequence[str]) -> str | None:
    """The study's rule: the first decision anywhere (thinking included) names the option, or nothing does."""
    if not options:
        return None
    for match in _KEY_WORD.finditer(text):
        value_start = _value_start(text, match.start(), match.end())
        if value_start >= 0:
            return match_option(_read_value(text, value_start)[0], options)
    return None


def _check_options(options: Sequence[str]) -> None:
    """Reject a bare string, which is a ``Sequence[str]`` of its characters."""
    if isinstance(options, str):
        raise TypeError("options must be a sequence of option strings, not one string")


def _strip_thinking(text: str) -> str | None:
    """Drop thinking blocks; ``None`` if one is never closed. Kept parts are joined by newlines."""
    parts: list[str] = []
    pos = 0
    inside = False
    for tag in _THINK_TAG.finditer(text):
        closing = bool(tag.group(1))
        if inside:
            if closing:
                inside, pos = False, tag.end()
        elif closing:  # stray close: the opening tag was in the prompt, everything so far was thinking
            parts, pos = [], tag.end()
        else:
            parts.append(text[pos : tag.start()])
            inside = True
    if inside:
        return None
    parts.append(text[pos:])
    return "\n".join(parts)


def _value_start(text: str, start: int, end: int) -> int:
    """Return where the value of the key ``text[start:end]`` begins, or -1 if this is not a key."""
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if before.isalnum() or before == "_":
        return -1
    if before and before in _KEY_QUOTES:
        if not after or after not in _KEY_QUOTES:  # also rejects an escaped `\"choice\"` in a string
            return -1
        pos = end + 1
    else:
        if after.isalnum() or after == "_" or not _unquoted_key_context(text, start):
            return -1
        pos = end
    limit = min(len(text), pos + 8)
    while pos < limit and text[pos] in " \t*_":
        pos += 1
    return pos + 1 if pos < len(text) and text[pos] == ":" else -1


def _unquoted_key_context(text: str, start: int) -> bool:
    """Whether an unquoted ``choice`` at ``start`` follows ``{``/``,`` or begins a (decorated) line."""
    window_start = max(0, start - _LOOKBACK)
    window = text[window_start:start]
    if window.rstrip().endswith(("{", ",")):
        return True
    newline = window.rfind("\n")
    if newline < 0 and window_start > 0:
        return False  # too far from the start of the line
    return window[newline + 1 :].strip(_LINE_DECORATION).casefold() in _LINE_PREFIXES


def _read_value(text: str, pos: int) -> tuple[str | None, int]:
    """Read the value starting at ``pos``; return it (``None`` for a list or object) and where it ends."""
    while pos < len(text) and text[pos] in " \t\r\n*`":
        pos += 1
    if pos >= len(text):
        return "", pos
    if text[pos] in "[{":
        return None, pos + 1
    string_end = pos
    if text[pos] == '"':
        try:
            value, string_end = _DECODER.raw_decode(text, pos)
        except ValueError:
            pass
        else:
            found = _STRING_TAIL_END.search(text, string_end)
            tail_end = found.start() if found else len(text)
            if not any(quote in text[string_end:tail_end] for quote in '"“”'):
                return value, tail_end  # not `"A" or "B"`; trailing `.` or `<|im_end|>` are fine
    found = _VALUE_END.search(text, pos)
    end = found.start() if found else len(text)
    value = text[pos:end]
    next_key = _NEXT_KEY.search(value)
    if next_key:
        value = value[: next_key.start()]
    return value, max(end, string_end)


def _normalize(value: str) -> str:
    """Case-fold, collapse whitespace, and drop surrounding quotes/markdown and trailing punctuation."""
    value = " ".join(value.translate(_TYPOGRAPHIC).split()).casefold()
    return value.lstrip(_WRAPPERS).rstrip(_WRAPPERS + _TRAILING_PUNCT)


def match_option(value: str | None, options: Sequence[str]) -> str | None:
    """Return the one option ``value`` names (exactly, or ignoring case, spacing and punctuation), or ``None``
    if it names none or several."""
    if value is None:
        return None
    if value in options:
        return value
    key = _normalize(value)
    if not key:
        return None
    hits = {option for option in options if _normalize(option) == key}
    return hits.pop() if len(hits) == 1 else None
