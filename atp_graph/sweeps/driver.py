"""The sweep driver: plan, skip what is finished, hand the rest to an executor, record every outcome, report.

Re-running the same sweep skips finished runs, resumes interrupted ones from their last saved round, and leaves
failed ones alone unless asked (``retry_failed``).
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .executors import Executor, LocalExecutor, RayExecutor, default_jobs, import_ray
from .manifest import Manifest, RunRecord, SweepFolder, now, run_state
from .plan import axes_of, expand, spec_hash
from .report import SweepReport, write_report
from .spec import SweepSpec
from .worker import Outcome, Task

ExecutorName = Literal["local", "ray"]


@dataclass
class SweepResult:
    """What a sweep left in its folder."""

    path: Path
    """The sweep folder."""
    manifest: Manifest
    """``sweep.json`` as last written."""
    report: SweepReport
    """The comparative report (``report.md`` and friends)."""

    @property
    def failed(self) -> list[RunRecord]:
        """Runs that ended in failure."""
        return [r for r in self.manifest.runs if r.status == "failed"]


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    executor: ExecutorName = "local",
    jobs: int | None = None,
    address: str | None = None,
    retry_failed: bool = False,
    group_by: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run (or continue) every run of ``spec`` in the sweep folder ``out``, then write the report.

    Args:
        spec: The sweep.
        out: The sweep folder; each run is an ordinary run folder under ``out/runs/``.
        executor: ``local`` worker processes or ``ray``.
        jobs: Local runs at a time (default: the cores over each run's CPUs; 1 for GPU runs).
        address: Ray cluster address (``auto``, ``ray://host:10001``); ``None`` starts a local Ray unless one is
            already running in this process.
        retry_failed: Also rerun runs that failed before (they resume from their last saved round).
        group_by: The report's overlay-plot axis (default: the spec's ``group_by``, else the first non-seed axis).
        progress: Show a progress bar and one line per finished run.
    """
    if executor == "ray":
        import_ray()  # a missing extra is said before anything is written
    runs = expand(spec)
    folder_path = Path(out).resolve()
    spec_data = spec.model_dump(mode="json")
    opened = SweepFolder.open(
        folder_path, spec=spec_data, spec_hash=spec_hash(spec, runs), runs=runs, axes=axes_of(spec)
    )
    with opened as folder:
        records = {r.name: r for r in folder.manifest.runs}
        todo: list[Task] = []
        for run in runs:
            record, path = records[run.name], folder.run_path(run.name)
            if run_state(path)[0] == "done":
                record.status, record.error = "done", None
            elif record.status != "failed" or retry_failed:
                res = run.resources
                todo.append(
                    Task(
                        command=spec.command,
                        name=run.name,
                        path=str(path),
                        config=run.config,
                        model_options=spec.model_options.model_dump(),
                        cpus=res.cpus,
                        gpus=res.gpus,
                        memory=res.memory,
                    )
                )
        chosen: Executor = (
            RayExecutor(address, retries=spec.retries)
            if executor == "ray"
            else LocalExecutor(jobs or default_jobs(todo), folder_path)
        )
        folder.manifest.executor = chosen.name
        folder.save()
        _execute(folder, chosen, todo, progress=progress)
        report = write_report(folder_path, group_by=group_by or spec.group_by)
        return SweepResult(folder_path, folder.manifest, report)


def _execute(folder: SweepFolder, executor: Executor, todo: list[Task], *, progress: bool) -> None:
    """Hand ``todo`` to the executor; record every start and outcome in the manifest as it happens."""
    from tqdm.auto import tqdm

    records = {r.name: r for r in folder.manifest.runs}
    total = len(records)
    bar = tqdm(
        total=total,
        initial=total - len(todo),
        desc=f"sweep {folder.manifest.command} ({executor.name})",
        unit="run",
        disable=not progress,
        file=sys.stderr,
    )

    def status() -> None:
        counts = Counter(r.status for r in records.values())
        bar.set_postfix_str(
            ", ".join(f"{k} {counts[k]}" for k in ("done", "running", "failed", "pending") if counts[k])
        )

    def on_start(task: Task) -> None:
        r = records[task.name]
        r.status, r.attempts, r.started, r.finished, r.error, r.traceback = (
            "running",
            r.attempts + 1,
            now(),
            None,
            None,
            None,
        )
        folder.save()
        status()

    def on_end(o: Outcome) -> None:
        r = records[o.name]
        r.status, r.finished, r.seconds, r.resumed_from = o.status, now(), round(o.seconds, 3), o.resumed_from
        r.error, r.traceback = o.error, o.traceback
        folder.save()
        bar.update(1)
        status()
        if progress:
            resumed = f", resumed after round {o.resumed_from}" if o.resumed_from else ""
            line = f"{o.status:<6} {o.name} ({o.seconds:.1f} s{resumed})" + (f": {o.error}" if o.error else "")
            bar.write(line, file=sys.stderr)

    status()
    try:
        with contextlib.closing(executor.run(todo, on_start)) as outcomes:  # type: ignore[arg-type]
            for outcome in outcomes:
                on_end(outcome)
    except BaseException:
        for r in records.values():
            if r.status == "running":
                r.status = "interrupted"
        folder.save()
        raise
    finally:
        bar.close()
