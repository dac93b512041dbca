"""``defend demo`` end to end on the tiny model, SIGKILLed after stages and inside the comparison and resumed: it
ends with the same result as a straight run.

The kills are deterministic (``ATP_FAULT``, :mod:`atp_graph.run.faults`): ``demo-<stage>`` right after a stage is
committed, ``events@2`` inside the comparison's first run. One
demo is killed three times in a row, then resumed in-process, and must end byte-identical to a straight one: the
same pairs, the same adapters, the same events and the same report numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from atp_graph.run.faults import DEMO_PHASES
from atp_graph.scenarios import BUILTIN_DIR
from cli import cli

ROOT = Path(__file__).resolve().parents[2]
JOBS = ("baker", "taxi-driver")
TINY = ["--holdout", "1", "--dpo-steps", "1", "--grpo-steps", "1", "--generations", "2", "--completion-tokens", "4"]
TINY += ["--lora-layers", "1", "--rounds", "2"]
"""Settings that make every stage take a second or two on the tiny model (2 layers: LoRA on the last one)."""


def demo_args(tiny_model_dir: Path, scenarios: Path) -> list[str]:
    return ["defend", "demo", "--model", f"hf:{tiny_model_dir}", "--scenarios", str(scenarios), *TINY]


def two_jobs(folder: Path) -> Path:
    """A scenario folder with two built-in jobs: one is trained on, the other held out."""
    folder.mkdir()
    for job in JOBS:
        shutil.copyfile(BUILTIN_DIR / "individual" / f"{job}.yaml", folder / f"{job}.yaml")
    return folder


def cli_run(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATP_")}
    if fault:
        env["ATP_FAULT"] = fault
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], env=env, capture_output=True, text=True)


def in_process(*args: str):
    return CliRunner(env={k: None for k in os.environ if k.startswith("ATP_")}).invoke(cli, list(args))


SAME = [
    "data/prefs.jsonl",
    "dpo/adapter_model.safetensors",
    "grpo/adapter_model.safetensors",
    *(f"compare/{v}/explore/{f}" for v in ("base", "dpo", "grpo") for f in ("events.jsonl", "summary.json")),
    "report.json",
]
FAULTS = ("demo-data", "demo-grpo", "events@2")
"""A stage boundary before training, one after it, and inside the comparison's first run (round 2's events on
disk, its checkpoint not yet); ``demo-dpo`` and ``demo-compare`` are boundaries of the same kind."""


def test_demo_killed_between_stages_and_inside_the_comparison_resumes_to_a_straight_runs_result(
    tiny_model_dir: Path, tmp_path: Path
):
    scenarios = two_jobs(tmp_path / "jobs")
    args = demo_args(tiny_model_dir, scenarios)
    straight, out = tmp_path / "straight", tmp_path / "demo"
    done = cli_run(*args, "--out", str(straight))
    assert done.returncode == 0, done.stderr[-800:]
    assert {f for f in FAULTS if f.startswith("demo-")} < set(DEMO_PHASES)

    killed = cli_run(*args, "--out", str(out), fault=FAULTS[0])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-800:]
    assert list(json.loads((out / "stages.json").read_text())) == ["data"] and not (out / "dpo").exists()
    for fault in FAULTS[1:]:
        killed = cli_run("defend", "demo", "--resume", str(out), fault=fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr[-800:])
    assert list(json.loads((out / "stages.json").read_text())) == ["data", "dpo", "grpo"]

    r = in_process("defend", "demo", "--resume", str(out))
    assert r.exit_code == 0, r.output
    assert "[2/4] dpo: DPO LoRA variant: done before" in r.output and "[4/4] compare: base vs DPO" in r.output
    for name in SAME:  # the two folders' own paths (in variant specs and run configs) are all that may differ
        a, b = (straight / name).read_bytes(), (out / name).read_bytes()
        assert a == b.replace(bytes(out), bytes(straight)), name

    rows = [line.split("|")[1].strip() for line in r.output.splitlines() if line.startswith("| ")]
    assert rows.count("base") == 2 and rows.count("grpo") == 3  # the per-round and the climb table; the stages
    report = json.loads((out / "report.json").read_text())
    (heldout,) = report["heldout_jobs"]
    trained = {json.loads(line)["item"].split("#")[0] for line in (out / "data" / "prefs.jsonl").open()}
    assert trained == set(JOBS) - {heldout}  # the held-out job is only compared on, never trained on
    assert [p.name for p in (out / "data" / "heldout").iterdir()] == [f"{heldout}.yaml"]
    assert report["items"] == 4 and report["rounds"] == 2 and list(report["verdicts"]) == ["base", "dpo", "grpo"]
    for name in ("base", "dpo", "grpo"):
        summary = json.loads((out / "compare" / name / "explore" / "summary.json").read_text())
        assert summary["decision"] == "score" and summary["evolution"] == "transcript" and summary["items"] == 4
        assert [x["rate"] for x in report["p_violate"][name]] == [x["rate"] for x in summary["mean_p_violate"]]
        assert report["verdicts"][name].startswith(f"{name}: ")
    for variant in ("dpo", "grpo"):  # LoRA on the last layer only, as asked
        assert json.loads((out / variant / "adapter_config.json").read_text())["layers_to_transform"] == [1]
    assert (out / "p_violate.png").stat().st_size > 0 and "**Verdicts**" in (out / "report.md").read_text()
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["data", "dpo", "grpo", "compare"] and all(s["seconds"] >= 0 for s in stages.values())

    bad = in_process("defend", "demo", "--resume", str(out), "--holdout", "2")
    assert bad.exit_code == 2 and "error: --resume continues" in bad.output and "drop --holdout" in bad.output
    again = in_process(*args, "--out", str(out))
    assert again.exit_code == 2 and "already holds a run" in again.output
    deep = in_process(*args, "--lora-layers", "3", "--out", str(tmp_path / "deep"))
    assert deep.exit_code == 2 and "error: --lora-layers 3: the model has only 2 layers" in deep.output
    assert "Traceback" not in bad.output + again.output + deep.output
