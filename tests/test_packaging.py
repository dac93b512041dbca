"""The wheel ships the built-in scenarios (kept in the repo's top-level ``scenarios/``) and every package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = "atp_graph/_builtin_scenarios"  # where pyproject.toml maps scenarios/ inside the wheel

# Local state that must not reach the build: a stale build/lib would leak deleted modules into the wheel.
IGNORED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "runs")


@pytest.mark.slow
def test_wheel_ships_builtin_scenarios_and_all_packages(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*IGNORED))
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q"]
        + ["-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = out.glob("atp_graph-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    yamls = (source / "scenarios").glob("*/*.yaml")
    expected = {f"{PACKAGED}/{p.relative_to(source / 'scenarios').as_posix()}" for p in yamls}
    shipped = {n for n in names if n.startswith(f"{PACKAGED}/") and n.endswith(".yaml")}
    assert shipped == expected
    assert len([n for n in shipped if n.startswith(f"{PACKAGED}/individual/")]) == 16
    assert len([n for n in shipped if n.startswith(f"{PACKAGED}/collective/")]) == 7

    # pyproject.toml lists the packages explicitly, so a new sub-package must be added there to ship.
    sources = [p for pkg in ("atp_graph", "defenses") for p in (source / pkg).rglob("*.py")]
    modules = {p.relative_to(source).as_posix() for p in sources}
    assert modules - names == set(), "modules missing from the wheel: add their packages to pyproject.toml"

    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "atp = atp_graph.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
