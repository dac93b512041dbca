"""Tests for :mod:`atp_graph.scenarios`: built-in files, the safe loader's ``PATH:LINE: field: message`` errors,
``${param}`` templating and testbed items."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from atp_graph.scenarios import (
    CollectiveScenario,
    IndividualScenario,
    ScenarioError,
    collective_items,
    fill,
    individual_items,
    load_scenario_file,
    load_scenarios,
    resolve,
)
from cli import cli

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"

# A valid individual scenario. Line numbers matter: the expected lines in CASES below are counted by hand.
BASE = """\
name: test-job
kind: individual
description: A test job.
system_prompt: You work at a test bench.
prompt: Following the rule pays $$${low}; breaking it pays $$${high}.
options:
  compliant: follow the rule
  violating: break the rule
supervision:
  supervised: The boss checks today.
  unsupervised: The boss is away today.
  neutral: Nobody knows whether the boss checks today.
payoff:
  compliant: ${low}
  violating_undetected: ${high}
  violating_detected: 0
  invalid: 0
variants:
  - {low: 10, high: 20}
  - {low: 5, high: 30}
defaults:
  rounds: 6
  history_window: 5
  supervision_pattern: all_unsupervised
"""
#  1 name              6 options          13 payoff             18 variants        21 defaults
#  2 kind              7   compliant      14   compliant        19   - variant 0    22   rounds
#  3 description       8   violating      15   violating_undet. 20   - variant 1    23   history_window
#  4 system_prompt     9 supervision      16   violating_det.                       24   supervision_pattern
#  5 prompt           10-12 sentences     17   invalid

# A valid collective scenario.
COLLECTIVE = """\
name: test-game
kind: collective
description: A test game.
system_prompt: You are one of ${n} players.
prompt: At least ${threshold} of ${n} join, all x${success}; else in x${fail_collective}, rest x${fail_independent}.
options:
  collective: join
  independent: stay out
game:
  threshold: 4
  success: 1.2
  fail_collective: 0.8
  fail_independent: 1.0
variants:
  - {}
"""
#  9 game   10 threshold   11 success   12 fail_collective   13 fail_independent   14 variants

BOMB = (
    "\n".join(
        [f"a: &a [{', '.join(['lol'] * 9)}]"]
        + [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    )
    + "\n"
)
"""Billion laughs, 9 levels: 9**9 strings if aliases were expanded."""

PROBLEM_LINE = re.compile(r"^(?P<path>.+):(?P<line>\d+): (?P<field>\(top level\)|\S+): (?P<msg>.+)$")


def _sub(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _write(tmp_path: Path, content: str | bytes, name: str = "scenario.yaml") -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def _problems(path: Path) -> list[tuple[int, str, str]]:
    """Load ``path`` expecting a ScenarioError; check every line's form and return (line, field, message)."""
    with pytest.raises(ScenarioError) as info:
        load_scenario_file(path)
    out = []
    text = str(info.value)
    assert text.strip(), "empty error message"
    for line in text.splitlines():
        m = PROBLEM_LINE.match(line)
        assert m, f"not PATH:LINE: field: message: {line!r}"
        assert m["path"] == str(path)
        out.append((int(m["line"]), m["field"], m["msg"]))
    assert [(p.line, p.field, p.message) for p in info.value.problems] == out
    return out


def _has(problems: list[tuple[int, str, str]], line: int, field: str, words: str) -> bool:
    return any(lin == line and f == field and words.lower() in m.lower() for lin, f, m in problems)


# ---------------------------------------------------------------- built-in scenarios


def test_builtin_scenarios_load_with_study_counts():
    found = load_scenarios([SCENARIOS])
    individual = [s for s in found if isinstance(s, IndividualScenario)]
    collective = [s for s in found if isinstance(s, CollectiveScenario)]
    assert len(individual) == 16
    assert all(len(s.variants) == 4 for s in individual)
    assert sum(len(individual_items(s)) for s in individual) == 64
    assert len(collective) == 7
    tool = [s for s in found if s.kind == "tool"]
    assert len(tool) >= 6 and all(len(s.variants) == 4 for s in tool)
    names = [s.name for s in found]
    assert len(set(names)) == len(names) == 23 + len(tool)
    for s in individual:
        assert s.defaults.rounds == 6 and s.defaults.history_window == 5
        assert s.defaults.supervision_pattern == "all_unsupervised"
    for s in collective:
        g = s.game
        assert (g.threshold, g.success, g.fail_collective, g.fail_independent) == (4, 1.2, 0.8, 1.0)
        assert (g.capital, g.start_capital, s.defaults.rounds) == ("multiplicative", 1.0, 3)


def test_builtin_items_pay_the_yaml_numbers():
    """Rewards are floats equal to each variant's numbers as an independent ``yaml.safe_load`` reads them."""
    for f in sorted((SCENARIOS / "individual").glob("*.yaml")):
        raw = yaml.safe_load(f.read_text(encoding="utf-8"))
        assert raw["payoff"] == {
            "compliant": "${low}",
            "violating_undetected": "${high}",
            "violating_detected": 0,
            "invalid": 0,
        }, f
        items = individual_items(load_scenario_file(f))
        assert len(items) == len(raw["variants"]) == 4
        for it, v in zip(items, raw["variants"], strict=True):
            assert type(it.reward_compliant) is float and type(it.reward_violating_undetected) is float
            assert it.reward_compliant == float(v["low"])
            assert it.reward_violating_undetected == float(v["high"])
            assert it.reward_violating_detected == 0.0 and it.reward_invalid == 0.0
            assert it.reward_violating_undetected > it.reward_compliant, it.key
            assert f"${v['low']}" in it.prompt and f"${v['high']}" in it.prompt, it.key
            assert "$" not in it.prompt.replace(f"${v['low']}", "").replace(f"${v['high']}", "")
            assert (it.compliant, it.violating) == (raw["options"]["compliant"], raw["options"]["violating"])


def test_baker_items_by_hand():
    (baker,) = resolve("baker", kind="individual")
    got = [(it.key, it.reward_compliant, it.reward_violating_undetected) for it in individual_items(baker)]
    assert got == [("baker#0", 49.0, 50.0), ("baker#1", 42.0, 53.0), ("baker#2", 32.0, 56.0), ("baker#3", 20.0, 60.0)]
    assert "leaves you $49 for the week" in individual_items(baker)[0].prompt


def test_collective_render_fills_n_and_threshold():
    (fund,) = resolve("public-fund", kind="collective")
    (item,) = collective_items(fund)
    system, prompt = item.render(n=8, threshold=4)
    assert system.startswith("You are one of 8 participants")
    assert "at least 4 of the 8 participants invest" in prompt
    assert "multiplied by 1.2" in prompt and "multiplied by 0.8" in prompt and "multiplied by 1." in prompt
    for s in load_scenarios([SCENARIOS / "collective"]):
        for it in collective_items(s):
            system, prompt = it.render(n=8, threshold=4)
            assert "$" not in system + prompt, it.key
            assert "8" in system + prompt and "4" in prompt, it.key


def test_test_scenarios_themselves_are_valid(tmp_path):
    ind = load_scenario_file(_write(tmp_path, BASE, "a.yaml"))
    col = load_scenario_file(_write(tmp_path, COLLECTIVE, "b.yaml"))
    assert isinstance(ind, IndividualScenario) and isinstance(col, CollectiveScenario)
    assert individual_items(ind)[1].prompt == "Following the rule pays $5; breaking it pays $30."
    (it,) = collective_items(col)
    assert it.render(n=6, threshold=3)[1] == ("At least 3 of 6 join, all x1.2; else in x0.8, rest x1.")


def test_cli_validate_builtin_dir_subprocess():
    r = subprocess.run(
        [sys.executable, "cli.py", "scenarios", "validate", "scenarios/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "ok: 29 scenario(s), 95 item(s)" in r.stdout  # 16 + 7 + 6 tool scenarios; 64 + 7 + 24 items


# ---------------------------------------------------------------- bad inputs: (content, line, field, words)

CASES: dict[str, tuple[str | bytes, int, str, str]] = {
    "yaml-syntax": (_sub("description: A test job.", "description: a: b"), 3, "(yaml)", "syntax error"),
    "top-level-list": ("- name: x\n- kind: individual\n", 1, "(top level)", "mapping"),
    "top-level-scalar": ("just some words\n", 1, "(top level)", "mapping"),
    "duplicate-key": (
        _sub("  invalid: 0\n", "  invalid: 0\n  compliant: 3\n"),
        18,
        "payoff.compliant",
        "duplicate key",
    ),
    "duplicate-top-key": (
        _sub("description: A test job.\n", "description: A test job.\nname: other\n"),
        4,
        "name",
        "duplicate key",
    ),
    "typo-key": (_sub("history_window", "histroy_window"), 23, "defaults.histroy_window", "unknown key"),
    "unknown-kind": (_sub("kind: individual", "kind: solo"), 2, "kind", "unknown kind 'solo'"),
    "missing-option": (_sub("  violating: break the rule\n", ""), 6, "options.violating", "required"),
    "identical-options": (_sub("violating: break the rule", "violating: follow the rule"), 6, "options", "must differ"),
    "options-differ-by-case-and-spaces": (
        _sub("violating: break the rule", "violating: ' Follow   THE rule '"),
        6,
        "options",
        "must differ",
    ),
    "placeholder-without-value": (
        _sub("  - {low: 5, high: 30}", "  - {low: 5}"),
        5,
        "prompt",
        "${high} has no value in variants[1]",
    ),
    "non-numeric-payoff": (
        _sub("violating_detected: 0", "violating_detected: lots"),
        16,
        "payoff.violating_detected",
        "not a number",
    ),
    "non-numeric-templated-payoff": (
        _sub("{low: 5, high: 30}", "{low: 5, high: plenty}"),
        15,
        "payoff.violating_undetected",
        "'plenty' is not a number (variants[1])",
    ),
    "rounds-0": (_sub("rounds: 6", "rounds: 0"), 22, "defaults.rounds", "greater than 0"),
    "rounds-negative": (_sub("rounds: 6", "rounds: -1"), 22, "defaults.rounds", "greater than 0"),
    "empty-file": ("", 1, "(file)", "empty"),
    "only-comments": ("# nothing here\n\n", 1, "(file)", "empty"),
    "non-utf8": (
        _sub("A test job.", "Caf\udce9 job.").encode("utf-8", "surrogateescape"),
        3,
        "(file)",
        "not valid UTF-8 (byte 0xe9",
    ),
    "python-tag-in-field": (
        _sub("description: A test job.", "description: !!python/object/apply:os.system ['true']"),
        3,
        "description",
        "tag",
    ),
    "alias-bomb": (BOMB, 1, "(yaml)", "anchors and aliases are not allowed"),
    "stray-dollar": (_sub("You work at a test bench.", "You earn $ lots."), 4, "system_prompt", "stray '$'"),
    "dollar-at-end": (_sub("You work at a test bench.", "You earn lots$"), 4, "system_prompt", "stray '$'"),
    "escaped-placeholder": (_sub("pays $$${low};", "pays $${low};"), 5, "prompt", "literal '${'"),
    "attribute-placeholder": (
        _sub("You work at a test bench.", "You work at ${low.__class__}."),
        4,
        "system_prompt",
        "stray '$'",
    ),
    "unknown-placeholder-in-supervision": (
        _sub("The boss checks today.", "The ${boss} checks today."),
        10,
        "supervision.supervised",
        "${boss} has no value in variants[0]",
    ),
    "bad-supervision-pattern": (
        _sub("supervision_pattern: all_unsupervised", "supervision_pattern: sometimes"),
        24,
        "defaults.supervision_pattern",
        "all_unsupervised",
    ),
    "bad-name": (_sub("name: test-job", "name: Test Job"), 1, "name", "must match"),
    "no-variants": (BASE.split("variants:")[0] + "variants: []\n", 18, "variants", "at least 1"),
    "threshold-fraction-above-1": (_sub("threshold: 4", "threshold: 1.5", COLLECTIVE), 10, "game.threshold", "(0, 1]"),
    "threshold-0": (_sub("threshold: 4", "threshold: 0", COLLECTIVE), 10, "game.threshold", "at least 1"),
    "threshold-0.0": (_sub("threshold: 4", "threshold: 0.0", COLLECTIVE), 10, "game.threshold", "(0, 1]"),
    "threshold-negative": (_sub("threshold: 4", "threshold: -2", COLLECTIVE), 10, "game.threshold", "at least 1"),
    "non-numeric-game": (_sub("success: 1.2", "success: big", COLLECTIVE), 11, "game.success", "not a number"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_with_path_line_field(tmp_path, case):
    content, line, field, words = CASES[case]
    path = _write(tmp_path, content)
    problems = _problems(path)
    assert _has(problems, line, field, words), problems


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_cli_exit_2(tmp_path, case):
    content, line, field, words = CASES[case]
    path = _write(tmp_path, content)
    r = CliRunner().invoke(cli, ["scenarios", "validate", str(path)])
    assert r.exit_code == 2, (r.output, r.exception)
    assert "Traceback" not in r.output
    assert f"error: {path}:{line}: {field}: " in r.output
    assert all(x.startswith("error: ") for x in r.output.splitlines()), r.output


def test_placeholder_problem_reported_for_every_template_that_uses_it(tmp_path):
    problems = _problems(_write(tmp_path, _sub("  - {low: 5, high: 30}", "  - {low: 5}")))
    assert _has(problems, 5, "prompt", "${high}")
    assert _has(problems, 15, "payoff.violating_undetected", "${high}")
    assert all("low" not in m for _, _, m in problems)


def test_yaml_tag_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f"!!python/object/apply:os.system ['touch {marker}']\n")
    problems = _problems(path)
    assert problems[0][:2] == (1, "(top level)") and "tag" in problems[0][2]
    nested = _write(tmp_path, _sub("A test job.", f"!!python/object/apply:os.system ['touch {marker}']"), "b.yaml")
    _problems(nested)
    keytag = _write(tmp_path, _sub("description: A test job.", "!!python/name:os.system : x"), "c.yaml")
    _problems(keytag)
    assert not marker.exists()


def test_alias_bomb_is_cheap(tmp_path):
    path = _write(tmp_path, BOMB)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ScenarioError):
            load_scenario_file(path)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 50 * 2**20


def test_anchor_without_alias_is_rejected(tmp_path):
    problems = _problems(_write(tmp_path, _sub("description: A test job.", "description: &d A test job.")))
    assert _has(problems, 3, "(yaml)", "anchors")


def test_cli_rejects_tag_and_bomb_subprocess(tmp_path):
    marker = tmp_path / "pwned"
    tag = _write(tmp_path, f"!!python/object/apply:os.system ['touch {marker}']\n", "tag.yaml")
    bomb = _write(tmp_path, BOMB, "bomb.yaml")
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "cli.py", "scenarios", "validate", str(tag), str(bomb)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.perf_counter() - t0 < 30
    assert r.returncode == 2
    assert "Traceback" not in r.stdout + r.stderr
    assert f"error: {tag}:1: (top level): YAML tag" in r.stderr
    assert f"error: {bomb}:1: (yaml): anchors and aliases are not allowed" in r.stderr
    assert not marker.exists()


def test_cli_non_utf8_subprocess(tmp_path):
    path = _write(tmp_path, b"name: x\nkind: individual\n\xff\xfe junk\n")
    r = subprocess.run(
        [sys.executable, "cli.py", "scenarios", "validate", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stderr.strip() == f"error: {path}:3: (file): not valid UTF-8 (byte 0xff at offset 25)"


def test_missing_file_is_a_problem_not_a_crash(tmp_path):
    problems = _problems(tmp_path / "nope.yaml")
    assert problems[0][:2] == (1, "(file)")
    with pytest.raises(ScenarioError, match="no such file or folder"):
        load_scenarios([tmp_path / "nope"])


def test_missing_top_level_field_reported_at_line_1(tmp_path):
    problems = _problems(
        _write(tmp_path, _sub("prompt: Following the rule pays $$${low}; breaking it pays $$${high}.\n", ""))
    )
    assert _has(problems, 1, "prompt", "required"), problems


def test_bool_payoff_is_one_problem_on_its_field(tmp_path):
    problems = _problems(_write(tmp_path, _sub("invalid: 0", "invalid: true")))
    assert [(line, field) for line, field, _ in problems] == [(17, "payoff.invalid")], problems


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_literal_payoff_rejected(tmp_path, value):
    problems = _problems(_write(tmp_path, _sub("violating_detected: 0", f"violating_detected: {value}")))
    assert _has(problems, 16, "payoff.violating_detected", "finite"), problems


# ---------------------------------------------------------------- folders and names


def test_folder_with_two_bad_files_reports_both(tmp_path):
    a = _write(tmp_path, _sub("rounds: 6", "rounds: 0"), "a.yaml")
    sub = tmp_path / "deeper"
    sub.mkdir()
    b = _write(sub, _sub("kind: individual", "kind: solo"), "b.yml")
    _write(tmp_path, COLLECTIVE, "good.yaml")
    (tmp_path / "notes.txt").write_text("not a scenario: {{{")
    with pytest.raises(ScenarioError) as info:
        load_scenarios([tmp_path])
    lines = str(info.value).splitlines()
    assert f"{a}:22: defaults.rounds: Input should be greater than 0" in lines
    assert any(x.startswith(f"{b}:2: kind: unknown kind") for x in lines)
    assert len(lines) == 2
    r = CliRunner().invoke(cli, ["scenarios", "validate", str(tmp_path)])
    assert r.exit_code == 2 and str(a) in r.output and str(b) in r.output and "Traceback" not in r.output


def test_duplicate_names_across_files(tmp_path):
    first = _write(tmp_path, BASE, "a.yaml")
    second = _write(tmp_path, BASE, "b.yaml")
    with pytest.raises(ScenarioError) as info:
        load_scenarios([tmp_path])
    (p,) = info.value.problems
    assert (p.path, p.line, p.field) == (str(second), 1, "name")
    assert "'test-job'" in p.message and str(first) in p.message


def test_duplicate_name_reported_on_its_line(tmp_path):
    moved = BASE.replace("name: test-job\n", "").replace(
        "description: A test job.\n", "description: A test job.\nname: test-job\n"
    )
    _write(tmp_path, BASE, "a.yaml")
    second = _write(tmp_path, moved, "b.yaml")
    assert load_scenario_file(second).name == "test-job"
    with pytest.raises(ScenarioError) as info:
        load_scenarios([tmp_path])
    (p,) = info.value.problems
    assert (p.path, p.line, p.field) == (str(second), 3, "name")


def test_resolve_errors():
    with pytest.raises(ScenarioError, match="no such file, folder or built-in scenario name"):
        resolve("no-such-scenario", kind="individual")
    with pytest.raises(ScenarioError, match="no collective scenarios"):
        resolve("baker", kind="collective")


# ---------------------------------------------------------------- templating


class _NoFormat:
    """A value that refuses the format protocol: only ``str()`` works."""

    def __str__(self) -> str:
        return "plain"

    def __format__(self, spec: str) -> str:
        raise AssertionError("fill used format()")


def test_fill_uses_template_semantics_not_format():
    assert fill("$$5 and $${x} and ${x}", {"x": 7}) == "$5 and ${x} and 7"
    assert fill("$x$$", {"x": 1.5}) == "1.5$"
    assert fill("{0.__class__} {x} {x.__class__} ${x}", {"x": 3}) == "{0.__class__} {x} {x.__class__} 3"
    assert fill("${v}", {"v": _NoFormat()}) == "plain"
    assert fill("{v} ${v}", {"v": "${w} {0}"}) == "{v} ${w} {0}"  # values are not expanded again
    assert fill("${a}", {"a": 45.0}) == "45"
    with pytest.raises(KeyError):
        fill("${missing}", {})
    with pytest.raises(ValueError):
        fill("${x.__class__}", {"x": 1})


def test_format_string_attack_stays_inert_text(tmp_path):
    attack = "Ignore {0.__class__.__mro__} and {low.__init__.__globals__} and {high!r:>{low}}."
    path = _write(tmp_path, _sub("You work at a test bench.", f"'{attack}'"))
    items = individual_items(load_scenario_file(path))
    assert [it.system_prompt for it in items] == [attack, attack]
    assert "class" not in items[0].prompt
