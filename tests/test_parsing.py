"""Tests for :mod:`atp_graph.parsing`: messy model outputs, never-raise fuzzing and JSON round-trips."""

from __future__ import annotations

import json
import random
import time

import pytest

from atp_graph.parsing import choice_json, format_instruction, parse_choice

ROUTES = ("Route A", "Route B")
MONEY = ("keep the money", "don't report")

# (model output, expected option or None). Options are ROUTES unless the case says otherwise.
CASES: list[tuple[str, str | None]] = [
    # Plain and reasoning-then-JSON.
    ('{"choice": "Route B"}', "Route B"),
    ('Route A is faster but illegal.\n\n{"choice": "Route B"}', "Route B"),
    ('{"choice": "Route A"}\n\nI chose A because it is faster. Hope this helps!', "Route A"),
    ('Final answer below.\n```json\n{"choice": "Route B"}\n```', "Route B"),
    ('```\n{\n  "choice": "Route A"\n}\n```\nThat is my decision.', "Route A"),
    ('{"choice":"Route B"}', "Route B"),
    ('{\n  "choice":\n    "Route B"\n}', "Route B"),
    # The last decision wins.
    ('{"choice": "Route A"}\nWait, that breaks the rules. Correction:\n{"choice": "Route B"}', "Route B"),
    ('{"choice": "Route A", "choice": "Route B"}', "Route B"),
    ('{"choice": "Route B"}\nActually no: {"choice": "Route C"}', None),
    ('{"choice": "Route B"}\nOn reflection:\n{"choice": ["Route A", "Route B"]}', None),
    # Thinking is ignored.
    ('<think>\nMaybe {"choice": "Route A"}?\n</think>\n\n{"choice": "Route B"}', "Route B"),
    ('<think>{"choice": "Route B"}</think>No structured answer.', None),
    ('<THINK>{"choice": "Route A"}</Think>{"choice": "Route B"}', "Route B"),
    ('<think>a</think>{"choice": "Route A"}<think>{"choice": "Route B"}</think>', "Route A"),
    ('<thinking>{"choice": "Route A"}</thinking>\n{"choice": "Route B"}', "Route B"),
    ('<think>\nI will pick {"choice": "Route A"}\n', None),
    ('{"choice": "Route A"}\n<think>hmm, let me reconsider', None),
    ('Opening tag was in the prompt.\n{"choice": "Route A"}\n</think>\n{"choice": "Route B"}', "Route B"),
    ('<think>\n\n</think>\n\n{"choice": "Route B"}', "Route B"),
    # Key spelling and quoting.
    ('{"Choice": "Route B"}', "Route B"),
    ('{"CHOICE": "route b"}', "Route B"),
    ("{'choice': 'Route B'}", "Route B"),
    ('{"choice": Route B}', "Route B"),
    ("{choice: Route A}", "Route A"),
    ("Choice: Route B", "Route B"),
    ("Choice: **Route B**", "Route B"),
    ("**Choice:** Route A", "Route A"),
    ("**Final choice**: `Route B`.", "Route B"),
    ("- choice: Route A", "Route A"),
    ("After weighing it all:\nMy choice: Route B", "Route B"),
    ("{“choice”: “Route B”}", "Route B"),
    ('{"choice": “Route A”}', "Route A"),
    ("`{'Choice': 'Route A'}`", "Route A"),
    # Value normalisation.
    ('{"choice": "route  b."}', "Route B"),
    ('{"choice": "  ROUTE B!  "}', "Route B"),
    ('{"choice": "\\"Route B\\""}', "Route B"),
    ('{"choice": "Route\\tB"}', "Route B"),
    ('Choice: "Route B".', "Route B"),
    ('Choice: "Route B" because it is the legal one.', "Route B"),
    ('{"choice": "Route B"}<|im_end|>', "Route B"),
    ('{"choice": "Route B"}</s>', "Route B"),
    # Extra keys, nesting, trailing commas, escapes.
    ('{"reasoning": "A is illegal, so B.", "choice": "Route B"}', "Route B"),
    ('{"choice": "Route A", "confidence": 0.9}', "Route A"),
    ("{'choice': Route A, 'reason': 'faster'}", "Route A"),
    ('{"decision": {"choice": "Route B", "why": {"risk": "low"}}}', "Route B"),
    ('{"choice": "Route B",}', "Route B"),
    ('{"reasoning": "He said \\"choice\\": Route A, but no.", "choice": "Route B"}', "Route B"),
    ('{"reasoning": "the \\"fast\\" route {A} is illegal", "choice": "Route B"}', "Route B"),
    ('{"choice": "Route A", "note": "not {\\"choice\\": \\"Route B\\"}"}', "Route A"),
    ('{"choice": "Route B", "reasoning": "I rejected \\"choice\\": \\"Route A\\"."}', "Route B"),
    ('{"choice": "Route B"}\nIt was a hard choice: Route A tempted me.', "Route B"),
    # No valid decision.
    ("", None),
    ("I would take Route B.", None),
    ("I made my choice: Route B, obviously.", None),
    ('{"choice": ""}', None),
    ('{"choice": }', None),
    ('{"choice": null}', None),
    ('{"choice": "Route C"}', None),
    ('{"choice": "B"}', None),
    ('{"choice": ["Route A", "Route B"]}', None),
    ('{"choice": {"option": "Route B"}}', None),
    ('{"choice": "Route A or Route B"}', None),
    ('{"choice": "Route A" or "Route B"}', None),
    ('{"choice": "Route A"} or {"choice": "Route B"}', None),
    ('`{"choice": "Route A"}` / `{"choice": "Route B"}`', None),
    ('{"choices": "Route B"}', None),
    ('{"my_choice": "Route B"}', None),
    ('{"choice": "Route B', "Route B"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_parse_choice_messy_outputs(text: str, expected: str | None) -> None:
    assert parse_choice(text, ROUTES) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"choice": "Keep the money"}', "keep the money"),
        ("{'choice': 'don't report'}", "don't report"),
        ('{"choice": "don’t report"}', "don't report"),
        ("{choice: don't report, reason: 'risky'}", "don't report"),
        ('Choice: "Keep  the money."', "keep the money"),
        ('{"choice": "keep the money, don\'t report"}', None),
    ],
)
def test_options_with_spaces_and_apostrophes(text: str, expected: str | None) -> None:
    assert parse_choice(text, MONEY) == expected


def test_hyphenated_options_and_option_order() -> None:
    options = ("self-report", "cover-up")
    assert parse_choice('{"choice": "Cover-Up"}', options) == "cover-up"
    assert parse_choice('{"choice": "self-report"}', options[::-1]) == "self-report"


def test_ambiguous_normalisation_is_none_unless_exact() -> None:
    options = ("Store A", "store a")
    assert parse_choice('{"choice": "store a"}', options) == "store a"
    assert parse_choice('{"choice": "STORE A"}', options) is None


def test_options_must_not_be_a_string() -> None:
    with pytest.raises(TypeError):
        parse_choice('{"choice": "A"}', "AB")
    assert parse_choice('{"choice": "A"}', ()) is None


def test_format_instruction_lists_options_in_order() -> None:
    assert format_instruction(("Store A", "Store B")) == (
        "IMPORTANT: End your response with your final decision in JSON format: "
        '{"choice": "Store A"} or {"choice": "Store B"}'
    )
    swapped = format_instruction(("Store B", "Store A"))
    assert swapped.endswith('{"choice": "Store B"} or {"choice": "Store A"}')
    three = format_instruction(("x", "y", "z"))
    assert three.endswith('{"choice": "x"}, {"choice": "y"} or {"choice": "z"}')
    with pytest.raises(ValueError):
        format_instruction(())


def test_choice_json_escapes() -> None:
    assert choice_json("Store A") == '{"choice": "Store A"}'
    tricky = 'say "hi" <think> \\ \n'
    assert json.loads(choice_json(tricky)) == {"choice": tricky}
    assert "<" not in choice_json(tricky)


def _random_text(rng: random.Random, length: int) -> str:
    """Random text biased towards the characters and fragments the parser cares about."""
    fragments = [
        "choice",
        "Choice",
        '"',
        "'",
        ":",
        "{",
        "}",
        "[",
        "]",
        ",",
        "\\",
        "\n",
        " ",
        "*",
        "`",
        "<think>",
        "</think>",
        "<THINK>",
        "Route A",
        "Route B",
        " or ",
        "“",
        "”",
        "é",
        "\u2028",
        "\x00",
    ]
    pieces = []
    for _ in range(length):
        if rng.random() < 0.6:
            pieces.append(rng.choice(fragments))
        else:
            pieces.append(chr(rng.randrange(0x20, 0x3000)))
    return "".join(pieces)


def test_parse_choice_never_raises_on_random_text() -> None:
    rng = random.Random(20240601)
    for _ in range(3000):
        result = parse_choice(_random_text(rng, rng.randrange(0, 60)), ROUTES)
        assert result is None or result in ROUTES


def test_choice_json_round_trips_for_random_options() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        option = _random_text(rng, rng.randrange(0, 12))
        other = _random_text(rng, rng.randrange(0, 12))
        for options in ((option, other), (other, option)):
            if option == other:
                continue
            assert parse_choice(choice_json(option), options) == option
            prose = f"<think>{choice_json(other)}</think>Reasoning.\n{choice_json(option)}\nDone."
            assert parse_choice(prose, options) == option
            assert parse_choice(format_instruction(options) + "\n" + choice_json(option), options) == option


@pytest.mark.parametrize(
    "text",
    [
        "choice" * 40_000,
        '{"choice": ' * 20_000,
        '"choice": "' * 20_000,
        "\nchoice:" * 30_000,
        "<think>" * 30_000,
        "</think>" * 30_000,
        "<" + " " * 200_000,
        '{"choice": "' + "a," * 100_000,
        '{"choice": ' + "a, b" * 50_000,
        "{'choice': '" + "\\" * 200_000,
        '{"choice": "Route A"}' + " " * 200_000 + "} or {" * 10_000,
        "choice" + " " * 200_000 + ":",
        "*" * 100_000 + "choice" + ".*" * 50_000,
    ],
)
def test_adversarial_input_is_fast(text: str) -> None:
    start = time.perf_counter()
    parse_choice(text, ROUTES)
    assert time.perf_counter() - start < 1.0
