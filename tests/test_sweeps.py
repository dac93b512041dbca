"""Sweeps: plan expansion, the local and Ray executors, a driver killed mid-sweep, failed runs, malformed specs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from atp_graph.events import read_events
from atp_graph.scenarios import BUILTIN_DIR
from atp_graph.sweeps import SweepError, expand, load_spec, read_manifest, run_sweep, spec_hash, write_report
from atp_graph.sweeps.manifest import LOCK, exclusive
from atp_graph.testbeds import ExploreConfig, render_run, run_explore
from cli import cli

ROOT = Path(__file__).resolve().parents[1]

EXPLORE = """\
command: explore
base: {model: sim, limit: 6, rounds: 3}
runs:
  - {supervision: all_unsupervised}
  - {supervision: alternating}
grid:
  seed: [0, 1]
"""


def _spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))
    return folder / name


def _cli(*args: str) -> Result:
    runner = CliRunner(env={k: None for k in os.environ if k.startswith("ATP_")})
    return runner.invoke(cli, list(args))


@pytest.fixture(scope="module")
def explore_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _spec(tmp_path_factory.mktemp("spec"), EXPLORE)


@pytest.fixture(scope="module")
def local_sweep(explore_spec: Path, tmp_path_factory: pytest.TempPathFactory):
    """The explore spec, run by 2 local worker processes."""
    return run_sweep(load_spec(explore_spec), tmp_path_factory.mktemp("local") / "sweep", jobs=2, progress=False)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------- plan


def test_plan_crosses_the_list_with_the_grid_and_names_runs_deterministically(tmp_path: Path):
    spec = _spec(
        tmp_path,
        """\
        command: diffuse
        base: {model: sim, agents: 10, rounds: 2}
        runs:
          - {topology: ring}
          - {topology: small-world, p: 0.2, resources: {cpus: 2, memory: 1GiB}}
        grid:
          seed: [0, 1]
          thresholds: [[2], [0.5]]
        resources: {cpus: 1}
        """,
    )
    runs = expand(load_spec(spec))
    assert [r.name for r in runs] == [
        "000_topology=ring_p=0.1_seed=0_thresholds=2",
        "001_topology=ring_p=0.1_seed=0_thresholds=0.5",
        "002_topology=ring_p=0.1_seed=1_thresholds=2",
        "003_topology=ring_p=0.1_seed=1_thresholds=0.5",
        "004_topology=small-world_p=0.2_seed=0_thresholds=2",
        "005_topology=small-world_p=0.2_seed=0_thresholds=0.5",
        "006_topology=small-world_p=0.2_seed=1_thresholds=2",
        "007_topology=small-world_p=0.2_seed=1_thresholds=0.5",
    ]
    assert runs[5].config["topology"] == "small-world" and runs[5].config["thresholds"] == [0.5]
    assert runs[5].config["agents"] == 10 and runs[5].config["decision"] == "generate"  # auto, resolved as the CLI does
    assert runs[0].resources.cpus == 1 and runs[4].resources.cpus == 2 and runs[4].resources.memory == 2**30
    again = load_spec(spec)
    assert expand(again) == runs and spec_hash(again, expand(again)) == spec_hash(load_spec(spec), runs)
    other = _spec(tmp_path, spec.read_text().replace("agents: 10", "agents: 12"), "other.yaml")
    assert spec_hash(load_spec(other), expand(load_spec(other))) != spec_hash(again, runs)
    r = _cli("sweep", "plan", str(spec))
    assert r.exit_code == 0, r.output
    assert "diffuse sweep: 8 run(s); axes: topology, p, seed, thresholds" in r.output
    assert [line.split()[0] for line in r.output.splitlines()[1:]] == [x.name for x in runs]


BAD_SPECS = [
    ("command: diffuse\nbase: {model: sim}\ncolour: red\n", 3, "colour: unknown key"),
    ("command: diffuse\ngrid:\n  seed: [0, 1]\n  topolgy: [ring]\n", 4, "grid.topolgy: not a diffuse config field"),
    ("command: explore\nbase:\n  model: sim\n  rounds: 0\n", 4, "base.rounds: Input should be greater than or equal"),
    ("command: diffuse\ngrid:\n  topology:\n    - ring\n    - hypercube\n", 5, "grid.topology[1]: Input should be"),
    ("command: explore\nruns:\n  - {model: sim}\n  - {model: sim, supervision: often}\n", 4, "runs[1].supervision"),
    ("command: probe\n", 1, "command: probe targets your own agent"),
    ("command: compare\n", 1, "command: compare is a sweep over models"),
    ("command: fly\n", 1, "command: 'fly' is not a sweepable command"),
    ("command: diffuse\nbase: {model: sim\n", 3, "(yaml): syntax error"),
    ("command: diffuse\ncommand: explore\n", 2, "command: duplicate key"),
    ("command: diffuse\ngrid:\n  seed: []\n", 3, "grid.seed: an axis needs at least one value"),
    ("command: diffuse\ngrid:\n  seed: [0, 0]\n", 3, "grid.seed[1]: value 0 is listed twice"),
    ("command: diffuse\ngrid: {seed: [0, 1]}\nruns:\n  - {seed: 3}\n", 4, "runs[0].seed: seed is also a grid axis"),
    ("command: diffuse\nruns:\n  - {seed: 1}\n  - {seed: 1}\n", 4, "runs[1]: run 1 repeats run 0"),
    ("command: diffuse\nresources: {memory: lots}\n", 2, "resources.memory: 'lots': expected bytes"),
    ("command: diffuse\nresources: {memory: 0GB}\n", 2, "resources.memory: '0GB': must be at least 1 byte"),
    ("command: diffuse\nresources: {memory: " + "9" * 400 + "GB}\n", 2, "resources.memory: '999"),
    ("command: diffuse\nresources: {cpus: .inf}\n", 2, "resources.cpus: Input should be a finite number"),
    ("command: diffuse\nresources: {gpus: .inf}\n", 2, "resources.gpus: Input should be a finite number"),
    ("command: explore\npaper_grid: true\n", 2, "paper_grid: only diffuse has the paper grid"),
    ("command: explore\nbase: !!python/object:os.system {}\n", 2, "base: YAML tag"),
    ("- just\n- a list\n", 1, "(top level): must be a mapping"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_SPECS)
def test_malformed_specs_are_one_line_errors_with_their_line(tmp_path: Path, text: str, line: int, message: str):
    spec = _spec(tmp_path, text)
    r = _cli("sweep", "plan", str(spec))
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert "Traceback" not in r.output
    errors = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert errors and all(x.startswith(f"error: {spec}:") for x in errors), r.output
    assert f"error: {spec}:{line}: {message}" in r.output, r.output


def test_a_missing_spec_file_is_one_line(tmp_path: Path):
    r = _cli("sweep", "run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out"))
    assert r.exit_code == 2 and r.output.startswith(f"error: {tmp_path / 'nope.yaml'}:1: (file): cannot read")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["/dev/null", "UNDER_A_FILE", "READ_ONLY"])
def test_an_unusable_sweep_folder_is_one_line(tmp_path: Path, where: str):
    spec = _spec(tmp_path, EXPLORE)
    (tmp_path / "afile.txt").write_text("mine")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    immutable = os.geteuid() == 0  # root writes into a mode-555 folder, not into an immutable one
    if immutable and subprocess.run(["chattr", "+i", str(read_only)], capture_output=True).returncode != 0:
        pytest.skip("root, and chattr +i does not work here")
    out = {"UNDER_A_FILE": str(tmp_path / "afile.txt" / "run"), "READ_ONLY": str(read_only)}.get(where, where)
    try:
        r = _cli("sweep", "run", str(spec), "--jobs", "1", "--out", out)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(read_only)], check=True)
        read_only.chmod(0o755)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    errors = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {out}"), r.output
    assert (tmp_path / "afile.txt").read_text() == "mine" and not any(read_only.iterdir())


# ---------------------------------------------------------------- local executor and the report


def test_local_sweep_with_two_jobs_writes_ordinary_run_folders_and_one_report(local_sweep):
    folder = local_sweep.path
    manifest = read_manifest(folder)
    assert [r.status for r in manifest.runs] == ["done"] * 4 and manifest.executor == "local"
    assert all(r.attempts == 1 and r.seconds is not None and r.resumed_from == 0 for r in manifest.runs)
    assert manifest.versions["atp-graph"] and manifest.axes == ["supervision", "seed"]
    first = folder / "runs" / manifest.runs[0].name
    assert manifest.runs[0].name == "000_supervision=all_unsupervised_seed=0"
    summary = json.loads((first / "summary.json").read_text())
    assert render_run(first).summary == summary  # `atp report RUN_DIR` works on it
    assert run_explore(ExploreConfig(), resume=first, progress=False).summary == summary  # and --resume
    report = local_sweep.report.markdown
    assert report.startswith("# Sweep report: explore, 4 runs — SURROGATE (non-LLM) policy")
    assert "## Violation rate per round" in report and "## Violation rate by supervision" in report
    assert "| 003_supervision=alternating_seed=1 | " in report and "tipping round" in report
    assert "## Truncated rate per round" in report
    names = {p.name for p in local_sweep.report.files}
    assert {
        "report.md",
        "events.csv",
        "rates.csv",
        "rate_by_supervision.png",
        "heatmap_supervision_x_seed.png",
    } <= names
    events = sum(len(read_events(folder / "runs" / r.name / "events.jsonl")) for r in manifest.runs)
    import csv

    with open(folder / "events.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == events == 4 * 6 * 3
    assert {"run", "supervision", "seed", "round", "outcome", "policy"} <= set(rows[0])
    assert {r["supervision"] for r in rows} == {"all_unsupervised", "alternating"}
    if "events.parquet" in names:
        pd = pytest.importorskip("pandas")
        frame = pd.read_parquet(folder / "events.parquet")
        assert len(frame) == events and frame["seed"].dtype.kind == "i"


def test_rerunning_a_finished_sweep_runs_nothing_again(local_sweep, explore_spec: Path):
    again = run_sweep(load_spec(explore_spec), local_sweep.path, jobs=2, progress=False)
    assert [r.attempts for r in again.manifest.runs] == [1, 1, 1, 1]
    assert again.report.markdown == write_report(local_sweep.path).markdown


def test_sweep_report_command_groups_by_an_axis(local_sweep):
    r = _cli("sweep", "report", str(local_sweep.path), "--group-by", "seed")
    assert r.exit_code == 0, r.output
    assert "## Violation rate by seed" in r.output and (local_sweep.path / "rate_by_seed.png").exists()
    bad = _cli("sweep", "report", str(local_sweep.path), "--group-by", "colour")
    assert bad.exit_code == 2 and "error: --group-by colour: not an axis of this sweep" in bad.output


def test_one_writer_per_sweep_folder_and_one_spec(local_sweep, explore_spec: Path, tmp_path: Path):
    with exclusive(local_sweep.path / LOCK, "held"):
        with pytest.raises(SweepError, match="another sweep driver is writing this folder"):
            run_sweep(load_spec(explore_spec), local_sweep.path, progress=False)
    other = _spec(tmp_path, EXPLORE.replace("rounds: 3", "rounds: 4"))
    r = _cli("sweep", "run", str(other), "--out", str(local_sweep.path))
    assert r.exit_code == 2 and "holds a sweep of another spec" in r.output and len(r.output.splitlines()) == 1
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    r = _cli("sweep", "run", str(explore_spec), "--out", str(tmp_path / "busy"))
    assert r.exit_code == 2 and "not empty and holds no sweep.json" in r.output


def test_without_ray_the_ray_executor_names_the_extra(explore_spec: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when the extra is not installed
    r = _cli("sweep", "run", str(explore_spec), "--out", str(tmp_path / "s"), "--executor", "ray")
    assert r.exit_code == 2
    assert r.output == "error: the ray executor needs Ray: pip install 'atp-graph[ray]'\n"
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- ray


def test_ray_executor_gives_the_same_report_as_local_processes(ray_session, local_sweep, explore_spec, tmp_path):
    result = run_sweep(load_spec(explore_spec), tmp_path / "ray", executor="ray", progress=False)
    assert ray_session.is_initialized()  # it used the running session and left it running
    assert result.manifest.executor == "ray" and [r.status for r in result.manifest.runs] == ["done"] * 4
    ours, theirs = write_report(result.path), write_report(local_sweep.path)
    assert ours.markdown == theirs.markdown
    assert (result.path / "events.csv").read_bytes() == (local_sweep.path / "events.csv").read_bytes()


def _lock_holder(lock: Path) -> int | None:
    """The process that has ``lock`` open (Linux /proc), if any."""
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == str(lock) and int(fd.parts[2]) != os.getpid():
                return int(fd.parts[2])
        except (OSError, ValueError):
            continue
    return None


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="finds the Ray worker through /proc")
def test_ray_retries_a_run_whose_worker_dies_and_the_retry_resumes_it(ray_session, tmp_path: Path):
    spec = _spec(tmp_path, "command: diffuse\nbase: {model: sim, agents: 1500, rounds: 12, topology: ring}\n")
    folder = tmp_path / "sweep"
    result: list = []
    driver = threading.Thread(
        target=lambda: result.append(run_sweep(load_spec(spec), folder, executor="ray", progress=False))
    )
    driver.start()
    run = folder / "runs" / "000"
    killed, deadline = None, time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and driver.is_alive():
        rounds = _rounds(folder)
        if rounds and rounds[0] and 2 <= rounds[0] < 10:
            killed = _lock_holder(run / "run.lock")
            if killed:
                os.kill(killed, signal.SIGKILL)  # the Ray worker running the run dies mid-run
        time.sleep(0.02)
    driver.join(120)
    assert killed, "never caught the run in flight"
    record = result[0].manifest.runs[0]
    assert record.status == "done" and record.attempts == 1  # Ray retried it, not the driver
    assert 2 <= record.resumed_from < 12  # the retry resumed from the last saved round
    events = read_events(run / "events.jsonl")
    assert [sum(e.round == r for e in events) for r in range(1, 13)] == [1500] * 12  # every round exactly once


# ---------------------------------------------------------------- durability

BIG = """\
command: diffuse
base: {model: sim, agents: 1000, rounds: 12, topology: small-world}
grid:
  seed: [0, 1, 2]
"""


def _rounds(folder: Path) -> list[int | None]:
    out: list[int | None] = []
    for f in sorted(folder.glob("runs/*/state.json")):
        try:
            out.append(json.loads(f.read_text())["round"])
        except (OSError, ValueError, KeyError):
            out.append(None)
    return out


def test_a_killed_driver_loses_only_rounds_in_flight_and_the_rerun_gives_the_same_report(tmp_path: Path):
    spec = _spec(tmp_path, BIG)
    killed = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "cli.py"), "sweep", "run", str(spec), "--out", str(killed), "--jobs", "1"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            rounds = _rounds(killed)
            if len(rounds) == 2 and rounds[1] and 2 <= rounds[1] < 6:  # the first run done, the second under half-way
                break
            time.sleep(0.02)
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    before = read_manifest(killed)
    assert [r.status for r in before.runs] == ["done", "running", "pending"], _rounds(killed)
    resumed = run_sweep(load_spec(spec), killed, jobs=2, progress=False)
    interrupted = resumed.manifest.runs[1]
    assert interrupted.status == "done" and interrupted.attempts == 2 and 2 <= interrupted.resumed_from < 12
    assert resumed.manifest.runs[0].attempts == 1  # the finished run was not run again
    straight = run_sweep(load_spec(spec), tmp_path / "straight", jobs=2, progress=False)
    assert resumed.report.markdown == straight.report.markdown
    assert (killed / "events.csv").read_bytes() == (tmp_path / "straight" / "events.csv").read_bytes()


def test_a_failing_run_is_reported_and_retried_only_when_asked(tmp_path: Path):
    mine = tmp_path / "mine"
    spec = _spec(
        tmp_path,
        f"""\
        command: explore
        base: {{model: sim, rounds: 2}}
        runs:
          - {{scenarios: baker}}
          - {{scenarios: {mine}}}
        """,
    )
    out = str(tmp_path / "sweep")
    r = _cli("sweep", "run", str(spec), "--out", out, "--jobs", "2")
    assert r.exit_code == 1, r.output
    failed = read_manifest(out).runs[1]
    assert failed.status == "failed" and "no such file, folder or built-in scenario name" in (failed.error or "")
    assert f"failed: {failed.name}: " in r.output and "--retry-failed" in r.output
    report = (Path(out) / "report.md").read_text()
    assert "## Runs not in the tables" in report and f"| {failed.name} | failed | " in report
    assert "1 of 2 runs finished" in report
    r = _cli("sweep", "run", str(spec), "--out", out)  # not retried without --retry-failed
    assert r.exit_code == 1 and read_manifest(out).runs[1].attempts == 1
    mine.mkdir()
    text = (BUILTIN_DIR / "individual" / "baker.yaml").read_text()
    (mine / "my-baker.yaml").write_text(text.replace("name: baker", "name: my-baker", 1))
    r = _cli("sweep", "run", str(spec), "--out", out, "--retry-failed")
    assert r.exit_code == 0, r.output
    runs = read_manifest(out).runs
    assert [x.status for x in runs] == ["done", "done"] and [x.attempts for x in runs] == [1, 2]
    assert "2 of 2 runs finished" in (Path(out) / "report.md").read_text()


# ---------------------------------------------------------------- a language model


def test_a_sweep_of_the_tiny_model(tiny_model_dir: Path, tmp_path: Path):
    spec = _spec(
        tmp_path,
        f"""\
        command: explore
        base: {{model: "hf:{tiny_model_dir}", scenarios: baker, limit: 2, rounds: 2}}
        grid:
          decision: [generate, score]
        model_options: {{device: cpu, max_new_tokens: 6}}
        """,
    )
    result = run_sweep(load_spec(spec), tmp_path / "sweep", jobs=1, progress=False)
    assert [r.status for r in result.manifest.runs] == ["done", "done"], [r.error for r in result.manifest.runs]
    text = result.report.markdown
    assert "SURROGATE" not in text and f"hf:{tiny_model_dir}" in text
    assert "## Invalid rate per round" in text and "## Violation rate by decision" in text
    generated = read_events(result.path / "runs" / result.manifest.runs[0].name / "events.jsonl")
    if any(getattr(e, "finish", None) for e in generated):  # answers record how they finished
        assert "answers cut off at the token budget" in text
