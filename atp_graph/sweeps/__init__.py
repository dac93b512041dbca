"""Sweeps: many runs of one command from one spec, on local worker processes or a Ray cluster, durable and
resumable, with one comparative report.

A spec (YAML, :func:`load_spec`) names the command, a base config, axes to vary (``grid`` and/or an explicit
``runs`` list) and per-run resources; :func:`expand` lists its runs (deterministic names); :func:`run_sweep` runs
them into a sweep folder (``sweep.json`` + one ordinary run folder per run under ``runs/``); :func:`write_report`
compares them.
"""

from .driver import SweepResult, run_sweep
from .executors import LocalExecutor, RayExecutor
from .manifest import Manifest, RunRecord, SweepError, read_manifest
from .plan import PlannedRun, axes_of, expand, spec_hash
from .report import SweepReport, Unit, write_report
from .spec import ModelOptions, Resources, SpecError, SweepSpec, load_spec, spec_from_data

__all__ = [
    "LocalExecutor",
    "Manifest",
    "ModelOptions",
    "PlannedRun",
    "RayExecutor",
    "Resources",
    "RunRecord",
    "SpecError",
    "SweepError",
    "SweepReport",
    "SweepResult",
    "SweepSpec",
    "Unit",
    "axes_of",
    "expand",
    "load_spec",
    "read_manifest",
    "run_sweep",
    "spec_from_data",
    "spec_hash",
    "write_report",
]
