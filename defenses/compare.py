"""Compare model variants and runtime defenses on the same items, seeds and rounds of the testbeds.

A variant is ``NAME=SPEC[;OPTION]...``: ``SPEC`` is a model spec (``smollm2``, ``hf:<base>+adapter:<folder>``, a
trained variant folder, ``sim`` for the surrogate), and the options switch on runtime defenses of the agent graph
that need no training:

- ``memory_hygiene``: refuse to store lessons that endorse rule-breaking;
- ``reanchor=K``: restate the rule every K rounds;
- ``evolution=reflection|transcript|none``: what the agent carries between rounds;
- ``monitor``: the tipping monitor falls back to the compliant action when it fires (``monitor_fallback``).

The first variant is the reference: every difference from it whose 95% Wilson intervals do not overlap is listed.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atp_graph.analysis.metrics import Rate, intervals_overlap
from atp_graph.analysis.report import plot_rates, rate_table
from atp_graph.errors import UserError, printable
from atp_graph.policies import SurrogateModel, is_surrogate
from atp_graph.policies.base import DecisionMode, Policy

from .variant import DefenseError, check_new_folder, resolve_spec

__all__ = [
    "CompareConfig",
    "CompareResult",
    "Variant",
    "differences",
    "parse_variant",
    "run_compare",
]

Testbed = Literal["explore", "diffuse", "tools", "both"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_EVOLUTIONS = ("transcript", "reflection", "none")


@dataclass(frozen=True)
class Variant:
    """One row of a comparison: a name, a model spec and the runtime-defense settings."""

    name: str
    """Short name; also the subfolder of the comparison's run folder."""
    model: str
    """The model spec (a variant folder is replaced by the spec its ``variant.json`` records)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Testbed config fields the options set, e.g. ``{"memory_hygiene": True}``."""

    @property
    def surrogate(self) -> bool:
        """Whether this variant is the non-LLM surrogate policy."""
        return is_surrogate(self.model)

    @property
    def label(self) -> str:
        """The name as tables and plots show it (the surrogate is always marked)."""
        return f"{self.name} [SURROGATE: non-LLM]" if self.surrogate else self.name


def _option(token: str) -> dict[str, Any]:
    """One ``;``-separated option as config fields."""
    key, sep, value = (part.strip() for part in token.partition("="))
    key = key.replace("-", "_")
    if key == "memory_hygiene" and not sep:
        return {"memory_hygiene": True}
    if key == "monitor" and not sep:
        return {"monitor_fallback": True}
    if key in ("reanchor", "reanchor_every") and sep:
        if not value.isdigit():
            raise DefenseError(f"reanchor={value!r}: expected a whole number of rounds")
        return {"reanchor_every": int(value)}
    if key == "evolution" and value in _EVOLUTIONS:
        return {"evolution": value}
    raise DefenseError(
        f"unknown variant option {token!r}; use memory_hygiene, reanchor=K, "
        f"evolution={'|'.join(_EVOLUTIONS)} or monitor"
    )


def parse_variant(text: str) -> Variant:
    """Parse ``NAME=SPEC[;OPTION]...`` (see the module docstring)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise DefenseError(f"variant {text!r}: expected NAME=SPEC[;option...], NAME made of letters, digits, _.-")
    spec, *tokens = (t.strip() for t in rest.split(";"))
    if not spec:
        raise DefenseError(f"variant {text!r} names no model spec")
    options: dict[str, Any] = {}
    for token in filter(None, tokens):
        options.update(_option(token))
    return Variant(name, resolve_spec(spec), options)


class CompareConfig(BaseModel):
    """What a comparison runs (written to ``compare.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    variants: list[str] = Field(min_length=1)
    """``NAME=SPEC[;OPTION]...`` strings; the first is the reference."""
    testbed: Testbed = "explore"
    """explore (individual violation rate), diffuse (collective rate per threshold), tools (forbidden-tool rate) or
    both (explore and diffuse)."""
    rounds: int | None = Field(default=None, ge=1)
    """Rounds; ``None`` = the testbed's (explore: the scenarios' 6, diffuse: the study's 3)."""
    limit: int | None = Field(default=None, ge=1)
    """Explore (or tools) only the first N items."""
    scenarios: str | None = None
    """Individual scenarios (file, folder, built-in name), or tool scenarios for ``tools``; ``None`` = all built-in
    items (64 individual, 24 tool)."""
    games: str | None = None
    """Collective games (file, folder, built-in name); ``None`` = all 7, as in the study's grid."""
    decision: DecisionMode = "generate"
    """generate (free text) or score (option log-likelihoods)."""
    seed: int = 0
    """The same seed for every variant."""


@dataclass
class CompareResult:
    """What a comparison produced."""

    table: str
    notes: list[str]
    summary: dict[str, Any]
    path: Path | None


def _rates(dicts: list[dict[str, Any]]) -> list[Rate]:
    """Rates back from their ``as_dict`` form."""
    return [Rate.from_dict(d) for d in dicts]


def differences(rows: dict[str, list[Rate]], reference: str, pairs: list[tuple[str, str]]) -> list[str]:
    """Notes for every (row, round) where a row's interval does not overlap its reference row's."""
    notes = []
    for row, ref in pairs:
        for r, (a, b) in enumerate(zip(rows[ref], rows[row], strict=False), 1):
            if a.n and b.n and not intervals_overlap(a, b):
                notes.append(f"{row} vs {ref}, round {r}: {b} vs {a} — 95% intervals do not overlap")
    return notes


def _config_fields(cls: type[BaseModel], options: dict[str, Any]) -> dict[str, Any]:
    """The options this testbed's config knows (``monitor_fallback`` only where the field exists)."""
    unknown = set(options) - set(cls.model_fields)
    if unknown:
        raise DefenseError(f"{cls.__name__} has no field {', '.join(sorted(unknown))} in this atp_graph version")
    return options


def _run_one(
    v: Variant,
    testbed: str,
    cfg: CompareConfig,
    policy: Policy | SurrogateModel,
    out: Path | None,
    progress: bool,
    resume: bool = False,
) -> dict[str, Any]:
    """One variant on one testbed (continuing its run folder when ``resume`` finds one); the run's summary."""
    from atp_graph.testbeds import (
        PAPER_GRID,
        DiffuseConfig,
        ExploreConfig,
        ToolsConfig,
        run_diffuse,
        run_explore,
        run_tools,
    )

    sub = out / v.name / testbed if out else None
    run_cfg: Any
    if testbed in ("explore", "tools"):
        cls, run = (ExploreConfig, run_explore) if testbed == "explore" else (ToolsConfig, run_tools)
        run_cfg = cls(
            scenarios=cfg.scenarios,
            model=v.model,
            rounds=cfg.rounds,
            limit=cfg.limit,
            seed=cfg.seed,
            decision=cfg.decision,
            **_config_fields(cls, v.options),
        )
    else:
        grid = {**PAPER_GRID, "scenarios": cfg.games}
        if cfg.rounds:
            grid["rounds"] = cfg.rounds
        run_cfg = DiffuseConfig(
            **grid, model=v.model, seed=cfg.seed, decision=cfg.decision, **_config_fields(DiffuseConfig, v.options)
        )
        run = run_diffuse
    if resume and sub is not None and (sub / "config.json").exists():
        from atp_graph.run import RunDir

        if RunDir.read_config(sub, kind=testbed)[testbed] != run_cfg.model_dump(mode="json"):
            raise DefenseError(f"{sub}: holds a {testbed} run with other settings; use another --out")
        return run(run_cfg, policy=policy, resume=sub, progress=progress).summary
    return run(run_cfg, policy=policy, out=sub, progress=progress).summary


def run_compare(
    cfg: CompareConfig,
    *,
    out: str | Path | None = None,
    load: Callable[[str], Policy | SurrogateModel] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> CompareResult:
    """Run every variant on the chosen testbed(s) with the same items, seeds and rounds; tabulate and plot.

    Args:
        cfg: The variants and the protocol.
        out: The comparison's run folder: ``<variant>/<testbed>/`` per run, plus ``table.md``, ``compare.json``
            and ``<testbed>.png``. ``None`` keeps everything in memory. A new comparison needs a new or empty
            folder (:func:`defenses.variant.check_new_folder`), and removes what it wrote if it stops on a user
            error (a model that does not load, say).
        load: Builds the decision maker of a model spec (default :func:`atp_graph.policies.load_model`); called
            once per distinct spec.
        progress: Show progress bars.
        resume: Continue the runs already in ``out`` (an interrupted comparison): each variant's run resumes from
            its last complete round, and ends as a straight run would.
    """
    variants = [parse_variant(t) for t in cfg.variants]  # every variant checked before anything is written
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise DefenseError(f"variant names must be distinct, got {', '.join(names)}")
    if load is None:
        from atp_graph.policies import load_model

        load = load_model
    testbeds = ["explore", "diffuse"] if cfg.testbed == "both" else [cfg.testbed]
    path = Path(out) if out is not None else None
    fresh = path if path is not None and not resume else None  # a new comparison's folder
    existed = fresh is not None and check_new_folder(fresh, "a comparison").exists()
    summaries: dict[str, dict[str, Any]] = {v.name: {} for v in variants}
    cache: dict[str, Policy | SurrogateModel] = {}
    try:
        for i, v in enumerate(variants):
            if v.model not in cache:
                cache[v.model] = _load(load, v)
            for testbed in testbeds:
                summaries[v.name][testbed] = _run_one(v, testbed, cfg, cache[v.model], path, progress, resume)
            if all(later.model != v.model for later in variants[i + 1 :]):
                cache.pop(v.model, None)  # free a model no later variant needs
        return _report(cfg, variants, testbeds, summaries, path)
    except (UserError, ValidationError):
        if fresh is not None:
            _remove_written(fresh, existed)
        raise


def _remove_written(path: Path, existed: bool) -> None:
    """Remove what a failed new comparison wrote (the folder was new, or empty, when it started): no half-written
    comparison is left behind."""
    with contextlib.suppress(OSError):
        for child in [path] if not existed else list(path.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            elif child is not path:
                child.unlink(missing_ok=True)


def _load(load: Callable[[str], Policy | SurrogateModel], v: Variant) -> Policy | SurrogateModel:
    """The decision maker of a variant; a model that cannot be loaded is one line naming the variant and its spec."""
    try:
        return load(v.model)
    except (OSError, ValueError) as e:  # ValueError: also every UserError; transformers' damaged-model errors
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise DefenseError(f"variant {v.name} ({printable(v.model, 500)}): {printable(lines[0], 500)}") from None


def _report(
    cfg: CompareConfig,
    variants: list[Variant],
    testbeds: list[str],
    summaries: dict[str, dict[str, Any]],
    path: Path | None,
) -> CompareResult:
    """The study-style tables, the interval notes, the plots and ``compare.json``."""
    ref = variants[0]
    tables, notes, plots = [], [], {}
    for testbed in testbeds:
        if testbed == "explore":
            rows = {v.label: _rates(summaries[v.name]["explore"]["violation_rate"]) for v in variants}
            pairs = [(v.label, ref.label) for v in variants[1:]]
            title, ylabel = "Self-Interested Exploration — violation rate by round", "violation rate"
        elif testbed == "tools":
            rows = {v.label: _rates(summaries[v.name]["tools"]["forbidden_rate"]) for v in variants}
            pairs = [(v.label, ref.label) for v in variants[1:]]
            title, ylabel = "Tool-use drift — forbidden-tool rate by round", "forbidden-tool rate"
        else:
            rows, pairs = {}, []
            for v in variants:
                for cell, data in summaries[v.name]["diffuse"]["cells"].items():
                    rows[f"{v.label} · {cell}"] = _rates(data["collective_rate"])
                    if v is not ref:
                        pairs.append((f"{v.label} · {cell}", f"{ref.label} · {cell}"))
            title, ylabel = "Imitative Strategy Diffusion — collective rate by round and threshold", "collective rate"
        first = "variant · cell" if testbed == "diffuse" else "variant"
        tables.append(rate_table(rows, first=first, title=f"{title} — 95% Wilson intervals"))
        notes.extend(differences(rows, ref.label, [p for p in pairs if p[1] in rows]))
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            plots[testbed] = str(plot_rates(path / f"{testbed}.png", rows, title=title, ylabel=ylabel))
    if not notes:
        notes.append(f"No difference from {ref.label} exceeds its 95% Wilson interval (all intervals overlap).")
    for v in variants:
        if v.surrogate and v.options:
            notes.append(
                f"{v.label}: runtime defenses act on LLM agents' prompts and memory; the surrogate ignores them"
            )
    table = "\n".join(tables)
    summary = {
        "config": cfg.model_dump(),
        "reference": ref.name,
        "variants": [
            {"name": v.name, "label": v.label, "model": v.model, "options": v.options, "surrogate": v.surrogate}
            for v in variants
        ],
        "summaries": summaries,
        "notes": notes,
        "plots": plots,
    }
    if path is not None:
        (path / "table.md").write_text(table + "\n" + "\n".join(f"- {n}" for n in notes) + "\n", encoding="utf-8")
        (path / "compare.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return CompareResult(table, notes, summary, path)
