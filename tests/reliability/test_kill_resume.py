"""SIGKILL at every phase of a run, then ``--resume``: the folder ends byte-identical to a straight run.

The kill is deterministic (``ATP_FAULT=<phase>[@<round>]``, :mod:`atp_graph.run.faults`): the process dies with
SIGKILL at that point, so no ``finally`` block and no buffered write helps it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from atp_graph.run.faults import PHASES

ROOT = Path(__file__).resolve().parents[2]
COMPARED = ("events.jsonl", "summary.json", "table.md", "state.json")
PLOTS = {"explore": ["violation_rate.png"], "diffuse": ["adoption.png", "graph_rounds.png"]}
ARGS = {
    "explore": ["explore", "--model", "sim", "--rounds", "4", "--scenarios", "baker"],
    "diffuse": ["diffuse", "--model", "sim", "--rounds", "4", "--agents", "12", "--thresholds", "3,6"],
}


def atp(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATP_")}
    if fault:
        env["ATP_FAULT"] = fault
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for command, args in ARGS.items():
        folder = tmp_path_factory.mktemp("straight") / command
        assert atp(*args, "--out", str(folder)).returncode == 0
        out[command] = folder
    return out


def same_folder(a: Path, b: Path, command: str) -> None:
    for name in COMPARED:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for name in PLOTS[command]:
        assert (b / name).stat().st_size > 0, name


@pytest.mark.parametrize("command", list(ARGS))
@pytest.mark.parametrize("phase", PHASES)
def test_killed_at_any_phase_resumes_to_the_same_folder(tmp_path, straight, command, phase):
    folder = tmp_path / "run"
    fault = f"{phase}@2" if phase in ("act", "events", "state") else phase
    killed = atp(*ARGS[command], "--out", str(folder), fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-500:]
    resumed = atp(command, "--resume", str(folder))
    assert resumed.returncode == 0, resumed.stderr[-500:]
    assert "Traceback" not in resumed.stderr
    same_folder(straight[command], folder, command)


def test_killed_twice_in_a_row(tmp_path, straight):
    folder = tmp_path / "run"
    assert atp(*ARGS["explore"], "--out", str(folder), fault="events@2").returncode == -signal.SIGKILL
    assert atp("explore", "--resume", str(folder), fault="act@3").returncode == -signal.SIGKILL
    assert atp("explore", "--resume", str(folder)).returncode == 0
    same_folder(straight["explore"], folder, "explore")


def test_the_llm_path_resumes_its_agent_memory_after_a_kill(tmp_path, tiny_model_dir):
    args = ["explore", "--model", f"hf:{tiny_model_dir}", "--decision", "score", "--rounds", "3", "--limit", "3"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert atp(*args, "--out", str(a)).returncode == 0
    assert atp(*args, "--out", str(b), fault="events@2").returncode == -signal.SIGKILL
    resumed = atp("explore", "--resume", str(b))
    assert resumed.returncode == 0, resumed.stderr[-500:]
    for name in ("events.jsonl", "summary.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_resume_answers_with_the_runs_own_budget(tmp_path, tiny_model_dir):
    """Generate mode: the answer budget is part of the experiment. A resume without --max-new-tokens uses the run's
    own (before, it fell back to the default budget and later rounds silently answered longer); another is refused."""
    args = ["explore", "--model", f"hf:{tiny_model_dir}", "--decision", "generate", "--rounds", "3", "--limit", "3"]
    args += ["--max-new-tokens", "12"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert atp(*args, "--out", str(a)).returncode == 0
    assert atp(*args, "--out", str(b), fault="state@1").returncode == -signal.SIGKILL
    other = atp("explore", "--resume", str(b), "--max-new-tokens", "13")
    assert other.returncode == 2 and "max_new_tokens=12, this one with 13" in other.stderr
    resumed = atp("explore", "--resume", str(b))
    assert resumed.returncode == 0, resumed.stderr[-500:]
    for name in ("events.jsonl", "summary.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
