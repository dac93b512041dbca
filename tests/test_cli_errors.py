"""User mistakes on the command line end with exit status 2 and a one-line ``error:``, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner, Result

from atp_graph.events import SCHEMA_VERSION
from cli import cli


def _run(*args: str) -> Result:
    runner = CliRunner(env={k: None for k in os.environ if k.startswith("ATP_")})
    return runner.invoke(cli, list(args))


def _user_error(r: Result, *words: str) -> list[str]:
    """Exit 2, no traceback, every ``error:`` line on one line; returns the error lines."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    errors = [x for x in r.output.splitlines() if x.lower().startswith("error")]
    assert errors, r.output
    for w in words:
        assert w in r.output, (w, r.output)
    return errors


def _diffuse(tmp_path: Path, *args: str) -> Result:
    return _run("diffuse", "--model", "sim", "--rounds", "1", "--out", str(tmp_path / "run"), *args)


def test_unknown_topology_is_a_click_choice_error(tmp_path):
    r = _diffuse(tmp_path, "--topology", "hypercube")
    _user_error(r, "Invalid value for '--topology'", "hypercube")
    assert not (tmp_path / "run").exists()


def test_k_too_large(tmp_path):
    r = _diffuse(tmp_path, "--k", "30", "--agents", "10")
    assert _user_error(r, "--k") == ["error: --k must be at least 2 and below --agents (10), got 30"]
    assert not (tmp_path / "run").exists()


def test_p_out_of_range(tmp_path):
    r = _diffuse(tmp_path, "--p", "1.5")
    assert _user_error(r, "--p") == ["error: --p must be in [0, 1], got 1.5"]
    assert not (tmp_path / "run").exists()


def test_too_few_agents(tmp_path):
    _user_error(_diffuse(tmp_path, "--agents", "1"), "agents")


def test_random_topology_disconnected(tmp_path):
    r = _diffuse(tmp_path, "--topology", "random", "--agents", "24", "--p", "0.05")
    (line,) = _user_error(r, "disconnected")
    assert line.startswith("error: random graph: graph is disconnected")


def test_missing_graph_file(tmp_path):
    missing = tmp_path / "missing.txt"
    r = _diffuse(tmp_path, "--graph", str(missing))
    assert _user_error(r) == [f"error: {missing}: cannot read: no such file"]
    assert not (tmp_path / "run").exists()


def test_graph_is_a_directory(tmp_path):
    _user_error(_diffuse(tmp_path, "--graph", str(tmp_path)), "--graph")


def test_disconnected_graph_file(tmp_path):
    path = tmp_path / "two-parts.txt"
    nx.write_edgelist(nx.Graph([(0, 1), (1, 2), (3, 4)]), path, data=False)
    r = _diffuse(tmp_path, "--graph", str(path))
    (line,) = _user_error(r, str(path), "disconnected")
    assert line == f"error: {path}: graph is disconnected (2 components); diffusion needs one component"
    assert not (tmp_path / "run").exists()


def test_garbage_graph_file(tmp_path):
    path = tmp_path / "g.graphml"
    path.write_text("<graphml><<<")
    (line,) = _user_error(_diffuse(tmp_path, "--graph", str(path)), str(path))
    assert "cannot read graph" in line


def test_bad_thresholds_and_rewards(tmp_path):
    _user_error(_diffuse(tmp_path, "--thresholds", "0,2"), "threshold")
    _user_error(_diffuse(tmp_path, "--thresholds", "two"), "--thresholds")
    _user_error(_diffuse(tmp_path, "--rewards", "1.2/1"), "--rewards")
    assert not (tmp_path / "run").exists()


def test_too_many_seed_deviants(tmp_path):
    r = _diffuse(tmp_path, "--agents", "8", "--seed-deviants", "8")
    _user_error(r, "--seed-deviants")


def test_explore_missing_scenarios(tmp_path):
    r = _run("explore", "--model", "sim", "--scenarios", "/nonexistent", "--out", str(tmp_path / "run"))
    (line,) = _user_error(r, "/nonexistent")
    assert line.startswith("error: /nonexistent")
    assert not (tmp_path / "run").exists()


def test_explore_bad_scenario_file_reports_path_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: individual\nprompt: [unclosed\n")
    r = _run("explore", "--model", "sim", "--scenarios", str(bad), "--out", str(tmp_path / "run"))
    (line,) = _user_error(r)
    assert line.startswith(f"error: {bad}:") and "(yaml)" in line


def test_explore_unknown_provider(tmp_path):
    try:
        from atp_graph.policies import load_policy  # noqa: F401
    except ImportError:
        pytest.skip("atp_graph.policies.load_policy is not importable yet")
    r = _run("explore", "--model", "nosuchprovider:x", "--rounds", "1", "--out", str(tmp_path / "run"))
    (line,) = _user_error(r, "nosuchprovider")
    assert line.startswith("error: ")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["explore", "diffuse"])
def test_resume_missing_run_dir(tmp_path, command):
    missing = tmp_path / "no-such-run"
    r = _run(command, "--model", "sim", "--resume", str(missing))
    (line,) = _user_error(r, str(missing))
    assert "not a run directory" in line
    assert not missing.exists()


def test_resume_corrupt_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    (line,) = _user_error(_run("explore", "--resume", str(run)), "config.json")
    assert line == f"error: {run / 'config.json'}:1: not valid JSON"


@pytest.mark.parametrize(("command", "other"), [("explore", "diffuse"), ("diffuse", "explore")])
def test_resume_run_of_the_other_command(tmp_path, command, other):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({other: {"model": "sim"}}))
    (run / "events.jsonl").write_text("")
    _user_error(_run(command, "--resume", str(run)), str(run))


def test_resume_corrupt_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = {"explore": {"model": "sim"}, "resolved": {"rounds": 3}, "schema_version": SCHEMA_VERSION}
    (run / "config.json").write_text(json.dumps(config))
    (run / "events.jsonl").write_text("")
    (run / "state.json").write_text('{"round": 1, "sta')
    _user_error(_run("explore", "--resume", str(run)), "state.json")


def test_resume_refuses_a_run_of_another_version(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"explore": {"model": "sim"}}))
    (run / "events.jsonl").write_text("")
    _user_error(_run("explore", "--resume", str(run)), "another version", "re-run it")


def test_repeated_sweep_value_is_refused(tmp_path):
    """Two cells under one id would share one capital array and one memory thread per agent: refuse, don't merge."""
    r = _diffuse(tmp_path, "--thresholds", "2,2")
    assert _user_error(r, "listed twice", "t=2") and not (tmp_path / "run").exists()
