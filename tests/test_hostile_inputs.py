"""Hostile and odd inputs at the entry points: each is refused with one line naming the file or field, exit 2, in
about a second, with nothing half-written."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

BASE = """\
name: {name}
kind: individual
description: d
system_prompt: s
prompt: comply pays $$${{low}}, violate pays $$${{high}}
options: {{compliant: A, violating: B}}
supervision: {{supervised: s, unsupervised: u, neutral: n}}
payoff: {{compliant: "{low}", violating_undetected: "${{high}}"}}
variants:
  - {{low: 1, high: 2}}
"""


def cli(*args: str):
    from cli import cli as group

    return CliRunner().invoke(group, list(args))


def refused(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert lines and all(x.startswith("error: ") for x in lines) and "Traceback" not in result.output
    assert needle in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[" * 100_000, "nested deeper than 32 levels"),
        ("a:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(40)), "nested deeper than 32 levels"),
        ("x: " + "y" * 1_100_000, "larger than 1,000,000 bytes"),
        (BASE.format(name='"ok\\n"', low="${low}"), "name: 'ok\\n' must match"),
        (BASE.format(name="ok", low="1e400"), "is not a finite number"),
        (BASE.format(name="ok", low="1e13"), "at most 1e+12"),
        (BASE.format(name="ok", low="${__class__}"), "placeholder ${__class__} has no value"),
        (BASE.format(name="ok", low="{0.__class__}"), "is not a number"),
        (
            BASE.format(name="ok", low="${low}").replace(
                "  - {low: 1, high: 2}\n", "".join(f"  - {{low: 1, high: {i}}}\n" for i in range(10_001))
            ),
            "at most 10000",
        ),
    ],
)
def test_scenario_files(tmp_path, text, needle):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    start = time.perf_counter()
    refused(cli("scenarios", "validate", str(path)), needle)
    assert time.perf_counter() - start < 10


def test_not_a_regular_file():
    refused(cli("scenarios", "validate", "/dev/zero"), "not a regular file")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("not json", "cannot read as JSON"),
        ('{"a": 1}', "not an ATP study file"),
        ('[{"environment": "x", "template": {"supervised_choice": "A", "better_choice": "B"}}]', "lacks the key"),
    ],
)
def test_import_atp_errors_write_nothing(tmp_path, content, needle):
    src = tmp_path / "study.json"
    src.write_text(content)
    refused(cli("scenarios", "import-atp", str(src), "--out", str(tmp_path / "out")), needle)
    assert not (tmp_path / "out").exists()


def test_import_atp_never_overwrites(tmp_path):
    from pathlib import Path

    ref = Path(__file__).resolve().parents[2] / "shared" / "atp-reference-data" / "sa_llm_templates.json"
    if not ref.exists():
        pytest.skip("the study's reference data is not here")
    assert cli("scenarios", "import-atp", str(ref), "--out", str(tmp_path / "o")).exit_code == 0
    refused(cli("scenarios", "import-atp", str(ref), "--out", str(tmp_path / "o")), "already exists")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        (["--thresholds", "nan"], "threshold nan must be a count"),
        (["--rewards", "nan/1/1"], "must be finite, not negative and at most 1e+12"),
        (["--rewards", "1e309/1/1"], "must be finite"),
        (["--agents", "1000000000"], "agents: Input should be less than or equal to 10000000"),
        (["--rounds", "1000000000"], "rounds: Input should be less than or equal to 10000"),
        (["--model", ""], "model: String should have at least 1 character"),
        (["--thresholds", "2,2"], "listed twice"),
    ],
)
def test_numeric_options(tmp_path, args, needle):
    refused(
        cli("diffuse", "--model", "sim", *args, "--out", str(tmp_path / "r"))
        if "--model" not in args
        else cli("diffuse", *args, "--out", str(tmp_path / "r")),
        needle,
    )
    assert not (tmp_path / "r").exists()


def test_an_unknown_environment_option_is_warned(tmp_path):
    result = CliRunner().invoke(
        __import__("cli").cli,
        ["diffuse", "--model", "sim", "--agents", "4", "--k", "2", "--rounds", "1", "--out", str(tmp_path / "r")],
        env={"ATP_DIFFUSE_SCENARIO": "x"},
    )
    assert result.exit_code == 0 and "warning: ATP_DIFFUSE_SCENARIO is not an option of `diffuse`" in result.stderr


def test_a_probe_target_that_exits(tmp_path, monkeypatch):
    (tmp_path / "exits_mod.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    refused(cli("probe", "exits_mod:graph", "--scenario", "baker"), "called sys.exit(3)")


def test_directed_multigraph_files_are_converted_with_a_note(tmp_path):
    import networkx as nx

    g = nx.MultiDiGraph()
    g.add_edges_from([(0, 1), (1, 0), (1, 2), (2, 3), (3, 0), (2, 2)])
    path = tmp_path / "g.graphml"
    nx.write_graphml(g, path)
    result = cli("diffuse", "--model", "sim", "--graph", str(path), "--rounds", "1", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "note: " in result.stderr and "directed graph read as undirected" in result.stderr
    assert "1 self-loop(s) removed" in result.stderr
    import json

    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert len(summary["graph_notes"]) >= 2


def test_a_binary_graph_file_is_not_echoed(tmp_path):
    path = tmp_path / "g.gml"
    path.write_bytes(b"graph [ node [ id \x00\x01\xff\xfe ] ]")
    result = cli("diffuse", "--model", "sim", "--graph", str(path), "--out", str(tmp_path / "r"))
    refused(result, "cannot read graph")
    assert "\x00" not in result.stderr and "\x01" not in result.stderr


@pytest.mark.parametrize(
    ("manifest", "needle"),
    [
        ("not json", "not a valid variant manifest"),
        ('{"spec": "tiny:/tmp/elsewhere"}', "spec must be 'hf:<this folder>'"),
        ('{"spec": "hf:tiny:/tmp/x+adapter:/tmp/y"}', "the base model must be a model folder or hub id"),
        ("[1, 2]", "spec must be"),
    ],
)
def test_a_tampered_variant_manifest_is_refused(tmp_path, manifest, needle):
    from defenses.variant import DefenseError, read_variant

    (tmp_path / "variant.json").write_text(manifest)
    with pytest.raises(DefenseError, match=needle):
        read_variant(tmp_path)


def test_a_variant_always_loads_from_its_own_folder(tmp_path):
    from defenses.variant import read_variant

    (tmp_path / "variant.json").write_text('{"spec": "hf:Qwen/Qwen3-8B+adapter:/somewhere/else"}')
    assert read_variant(tmp_path)["spec"] == f"hf:Qwen/Qwen3-8B+adapter:{tmp_path.resolve()}"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not json\n", "not valid JSON"),
        (b"5\n", "expected a JSON object per line, got int"),
        (b"\x90\x00\xff binary", "not a text file"),
        (b"", "no preference pairs"),
    ],
)
def test_bad_preference_data(tmp_path, content, needle):
    data = tmp_path / "d.jsonl"
    data.write_bytes(content)
    refused(cli("defend", "dpo", "--model", "smollm2", "--data", str(data), "--out", str(tmp_path / "v")), needle)
    assert not (tmp_path / "v").exists()


def test_the_tiny_model_is_never_built_among_the_users_files(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["explore", "--model", f"tiny:{mine}", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "not empty" in r.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_paper_grid_does_not_silently_override_options(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    r = CliRunner().invoke(cli, ["diffuse", "--paper-grid", "--agents", "5", "--model", "sim"])
    assert r.exit_code == 2 and "--paper-grid sets --agents" in r.stderr


def test_a_misspelt_command_in_an_environment_variable_is_warned_about(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    r = CliRunner().invoke(cli, ["scenarios", "list"], env={"ATP_DIFUSE_SCENARIOS": "x"})
    assert "ATP_DIFUSE_SCENARIOS names no command" in r.stderr


def test_no_nan_in_a_summary_when_a_rate_has_no_measurement(tmp_path):
    """One round: re-adoption after a successful round has n = 0; JSON gets null, not NaN (which is not JSON)."""
    import json

    from atp_graph.config import DiffuseConfig
    from atp_graph.testbeds import run_diffuse

    run_diffuse(DiffuseConfig(model="sim", rounds=1, agents=12), out=tmp_path / "run", progress=False)
    text = (tmp_path / "run" / "summary.json").read_text()
    assert "NaN" not in text and json.loads(text)["readoption_after_success"]["rate"] is None


# --- issue 17, round 5: huge integers, empty names, nesting, escapes --------------------------------------------------

COLLECTIVE = """\
name: fund
kind: collective
system_prompt: one of ${n}
prompt: invest? ${threshold} needed
options: {collective: Invest, independent: Keep}
game: {threshold: THRESHOLD, success: SUCCESS}
"""
BIG = "1" + "0" * 399


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (BASE.format(name="ok", low="${low}").replace('"${high}"', BIG), "s.yaml:8: payoff.violating_undetected"),
        (BASE.format(name="ok", low="${low}").replace('"${high}"', "1" + "0" * 4999), "payoff.violating_undetected"),
        (COLLECTIVE.replace("THRESHOLD", BIG).replace("SUCCESS", "1.2"), "game.threshold: a threshold count"),
        (COLLECTIVE.replace("THRESHOLD", "4").replace("SUCCESS", BIG), "game.success: an integer of about 400"),
    ],
)
def test_huge_integers_are_refused_naming_the_field(tmp_path, text, needle):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    refused(cli("scenarios", "validate", str(path)), needle)
    out = tmp_path / "run"
    command = "diffuse" if "collective" in text else "explore"
    refused(cli(command, "--model", "sim", "--scenarios", str(path), "--rounds", "1", "--out", str(out)), needle)
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [["scenarios", "show", ""], ["scenarios", "validate", ""], ["explore", "--model", "sim", "--scenarios", ""]],
)
def test_an_empty_scenario_name_is_refused(tmp_path, monkeypatch, args):
    (tmp_path / "junk.yaml").write_text("a: [")  # would be read if '' meant the current folder
    monkeypatch.chdir(tmp_path)
    refused(cli(*args, *(["--out", str(tmp_path / "r")] if args[0] == "explore" else [])), "an empty name")


def test_brackets_inside_a_quoted_string_are_text_not_nesting(tmp_path):
    path = tmp_path / "s.yaml"
    quoted = 'prompt: "' + "[" * 40 + ' comply"\n#'
    path.write_text(BASE.format(name="ok", low="${low}").replace("prompt: comply", quoted))
    r = cli("scenarios", "validate", str(path))
    assert r.exit_code == 0 and "ok: 1 scenario(s)" in r.output, r.output
    deep = tmp_path / "deep.yaml"
    deep.write_text("a:\n" + "".join(f"{' ' * (i + 1)}- \n" for i in range(40)))
    refused(cli("scenarios", "validate", str(deep)), "nested deeper than 32 levels")


def test_scenarios_list_and_show_escape_terminal_sequences(tmp_path):
    folder = tmp_path / "esc"
    folder.mkdir()
    text = BASE.format(name="esc", low="${low}").replace("description: d", 'description: "\\e]0;owned\\a\\e[2J"')
    (folder / "s.yaml").write_text(text.replace("system_prompt: s", 'system_prompt: "\\e[31mred \\u05e9"'))
    listed = cli("scenarios", "list", str(folder))
    shown = cli("scenarios", "show", str(folder / "s.yaml"))
    for r in (listed, shown):
        assert r.exit_code == 0 and "\x1b" not in r.output and "\x07" not in r.output, r.output
    assert "\\x1b]0;owned\\x07" in listed.output
    assert "[system] \\x1b[31mred \u05e9" in shown.output  # readable letters stay; escapes do not reach the terminal


def test_validating_an_empty_folder_is_refused(tmp_path):
    refused(cli("scenarios", "validate", str(tmp_path)), "no scenario files")


@pytest.mark.parametrize(
    ("args", "env", "shown"),
    [
        (["scenarios", "validate", "a\x00b.yaml"], {}, "a\\x00b.yaml"),
        (["scenarios", "show", "a\x00b"], {}, "a\\x00b"),
        (["explore", "--model", "sim", "--scenarios", "baker\x00", "--out", "OUT"], {}, "baker\\x00"),
        (["explore", "--model", "\x00", "--out", "OUT"], {}, "'\\x00'"),
        (["explore", "--out", "OUT"], {"ATP_EXPLORE_MODEL": "sim\x01"}, "'sim\\x01'"),
    ],
)
def test_control_bytes_in_names_are_escaped_in_errors(tmp_path, args, env, shown):
    from cli import cli as group

    args = [str(tmp_path / "r") if a == "OUT" else a for a in args]
    r = CliRunner().invoke(group, args, env=env)
    errors = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert r.exit_code == 2 and len(errors) == 1 and shown in errors[0], r.stderr
    assert not any(c in r.stderr for c in "\x00\x01"), r.stderr
