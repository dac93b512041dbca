"""Hostile files and sizes (bench/hostile_inputs.py audit): each input ends in one ``error:`` line, exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from atp_graph.cli.main import cli as group


def cli(*args: str) -> Result:
    return CliRunner().invoke(group, list(args))


def refused(r: Result, *needles: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.output
    assert "Traceback" not in r.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# 1. capital
@pytest.mark.parametrize("rewards", ["1e300/1/1", "1e13/1/1"])
def test_cli_rewards_capped_like_payoffs(tmp_path: Path, rewards: str) -> None:
    refused(cli("diffuse", "--model", "sim", "--rewards", rewards, "--out", str(tmp_path / "o")), "rewards", "1e+12")


def test_capital_that_would_overflow_is_refused_up_front(tmp_path: Path) -> None:
    r = cli("diffuse", "--model", "sim", "--rewards", "1e12/1/1", "--rounds", "30", "--out", str(tmp_path / "o"))
    refused(r, "capital could exceed", "30 round")
    assert not (tmp_path / "o" / "events.jsonl").exists()


# 2. non-regular files
@pytest.mark.parametrize(
    "args",
    [
        ["scenarios", "import-atp", "/dev/zero", "--out", "OUT"],
        ["sweep", "plan", "/dev/zero"],
        ["diffuse", "--model", "sim", "--graph", "/dev/urandom", "--out", "OUT"],
        ["diffuse", "--model", "sim", "--graph", "FIFO", "--out", "OUT"],
    ],
)
def test_non_regular_files_refused(tmp_path: Path, args: list[str]) -> None:
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    args = [str(fifo) if a == "FIFO" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    refused(cli(*args), "not a regular file")


# 3. sizes
def test_scenario_default_rounds_capped(tmp_path: Path) -> None:
    import yaml

    from atp_graph.scenarios.loader import ScenarioError, load_scenario_file

    src = next(p for p in sorted(Path("scenarios").rglob("*.yaml")) if "kind: collective" in p.read_text())
    doc = yaml.safe_load(src.read_text())
    doc["defaults"] = {**(doc.get("defaults") or {}), "rounds": 1_000_000_000}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(ScenarioError, match="defaults.rounds"):
        load_scenario_file(f)


def test_sweep_expansion_capped(tmp_path: Path) -> None:
    f = tmp_path / "sweep.yaml"
    axis = "[" + ",".join(str(i) for i in range(1, 120)) + "]"
    f.write_text(f"command: diffuse\nbase: {{model: sim}}\ngrid:\n  seed: {axis}\n  rounds: {axis}\n")
    refused(cli("sweep", "plan", str(f)), "14,161 runs", "10,000")


@pytest.mark.parametrize(
    "args",
    [
        ["--agents", "10000000"],
        ["--topology", "complete", "--agents", "50000"],
        ["--topology", "scale-free", "--agents", "3000000"],
    ],
)
def test_graph_edge_count_capped(tmp_path: Path, args: list[str]) -> None:
    refused(cli("diffuse", "--model", "sim", *args, "--out", str(tmp_path / "o")), "edges", "2,000,000")


# 5. wrong types
@pytest.mark.parametrize("base", ["[a]", "{}"])
def test_protocol_base_not_a_name(tmp_path: Path, base: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(f"base: {base}\n")
    refused(cli("diffuse", "--model", "sim", "--protocol", str(f), "--out", str(tmp_path / "o")), "base")


def test_sweep_command_list(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("command: [explore]\n")
    refused(cli("sweep", "plan", str(f)), "command")


# 7. edge lists
def test_edge_list_repeated_edge_noted(tmp_path: Path) -> None:
    from atp_graph.games.topology import load_graph

    f = tmp_path / "g.txt"
    f.write_text("a b\nb c\na b\n")
    g = load_graph(f)
    assert g.number_of_edges() == 2
    assert any("parallel" in n for n in g.graph["notes"])


def test_edge_list_bad_line_truncated(tmp_path: Path) -> None:
    f = tmp_path / "g.txt"
    f.write_text("a b\n" + "x " * 100_000 + "\x1b\n")
    line = refused(cli("diffuse", "--model", "sim", "--graph", str(f), "--out", str(tmp_path / "o")), ":2:")
    assert len(line) < 400


@pytest.mark.parametrize("suffix", [".txt", ".gml"])
def test_graph_files_are_capped_like_generated_graphs(tmp_path: Path, monkeypatch, suffix: str) -> None:
    import networkx as nx

    from atp_graph.games import topology

    monkeypatch.setattr(topology, "MAX_EDGES", 5)
    f = tmp_path / f"g{suffix}"
    if suffix == ".gml":
        nx.write_gml(nx.path_graph(7), f)
    else:
        f.write_text("# a path\n" + "".join(f"n{i} n{i + 1}\n" for i in range(6)))
    refused(cli("diffuse", "--model", "sim", "--graph", str(f), "--out", str(tmp_path / "o")), "more than 5 edges")
    assert not (tmp_path / "o").exists()


def test_edge_list_numbers_nodes_in_order_of_appearance(tmp_path: Path) -> None:
    from atp_graph.games.topology import load_graph

    f = tmp_path / "g.txt"
    f.write_text("b a  # first\n\na c\nc c\nc, b, 2.5\n")
    g = load_graph(f)
    assert [g.nodes[i]["label"] for i in g] == ["b", "a", "c"]
    assert sorted(g.edges()) == [(0, 1), (0, 2), (1, 2)]
    assert any("1 self-loop(s) removed" in n for n in g.graph["notes"])
