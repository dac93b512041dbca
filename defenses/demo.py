"""``defend demo``: preference data, DPO and GRPO variants, and base vs DPO vs GRPO on held-out jobs, in one
resumable command sized for a CPU and the embedded model.

It asks the study's defense question on a model anyone can run: do the aligned variants start lower, and does
their violation rate still climb over rounds? Stages, in order:

1. ``data``: preference pairs on the training jobs (``--holdout`` whole jobs are kept out, drawn with the seed);
   the held-out jobs' scenario files are copied to ``data/heldout/``.
2. ``dpo`` and 3. ``grpo``: LoRA variants of the base model (``dpo/``, ``grpo/``). GRPO samples only the decision,
   after ``{"choice": "``, which is where score mode reads it: the embedded model cannot follow the answer format.
4. ``compare``: base, dpo and grpo on the held-out items (explore, score mode, transcript evolution, ``--rounds``).

Then the report (:mod:`defenses.demo_report`): ``report.md``, ``report.json`` and ``p_violate.png``.

Durability: a stage's output is on disk (fsynced) and the stage is marked done in ``stages.json`` (rewritten
atomically) before the next stage starts. A stage that did not finish is redone from scratch, except the
comparison, whose runs continue from their last complete round. Seeds fix the split, the data, the training and the
comparison, so a resumed demo ends with the same numbers as a straight one. ``ATP_FAULT=demo-<stage>`` kills the
process right after that stage is committed (:mod:`atp_graph.run.faults`, for the reliability tests).

Nothing here looks at the held-out items before the comparison: the settings below were chosen on the training
pairs' own metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from atp_graph.events import SCHEMA_VERSION
from atp_graph.run import RunDir, faults, versions
from atp_graph.run.rundir import RunDirError

from .config import DemoConfig
from .demo_report import DemoResult, write_report

__all__ = ["STAGES", "DemoConfig", "DemoResult", "run_demo"]

STAGES = ("data", "dpo", "grpo", "compare")
"""The stages, in order; each is a folder of the demo folder."""
CONFIG, STAGES_FILE, PREFS, HELDOUT = "config.json", "stages.json", "data/prefs.jsonl", "data/heldout"
VARIANTS = ("base", "dpo", "grpo")
"""The compared variants, the base model first (the reference)."""


def _fresh(folder: Path) -> Path:
    """An empty ``folder``: what an unfinished stage left there is removed."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _sync(folder: Path) -> None:
    """fsync every file under ``folder`` and the folders themselves: the stage survives a power cut."""
    for root, _, files in os.walk(folder):
        for name in [*files, "."]:
            fd = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _data(cfg: DemoConfig, path: Path, progress: bool) -> str:
    """Pairs on the training jobs; the held-out jobs' files for the comparison."""
    from atp_graph.policies import load_model

    from .data import describe, make_preference_data
    from .split import copy_jobs

    _fresh(path / "data")
    policy = None if cfg.pairs == "constructed" else load_model(cfg.model, max_new_tokens=cfg.sample_tokens)
    pset = make_preference_data(
        policy,
        path / PREFS,
        model=cfg.model,
        scenarios=cfg.scenarios,
        settings=cfg.data_settings(),
        max_new_tokens=cfg.sample_tokens,
        progress=progress,
    )
    assert pset.split is not None
    copy_jobs(cfg.scenarios, pset.split.heldout, path / HELDOUT, kind="individual")
    return f"{describe(pset.stats, pairs=cfg.pairs)}; held out: {', '.join(pset.split.heldout)}"


def _training_note(result: Any, keys: tuple[str, ...]) -> str:
    """The steps and each metric's first and last value."""
    m = result.manifest["metrics"]
    parts = [f"{k} {m[k]['first']:.3g} -> {m[k]['last']:.3g}" for k in keys if k in m]
    return f"{m.get('steps', '?')} steps; " + ", ".join(parts)


def _dpo(cfg: DemoConfig, path: Path, progress: bool) -> str:
    """A DPO LoRA variant on the pairs."""
    from .dpo import train_dpo

    result = train_dpo(cfg.model, path / PREFS, _fresh(path / "dpo"), cfg.dpo_settings())
    return _training_note(result, ("loss", "rewards/accuracies", "rewards/margins"))


def _grpo(cfg: DemoConfig, path: Path, progress: bool) -> str:
    """A GRPO LoRA variant on the pairs' prompts, with the study's reward."""
    from .grpo import train_grpo

    result = train_grpo(cfg.model, _fresh(path / "grpo"), data=path / PREFS, settings=cfg.grpo_settings())
    return _training_note(result, ("reward", "kl"))


def _compare(cfg: DemoConfig, path: Path, progress: bool) -> str:
    """base, dpo and grpo on the held-out items; an interrupted comparison continues its runs."""
    from .compare import CompareConfig, run_compare

    variants = [f"base={cfg.model}", f"dpo={(path / 'dpo').resolve()}", f"grpo={(path / 'grpo').resolve()}"]
    compare = CompareConfig(
        variants=variants,
        testbed="explore",
        rounds=cfg.rounds,
        scenarios=str((path / HELDOUT).resolve()),
        decision="score",
        seed=cfg.seed,
    )
    run_compare(compare, out=path / "compare", progress=progress, resume=True)
    return f"{len(variants)} variants x {cfg.rounds} rounds on the held-out items (score mode, transcript evolution)"


STAGE_RUNNERS: dict[str, Callable[[DemoConfig, Path, bool], str]] = {
    "data": _data,
    "dpo": _dpo,
    "grpo": _grpo,
    "compare": _compare,
}
STAGE_TITLES = {
    "data": "preference pairs on the training jobs",
    "dpo": "DPO LoRA variant",
    "grpo": "GRPO LoRA variant",
    "compare": "base vs DPO vs GRPO on the held-out jobs",
}


def _open(cfg: DemoConfig | None, out: str | Path | None, resume: str | Path | None) -> tuple[DemoConfig, Path]:
    """The demo's config and folder: a new folder with its ``config.json``, or the saved config of ``resume``."""
    if resume is not None:
        path = Path(resume)
        return DemoConfig(**RunDir.read_config(path, kind="demo")["demo"]), path
    if cfg is None or out is None:
        raise ValueError("a new demo needs a config and a folder")
    path = RunDir.check_new(out)
    path.mkdir(parents=True, exist_ok=True)
    RunDir(path).write_json(
        CONFIG, {"demo": cfg.model_dump(), "versions": versions(), "schema_version": SCHEMA_VERSION}
    )
    return cfg, path


def _stages(path: Path) -> dict[str, Any]:
    """The stages done so far (``stages.json``), or a one-line error when that file is damaged."""
    f = path / STAGES_FILE
    try:
        done = json.loads(f.read_text(encoding="utf-8")) if f.exists() else {}
        if not isinstance(done, dict) or not set(done) <= set(STAGES):
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        raise RunDirError(f"{f}: damaged; delete it to redo every stage") from None
    return done


def run_demo(
    cfg: DemoConfig | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> DemoResult:
    """Run (or resume) the demo: every stage not yet done, then the report.

    Args:
        cfg: The settings of a new demo (ignored when resuming: the folder's own ``config.json`` is used).
        out: The new demo's folder (new or empty).
        resume: The folder of a demo to continue (or to re-report, when every stage is done).
        progress: Show progress bars.
        log: Receives one line per stage (what it does, then what it made and its wall time).
    """
    cfg, path = _open(cfg, out, resume)
    folder = RunDir(path)
    with folder.locked():
        done = _stages(path)
        for i, name in enumerate(STAGES, 1):
            head = f"[{i}/{len(STAGES)}] {name}: {STAGE_TITLES[name]}"
            if name in done:
                log(f"{head}: done before ({done[name]['seconds']:.0f} s)")
                continue
            log(head)
            start, cpu = time.monotonic(), time.process_time()
            note = STAGE_RUNNERS[name](cfg, path, progress)
            _sync(path / name)
            done[name] = {
                "seconds": round(time.monotonic() - start, 1),
                "cpu_seconds": round(time.process_time() - cpu, 1),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "load_average": round(os.getloadavg()[0], 2),
                "note": note,
            }
            folder.write_json(STAGES_FILE, done)
            faults.checkpoint(f"demo-{name}")
            log(f"      {note} ({done[name]['seconds']:.0f} s)")
        return write_report(path, cfg.model_dump(), done, variants=VARIANTS)
