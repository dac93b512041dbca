"""Held-out jobs: whole scenarios (every variant of a job) kept out of training and used for evaluation.

Items of one job share their story and wording, so a split by item would let the training data see the held-out
items' text; the split is by job. Which jobs are held out is drawn from the seed alone, never chosen by looking at
results.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atp_graph.errors import UserError
from atp_graph.scenarios import BUILTIN_DIR, load_scenario_file, scenario_files

__all__ = ["Split", "copy_jobs", "job_files", "split_jobs"]


@dataclass(frozen=True)
class Split:
    """Training and held-out jobs (scenario names), in the scenarios' order."""

    train: list[str]
    heldout: list[str]
    seed: int

    def as_dict(self) -> dict[str, Any]:
        """For provenance files."""
        return {"by": "job", "seed": self.seed, "train": self.train, "heldout": self.heldout}


def split_jobs(jobs: Sequence[str], holdout: int, *, seed: int) -> Split:
    """Hold out ``holdout`` of ``jobs``, drawn with ``seed`` (the same names and seed give the same split)."""
    if holdout and holdout >= len(jobs):
        raise UserError(f"holdout {holdout}: there are only {len(jobs)} job(s); keep at least one for training")
    held = set(random.Random(f"holdout-{seed}").sample(sorted(jobs), holdout))
    return Split([j for j in jobs if j not in held], [j for j in jobs if j in held], seed)


def job_files(scenarios: str | Path | None, *, kind: str) -> dict[str, Path]:
    """Each job (scenario name) of ``scenarios`` (a file, folder, built-in name or ``None`` = the built-in ones of
    ``kind``) and the file it is written in."""
    named = scenarios is not None and not Path(scenarios).exists()
    where = BUILTIN_DIR if named else Path(scenarios or BUILTIN_DIR / kind)
    found = {}
    for f in scenario_files([where]):
        s = load_scenario_file(f)
        if s.kind == kind and (not named or s.name == str(scenarios)):
            found[s.name] = f
    return found


def copy_jobs(scenarios: str | Path | None, jobs: Sequence[str], folder: str | Path, *, kind: str) -> Path:
    """Copy the files of ``jobs`` into ``folder`` (a scenario folder any ``--scenarios`` option accepts)."""
    files = job_files(scenarios, kind=kind)
    missing = [j for j in jobs if j not in files]
    if missing:
        raise UserError(f"{scenarios or 'built-in scenarios'}: no {kind} job named {missing[0]!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for j in jobs:
        shutil.copyfile(files[j], out / f"{j}.yaml")
    return out
