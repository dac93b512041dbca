"""Randomized real-time kills (heavy tier, ``make test-slow``): SIGKILL or Ctrl-C at a random moment of a running
command, then ``--resume`` (or a fresh start when the folder was never created): the folder ends byte-identical to
a straight run. The deterministic phase kills are in ``test_kill_resume.py``; these catch what falls between them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPARED = ("events.jsonl", "summary.json", "table.md", "state.json")


def commands(tmp: Path) -> dict[str, list[str]]:
    return {
        "diffuse-surrogate": ["diffuse", "--model", "sim", "--agents", "20000", "--rounds", "12"],
        "explore-tiny": [
            "explore", "--model", f"tiny:{tmp / 'tiny'}", "--rounds", "4", "--limit", "6", "--max-new-tokens", "24",
        ],
    }  # fmt: skip


def start(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATP_")}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, tuple[Path, float, list[str]]]:
    """Each command run straight through: its folder, wall time and arguments."""
    tmp = tmp_path_factory.mktemp("straight")
    out = {}
    for name, args in commands(tmp).items():
        t0 = time.perf_counter()
        proc = start([*args, "--out", str(tmp / name)])
        assert proc.wait() == 0, proc.stderr.read()[-800:]
        out[name] = (tmp / name, time.perf_counter() - t0, args)
    return out


@pytest.mark.heavy
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", ["diffuse-surrogate", "explore-tiny"])
def test_a_kill_at_a_random_moment_resumes_to_the_same_folder(tmp_path, straight, name, seed):
    reference, wall, args = straight[name]
    rng = random.Random(f"{name}-{seed}")
    how = signal.SIGINT if seed % 3 == 2 else signal.SIGKILL
    folder = tmp_path / "run"
    t0 = time.perf_counter()
    proc = start([*args, "--out", str(folder)])
    if how == signal.SIGINT:  # Ctrl-C once the run has started (before, it only stops Python's imports)
        while not (folder / "config.json").exists() and proc.poll() is None:
            time.sleep(0.01)
    time.sleep(max(rng.uniform(0.05, 1.0) * wall - (time.perf_counter() - t0), 0))
    proc.send_signal(how)
    code = proc.wait()
    # -SIGINT: Ctrl-C while Python shuts down after the run (it restores the default handler): nothing is lost
    assert code in (0, 130, -signal.SIGKILL, -signal.SIGINT), proc.stderr.read()[-800:]
    if code != 0:
        again = [name.split("-")[0], "--resume", str(folder)] if (folder / "config.json").exists() else args
        rerun = start(again if "--resume" in again else [*again, "--out", str(folder)])
        assert rerun.wait() == 0, rerun.stderr.read()[-800:]
    for file in COMPARED:
        assert (folder / file).read_bytes() == (reference / file).read_bytes(), f"{file} after {how.name}"
