"""The comparative report of a sweep, from its run folders alone: ``report.md`` (a table per metric), an overlay
plot grouped by one axis, heatmaps for pairs of axes, and tidy CSV (see :mod:`atp_graph.sweeps.tidy`).

Rates, intervals and tipping rounds come from :mod:`atp_graph.analysis` (``rate_by_round``, ``wilson``,
``tipping_round``); tables and pictures from its ``rate_table``, ``plot_rates`` and ``plot_heatmap``. A diffuse
run with several (threshold, rewards) cells gives one row per cell, and ``threshold`` / ``rewards`` become axes.
Surrogate (``model: sim``) numbers say so in every table and plot.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analysis import Rate, rate_by_round, tipping_round, wilson
from ..analysis.quality import INVALID_WARN
from ..analysis.report import plot_heatmap, plot_rates, rate_table
from ..events import read_events
from ..policies.spec import SURROGATE_LABEL
from ..run import RunDir
from .manifest import RUNS, RunRecord, SweepError, read_manifest, run_state
from .plan import label
from .tidy import EventTable, write_rates

METRIC = {"explore": ("violation rate", "final violation rate"), "diffuse": ("collective rate", "final adoption")}
"""Per command: the main rate, and what its last round is called."""
CELL_AXES = ("threshold", "rewards")
"""The axes inside a diffuse run (one population per cell)."""
SURROGATE = "SURROGATE (non-LLM) policy"


@dataclass(frozen=True)
class Unit:
    """One row of the report: a run (explore), or one (threshold, rewards) cell of a run (diffuse)."""

    run: str
    """The run's name."""
    cell: str | None
    """The diffuse cell, e.g. ``t=4, rewards=1.2/1/0.8``."""
    axes: dict[str, Any]
    """The run's axis values, plus ``threshold`` and ``rewards`` for a diffuse cell."""
    model: str
    """The model as the run's tables name it (the surrogate's label says SURROGATE)."""
    surrogate: bool
    """Whether the surrogate decided."""
    rate: list[Rate]
    """Violation (explore) or collective (diffuse) rate per round."""
    invalid: list[Rate]
    """Share of answers that named no option, per round."""
    truncated: list[Rate] | None
    """Share of answers cut off at the token budget (``finish == "length"``), per round; None = not recorded."""

    @property
    def tipping(self) -> int | None:
        """First round at or above 50%."""
        return tipping_round([r.value for r in self.rate])

    @property
    def label(self) -> str:
        """Row label: the run, its cell."""
        return self.run + (f" · {self.cell}" if self.cell else "")


@dataclass
class SweepReport:
    """What :func:`write_report` wrote."""

    path: Path
    """``report.md``."""
    markdown: str
    """Its text."""
    units: list[Unit]
    """Its rows."""
    axes: list[str]
    """The axes that vary."""
    group_by: str | None
    """The overlay plot's axis."""
    files: list[Path] = field(default_factory=list)
    """Every file written (report, plots, CSV, Parquet)."""
    missing: list[RunRecord] = field(default_factory=list)
    """Runs without a finished run folder (failed, interrupted, pending)."""


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _truncated(events: Sequence[Any], rounds: int) -> list[Rate] | None:
    if all(getattr(e, "finish", None) is None for e in events):
        return None
    return rate_by_round(events, rounds=rounds, hit=lambda e: getattr(e, "finish", None) == "length")


def _units(command: str, record: RunRecord, events: Sequence[Any], rounds: int, model: str) -> list[Unit]:
    surrogate = any(e.policy == "surrogate" for e in events)
    shown = SURROGATE_LABEL if surrogate else model

    def unit(evs: Sequence[Any], hit: Callable[[Any], bool], cell: str | None, axes: dict[str, Any]) -> Unit:
        invalid = rate_by_round(evs, rounds=rounds, hit=lambda e: e.choice is None)
        rate = rate_by_round(evs, rounds=rounds, hit=hit)
        return Unit(record.name, cell, axes, shown, surrogate, rate, invalid, _truncated(evs, rounds))

    if command == "explore":
        return [unit(events, lambda e: e.outcome == "violate", None, dict(record.axes))]
    cells: dict[tuple, list[Any]] = {}
    for e in events:
        if not e.seeded:
            cells.setdefault((e.threshold, tuple(e.rewards)), []).append(e)
    out = []
    for (t, r), evs in sorted(cells.items()):
        axes = {**record.axes, "threshold": t, "rewards": [list(r)]}  # the shape of the config's rewards
        out.append(unit(evs, lambda e: e.collective, f"t={t:g}, rewards={label([r])}", axes))
    return out


def _values(units: Sequence[Unit], axis: str) -> list[Any]:
    """An axis's distinct values, in order of first appearance."""
    seen: dict[str, Any] = {}
    for u in units:
        if axis in u.axes:
            seen.setdefault(_key(u.axes[axis]), u.axes[axis])
    return list(seen.values())


def _pool(series: Sequence[Sequence[Rate]]) -> list[Rate]:
    """Rates of several rows pooled round by round (their counts added)."""
    rounds = max((len(s) for s in series), default=0)
    per = [[s[i] for s in series if i < len(s) and s[i].n] for i in range(rounds)]
    return [wilson(sum(r.k for r in rs), sum(r.n for r in rs)) for rs in per]


def _where(units: Sequence[Unit], **fixed: Any) -> list[Unit]:
    return [u for u in units if all(_key(u.axes.get(a)) == _key(v) for a, v in fixed.items())]


def write_report(folder: str | Path, *, group_by: str | None = None) -> SweepReport:
    """Write the sweep's comparative report from its manifest and finished run folders; return what it wrote."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    command = manifest.command
    known = [*manifest.axes, *(CELL_AXES if command == "diffuse" else ())]
    if group_by is not None and group_by not in known:
        raise SweepError(f"--group-by {group_by}: not an axis of this sweep (axes: {', '.join(known) or 'none'})")
    units, missing, files = _read(folder, manifest)
    axes = [a for a in known if len(_values(units, a)) > 1]
    group = group_by or next((a for a in axes if a != "seed"), axes[0] if axes else None)
    everyone = bool(units) and all(u.surrogate for u in units)
    tag = f" — {SURROGATE}" if everyone else ""
    done = len(manifest.runs) - len(missing)
    out = [f"# Sweep report: {command}, {len(manifest.runs)} run{'s' if len(manifest.runs) != 1 else ''}{tag}", ""]
    out += [f"{done} of {len(manifest.runs)} runs finished; spec hash {manifest.spec_hash}."]
    if axes:
        out += ["Axes: " + "; ".join(f"{a} ({', '.join(label(v) for v in _values(units, a))})" for a in axes) + "."]
    if everyone:
        out += ["", f"**Every number below comes from the {SURROGATE}, not a language model.**"]
    out += [""]
    if units:
        out += _sections(folder, command, units, axes, group, files)
    if missing:
        out += ["## Runs not in the tables", "", "| run | status | error |", "|---|---|---|"]
        out += [f"| {r.name} | {r.status} | {(r.error or '').replace('|', '/')} |" for r in missing] + [""]
    files.append(write_rates(folder / "rates.csv", _rate_rows(units, axes)))
    names = ", ".join(f"`{p.name}`" for p in files if p.suffix in (".csv", ".parquet"))
    out += ["## Files", "", f"Tidy tables for pandas: {names} (one row per event / rate; axis values as columns).", ""]
    text = "\n".join(out)
    report = folder / "report.md"
    report.write_text(text, encoding="utf-8")
    return SweepReport(report, text, units, axes, group, [report, *files], missing)


def _read(folder: Path, manifest: Any) -> tuple[list[Unit], list[RunRecord], list[Path]]:
    """Every finished run's rows (and its events into the tidy tables); the runs that are not finished."""
    units: list[Unit] = []
    missing: list[RunRecord] = []
    table = EventTable(folder, manifest.command, manifest.axes, [r.axes for r in manifest.runs])
    try:
        for record in manifest.runs:
            path = folder / RUNS / record.name
            if run_state(path)[0] != "done":
                missing.append(record)
                continue
            config = RunDir.read_config(path, kind=manifest.command)
            events = read_events(path / "events.jsonl")
            table.add(record.name, record.axes, events)
            rounds, model = int(config["resolved"]["rounds"]), config[manifest.command]["model"]
            units.extend(_units(manifest.command, record, events, rounds, model))
    finally:
        files = table.close()
    return units, missing, files


def _sections(
    folder: Path, command: str, units: list[Unit], axes: list[str], group: str | None, files: list[Path]
) -> list[str]:
    """The tables and pictures (the files they write are added to ``files``)."""
    metric, final_name = METRIC[command]
    everyone = all(u.surrogate for u in units)
    mixed = any(u.surrogate for u in units) and not everyone
    tag = f" — {SURROGATE}" if everyone else ""

    def rows(pick: Callable[[Unit], list[Rate]]) -> dict[str, list[Rate]]:
        return {u.label + (" · SURROGATE" if mixed and u.surrogate else ""): pick(u) for u in units}

    out = [f"## {metric.capitalize()} per round", ""]
    out += [rate_table(rows(lambda u: u.rate), first="run", title=f"{metric}, 95% Wilson intervals{tag}")]
    plots, pooled = _overlay(folder, units, group, metric, everyone, mixed)
    files += plots
    if pooled:
        out += [f"## {metric.capitalize()} by {group}", "", pooled]
        out += [f"![{metric} by {group}]({p.name})" for p in plots] + [""]
    out += [f"## Tipping round, {final_name}, invalid and truncated rates", ""]
    out += [_summary(units, axes, final_name, tag)]
    out += ["## Invalid rate per round", ""]
    out += [rate_table(rows(lambda u: u.invalid), first="run", title=f"answers naming no option{tag}")]
    out += ["## Truncated rate per round", ""]
    if any(u.truncated is not None for u in units):
        trunc = rows(lambda u: u.truncated or [wilson(0, 0)] * len(u.rate))
        out += [rate_table(trunc, first="run", title=f"answers cut off at the token budget{tag}")]
    else:
        out += ["n/a: no event records how its answer finished (`finish`; the surrogate never truncates).", ""]
    maps = _heatmaps(folder, units, axes, final_name, everyone)
    files += maps
    if maps:
        out += ["## Heatmaps", "", f"The {final_name} per pair of axes, pooled over the runs that share a cell.", ""]
        out += [f"![{p.stem}]({p.name})" for p in maps] + [""]
    return out


def _overlay(
    folder: Path, units: list[Unit], group: str | None, metric: str, everyone: bool, mixed: bool
) -> tuple[list[Path], str]:
    """The overlay plot of the rate per round, one line per value of ``group`` (pooled over the other axes), and
    its table."""
    if group is None:
        return [], ""
    series: dict[str, list[Rate]] = {}
    invalid: list[list[Rate]] = []
    for value in _values(units, group):
        members = _where(units, **{group: value})
        marker = " [SURROGATE]" if mixed and any(u.surrogate for u in members) else ""
        series[f"{group}={label(value)}{marker}"] = _pool([u.rate for u in members])
        invalid += [u.invalid for u in members]
    bad = sum(r.k for s in invalid for r in s) / max(sum(r.n for s in invalid for r in s), 1)
    warnings = [f"{bad:.0%} of answers named no option: these rates rest on few valid answers"] * (bad > INVALID_WARN)
    title = f"{metric.capitalize()} by {group} (pooled over the other axes)"
    path = plot_rates(
        folder / f"rate_by_{group}.png", series, title=title, ylabel=metric, surrogate=everyone, warnings=warnings
    )
    tag = f" — {SURROGATE}" if everyone else ""
    md = rate_table(series, first=group, title=f"{metric} pooled over the other axes, 95% Wilson intervals{tag}")
    return [path], md


def _summary(units: list[Unit], axes: list[str], final_name: str, tag: str) -> str:
    """One row per unit: its axis values, model, tipping round, final rate, invalid and truncated rates."""
    head = ["run", *axes, "model", "tipping round (>= 50%)", final_name, "invalid rate", "truncated rate"]
    lines = [f"**{final_name}, tipping round, and invalid / truncated answers over all rounds{tag}**", ""]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for u in units:
        total_invalid = wilson(sum(r.k for r in u.invalid), sum(r.n for r in u.invalid))
        truncated = "n/a"
        if u.truncated is not None:
            truncated = str(wilson(sum(r.k for r in u.truncated), sum(r.n for r in u.truncated)))
        cells = [u.run, *(label(u.axes.get(a)) for a in axes), u.model]
        cells += [str(u.tipping or "never"), str(u.rate[-1]), str(total_invalid), truncated]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _heatmaps(folder: Path, units: list[Unit], axes: list[str], final_name: str, everyone: bool) -> list[Path]:
    """One heatmap of the final rate per pair of axes whose every combination ran (seed left out when two other
    axes vary); each cell pools the runs that share it."""
    pool = [a for a in axes if a != "seed"]
    pool = pool if len(pool) >= 2 else axes
    written = []
    for a, b in list(itertools.combinations(pool, 2))[:6]:
        rows, cols = _values(units, a), _values(units, b)
        grid = []
        for x in rows:
            cells = [_where(units, **{a: x, b: y}) for y in cols]
            if not all(cells):
                break
            grid.append([_pool([[u.rate[-1]] for u in us])[0].value for us in cells])
        else:
            written.append(
                plot_heatmap(
                    folder / f"heatmap_{a}_x_{b}.png",
                    grid,
                    rows=[f"{a}={label(x)}" for x in rows],
                    cols=[f"{b}={label(y)}" for y in cols],
                    title=f"{final_name}: {a} x {b}",
                    surrogate=everyone,
                )
            )
    return written


def _rate_rows(units: list[Unit], axes: list[str]) -> list[dict[str, Any]]:
    """Tidy rows for ``rates.csv``."""
    out = []
    for u in units:
        lead = {"run": u.run, "cell": u.cell or "", **{a: label(u.axes.get(a)) for a in axes}, "model": u.model}
        for metric, series in (("rate", u.rate), ("invalid", u.invalid), ("truncated", u.truncated or [])):
            for i, r in enumerate(series, 1):
                numbers = r.as_dict()
                out.append({**lead, "metric": metric, "round": i, **numbers})
    return out
