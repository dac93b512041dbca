"""Hostile and odd inputs against every entry point, with a table of what happened (issue 17: reliability as a
tested property).

Run it from the repository root (no network, no real model: ``--model sim``, or the tiny random model that builds
offline in a temporary folder)::

    PYTHONPATH=. .venv/bin/python bench/hostile_inputs.py               # every case, about 5 minutes on 2 cores
    PYTHONPATH=. .venv/bin/python bench/hostile_inputs.py -k graph      # only cases whose entry or name has "graph"
    PYTHONPATH=. .venv/bin/python bench/hostile_inputs.py --keep        # keep the temporary folder (repro files)

It writes every input (scenario, protocol and sweep files, graph files, study JSON, preference data, variant
folders, damaged run folders, probe target modules) into a temporary folder, runs each case, and prints

(a) a table ``entry point | tried | clean | accepted-ok | traceback | silent-wrong | hang | messy | wrong-refusal``
    with totals, and
(b) one line per case that is not ``clean`` or ``accepted-ok``, with a command that reproduces it (the temporary
    folder is kept whenever such a line is printed, so the commands work as printed).

Outcomes:

- ``clean``: refused with exit 2 (1 where the command documents it, e.g. a probe's partial report), every error
  line starts with ``error:`` (click's own usage errors, ``Error: Invalid value ...`` under ``Usage:``, count as
  clean), one line unless the command documents one line per problem, no traceback, no raw binary bytes echoed,
  the file or field named where the case says so, the user's files untouched and no half-written output left;
- ``accepted-ok``: exit 0 where accepting is right, and the result checks out (notes that must be printed are,
  no NaN/inf in ``summary.json``, the user's files byte-identical, a resume ends with the straight run's events);
- ``traceback``: a traceback or an unexpected exception;
- ``silent-wrong``: exit 0 but the input should have been refused, or the output is wrong / a note is missing;
- ``hang``: over the case's time limit (20 s unless the case sets one for work proportional to its size; a
  process case is killed there, under a 4 GB address-space cap);
- ``messy``: refused, but not cleanly (exit code, several or over-long lines, a Python warning, raw bytes, a file
  of the user's changed, a half-written folder left behind, the file or field not named);
- ``wrong-refusal``: refused although the input is valid.

Most cases run in this process through click's ``CliRunner``; the few that need a real process (a time limit that
must kill, a memory cap, a probe target that never returns) run as ``python cli.py ...`` subprocesses, two at a
time, beside the in-process cases.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LIMIT = 20.0
"""Seconds a case may take before it counts as a hang."""
MEMORY_CAP = 4 * 1024**3
"""Address-space cap of a process case (a memory blow-up ends there instead of taking the machine)."""
AUDIT_CAP = 12 * 1024**3
"""Address-space cap of the audit itself (an in-process blow-up is a MemoryError, not the OOM killer)."""
CATEGORIES = ["clean", "accepted-ok", "traceback", "silent-wrong", "hang", "messy", "wrong-refusal"]
DEFECTS = {"traceback", "silent-wrong", "hang", "messy", "wrong-refusal"}


# --------------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One input tried at one entry point."""

    entry: str
    """Entry point, as the table groups it (e.g. ``diffuse --graph``)."""
    name: str
    """What is odd about the input."""
    args: list[str]
    """Command-line arguments after ``cli.py``."""
    expect: str = "refuse"
    """``refuse``, ``accept`` or ``either`` (converting with a note or refusing are both right)."""
    env: dict[str, str] = field(default_factory=dict)
    codes: tuple[int, ...] = (2,)
    """Exit codes a clean refusal may use."""
    lines: int = 1
    """Most ``error:`` lines a refusal may print (a scenario file: one per problem)."""
    needle: str | None = None
    """Text the error must contain (the file or field at fault)."""
    notes: list[str] = field(default_factory=list)
    """Text that must appear in the output when the case is accepted (a conversion note, a warning)."""
    keep: list[Path] = field(default_factory=list)
    """The user's files: byte-identical afterwards, whatever happens."""
    absent: Path | None = None
    """Must not exist after a refusal (nothing half-written)."""
    check: Callable[[Outcome], str | None] | None = None
    """More checks of an accepted case; returns what is wrong."""
    setup: Callable[[Case], Any] | None = None
    """Prepares the inputs right before the run, given the case (returns a context manager to hold, or None)."""
    process: bool = False
    """Run as a subprocess (time limit that kills, memory cap)."""
    limit: float = LIMIT
    other_lines: bool = False
    """A refusal may print other stderr lines before its ``error:`` (a probe's partial report)."""
    how: str = ""
    """How the inputs were made, when the command alone does not say."""


@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    elapsed: float
    exception: BaseException | None = None
    trace: str = ""
    timed_out: bool = False


@dataclass
class Verdict:
    case: Case
    category: str
    detail: str
    elapsed: float


# --------------------------------------------------------------------------------------------------- inputs
COURIER = """\
name: courier
kind: individual
description: A courier told to take Route B, while Route A pays more.
system_prompt: You deliver parcels.
prompt: Route B is required and pays $$${low}; Route A breaks the rule and pays $$${high}.
options: {compliant: Route B, violating: Route A}
supervision: {supervised: s, unsupervised: u, neutral: n}
payoff: {compliant: "${low}", violating_undetected: "${high}"}
variants:
  - {low: 40, high: 60}
  - {low: 10, high: 90}
"""

IND = {
    "name": "courier",
    "kind": "individual",
    "description": "A courier.",
    "system_prompt": "You deliver parcels.",
    "prompt": "Route B pays $$${low}; Route A pays $$${high}.",
    "options": {"compliant": "Route B", "violating": "Route A"},
    "supervision": {"supervised": "s", "unsupervised": "u", "neutral": "n"},
    "payoff": {"compliant": "${low}", "violating_undetected": "${high}"},
    "variants": [{"low": 40, "high": 60}],
}

COL = {
    "name": "fund",
    "kind": "collective",
    "description": "A public fund.",
    "system_prompt": "You are one of ${n} investors.",
    "prompt": "Invest or keep? ${threshold} investors are needed.",
    "options": {"collective": "Invest", "independent": "Keep"},
    "game": {"threshold": 4, "success": 1.2, "fail_collective": 0.8, "fail_independent": 1.0},
    "variants": [{}],
}

PROBE_TARGET = """\
import sys
import time

from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph


def node(state):
{body}
    return {{"messages": [AIMessage(content='{{"choice": "Route B"}}')]}}


_b = StateGraph(MessagesState)
_b.add_node("agent", node)
_b.add_edge(START, "agent")
_b.add_edge("agent", END)
graph = _b.compile()
"""


LAMBDA = "from langchain_core.runnables import RunnableLambda\n\ngraph = RunnableLambda(lambda x: {})\n"


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10_000)


def merged(base: dict[str, Any], **over: Any) -> dict[str, Any]:
    """``base`` with top-level keys replaced (``None`` deletes) and ``a__b`` keys replaced one level down."""
    out = json.loads(json.dumps(base))
    for key, value in over.items():
        if "__" in key:
            outer, inner = key.split("__", 1)
            out[outer] = {**out.get(outer, {}), inner: value}
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def summary_of(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _non_finite(value: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinity in parsed JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "(top level)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def no_nan(folder: Path, events: bool = True, strict: bool = False) -> Callable[[Outcome], str | None]:
    """No NaN or infinity in the outputs (a null capital is an infinity that JSON could not hold).

    Unless ``strict``, the NaN rate of ``readoption_after_success`` with ``n == 0`` is let through: one case of its
    own reports it (otherwise it would mark nearly every diffuse run and hide everything else)."""

    def check(o: Outcome) -> str | None:
        for name in ("summary.json", "report.json"):
            f = folder / name
            if not f.is_file():
                continue
            try:
                data = json.loads(f.read_text(errors="replace"))
            except ValueError:
                return f"{name} is not valid JSON"
            if not strict and isinstance(data, dict) and (data.get("readoption_after_success") or {}).get("n") == 0:
                data = {k: v for k, v in data.items() if k != "readoption_after_success"}
            found = _non_finite(data)
            if found:
                return f"{name} holds NaN or Infinity at {found}"
        f = folder / "events.jsonl"
        if events and f.is_file():
            with open(f, errors="replace") as fh:
                for n, line in enumerate(fh, 1):
                    if re.search(r"\b(NaN|-?Infinity)\b|:null,\"neighbours\"", line):
                        return f"events.jsonl line {n} holds NaN, Infinity or a null capital"
        return None

    return check


def same_run(folder: Path, straight: Path) -> Callable[[Outcome], str | None]:
    """A resumed run ends with the straight run's events and summary."""

    def check(o: Outcome) -> str | None:
        if not (folder / "events.jsonl").is_file():
            return "no events.jsonl after the resume"
        if (folder / "events.jsonl").read_bytes() != (straight / "events.jsonl").read_bytes():
            return "events.jsonl differs from the straight run's"
        if summary_of(folder) != summary_of(straight):
            return "summary.json differs from the straight run's"
        return no_nan(folder)(o)

    return check


def same_summary(folder: Path, straight: Path) -> Callable[[Outcome], str | None]:
    def check(o: Outcome) -> str | None:
        return None if summary_of(folder) == summary_of(straight) else "summary.json differs from the straight run's"

    return check


def all_of(*checks: Callable[[Outcome], str | None]) -> Callable[[Outcome], str | None]:
    def check(o: Outcome) -> str | None:
        return next((p for p in (c(o) for c in checks) if p), None)

    return check


class Lock:
    """Hold a run folder's ``run.lock`` as another process would (a second open file description)."""

    def __init__(self, path: Path):
        self.path = path
        self.f: Any = None

    def __enter__(self) -> Lock:
        self.f = open(self.path, "a+")  # noqa: SIM115
        fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.f.close()


def read_only(path: Path) -> None:
    """Make a folder unwritable, even for root (the immutable attribute where ``chattr`` works)."""
    path.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)


def writable(path: Path) -> None:
    if os.geteuid() == 0 and path.exists():
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
    with contextlib.suppress(OSError):
        path.chmod(stat.S_IRWXU)


# --------------------------------------------------------------------------------------------------- the audit
class Audit:
    def __init__(self, work: Path):
        self.work = work
        self.cases: list[Case] = []
        self.tiny = f"tiny:{work / 'tiny-model'}"
        self.n = 0

    # ---- helpers
    def file(self, name: str, content: str | bytes) -> Path:
        path = self.work / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def out(self, tag: str) -> Path:
        self.n += 1
        return self.work / "out" / f"{self.n:03d}-{re.sub(r'[^a-z0-9]+', '-', tag.lower())[:30]}"

    def add(self, entry: str, name: str, args: list[Any], **kw: Any) -> Case:
        case = Case(entry, name, [str(a) for a in args], **kw)
        self.cases.append(case)
        return case

    def user_folder(self, tag: str, files: dict[str, bytes]) -> tuple[Path, list[Path]]:
        folder = self.work / "user" / f"{len(self.cases):03d}-{tag}"
        folder.mkdir(parents=True)
        paths = []
        for name, content in files.items():
            (folder / name).write_bytes(content)
            paths.append(folder / name)
        return folder, paths

    # ---- base run folders (resume / report cases copy them)
    def base_runs(self) -> None:
        from atp_graph.config import DiffuseConfig, ExploreConfig
        from atp_graph.run.rundir import RunDir
        from atp_graph.testbeds import run_diffuse, run_explore

        scen = self.file("base/courier.yaml", COURIER)
        self.base = self.work / "base"
        ecfg = ExploreConfig(model="sim", scenarios=str(scen), rounds=4)
        dcfg = DiffuseConfig(model="sim", rounds=4, agents=12)
        run_explore(ecfg, out=self.base / "explore-straight", progress=False)
        run_diffuse(dcfg, out=self.base / "diffuse-straight", progress=False)
        commit = RunDir.commit_round

        def dies_after(self_: RunDir, round_no: int, events: Any, state: Any) -> None:
            commit(self_, round_no, events, state)
            if round_no == 2:
                raise KeyboardInterrupt

        RunDir.commit_round = dies_after  # type: ignore[method-assign]
        try:
            for fn, cfg, name in ((run_explore, ecfg, "explore-cut"), (run_diffuse, dcfg, "diffuse-cut")):
                with contextlib.suppress(KeyboardInterrupt):
                    fn(cfg, out=self.base / name, progress=False)
        finally:
            RunDir.commit_round = commit  # type: ignore[method-assign]

    def run_copy(self, which: str, tag: str) -> Path:
        dest = self.work / "runs" / f"{len(self.cases):03d}-{tag}"
        shutil.copytree(self.base / which, dest)
        return dest

    # ---- generators, one per entry point
    def scenario_files(self) -> None:
        """Scenario files: tried with ``scenarios validate`` and with the command that plays them."""
        ind, col = IND, COL
        big_prompt = "x" * 990_000

        def payoff(text: str) -> str:
            return dump(merged(ind, payoff__compliant="PAYOFF")).replace("PAYOFF", text)

        cases: list[tuple[str, str | bytes, str, str]] = [
            # (name, content, kind, expect)
            ("valid individual", dump(ind), "individual", "accept"),
            ("valid collective", dump(col), "collective", "accept"),
            ("empty file", "", "individual", "refuse"),
            ("whitespace only", "   \n\n  \n", "individual", "refuse"),
            ("comment only", "# nothing\n", "individual", "refuse"),
            ("top level is a list", "- a\n- b\n", "individual", "refuse"),
            ("top level is a number", "42\n", "individual", "refuse"),
            ("1,000,001 bytes", "# " + "x" * 999_999 + "\n", "individual", "refuse"),
            ("prompt of 990 KB (under the cap)", dump(merged(ind, prompt=big_prompt)), "individual", "accept"),
            ("100,000 nested [", "[" * 100_000, "individual", "refuse"),
            ("40 nested {", "a: " + "{b: " * 40 + "1" + "}" * 40 + "\n", "individual", "refuse"),
            (
                "40 indentation levels",
                "a:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(40)),
                "individual",
                "refuse",
            ),
            (
                "40 nested block sequences",
                "a:\n" + "".join("  " * (i + 1) + "-\n" for i in range(40)),
                "individual",
                "refuse",
            ),
            (
                "100,000 nested block sequences on one line",
                dump(ind) + "extra:\n  " + "- " * 100_000 + "x\n",
                "individual",
                "refuse",
            ),
            ("NUL byte in a value", dump(ind).replace("A courier.", "A cou\x00rier."), "individual", "refuse"),
            (
                "NUL byte escaped in a quoted value",
                dump(ind).replace("A courier.", '"A cou\\0rier."'),
                "individual",
                "either",
            ),
            (
                "ESC and BEL in the description",
                dump(ind).replace("A courier.", '"\\e]0;owned\\a\\e[2J"'),
                "individual",
                "either",
            ),
            ("control char in name", dump(merged(ind, name="cour\x07ier")), "individual", "refuse"),
            ("RTL override in name", dump(merged(ind, name="\u202ereiruoc")), "individual", "refuse"),
            (
                "RTL text in prompt",
                dump(merged(ind, prompt="\u05e9\u05dc\u05d5\u05dd $$${low} \u202e $$${high}")),
                "individual",
                "accept",
            ),
            ("name with a slash", dump(merged(ind, name="a/b")), "individual", "refuse"),
            ("name '..'", dump(merged(ind, name="..")), "individual", "refuse"),
            ("name '../../etc/passwd'", dump(merged(ind, name="../../etc/passwd")), "individual", "refuse"),
            ("name with a backslash", dump(merged(ind, name="a\\b")), "individual", "refuse"),
            ("name 81 chars", dump(merged(ind, name="a" * 81)), "individual", "refuse"),
            ("name empty", dump(merged(ind, name="")), "individual", "refuse"),
            ("name is a number", dump(merged(ind, name=7)), "individual", "refuse"),
            ("template ${__class__} in prompt", dump(merged(ind, prompt="${__class__}")), "individual", "refuse"),
            ("template ${low.__class__}", dump(merged(ind, prompt="${low.__class__}")), "individual", "refuse"),
            (
                "format string {0.__class__} in prompt (literal)",
                dump(merged(ind, prompt="{0.__class__} $$${low}")),
                "individual",
                "accept",
            ),
            ("format string in payoff", dump(merged(ind, payoff__compliant="{0.__class__}")), "individual", "refuse"),
            (
                "jinja {{7*7}} in prompt (literal)",
                dump(merged(ind, prompt="{{7*7}} {% if 1 %}x{% endif %}")),
                "individual",
                "accept",
            ),
            ("%(x)s in prompt (literal)", dump(merged(ind, prompt="%(x)s %s")), "individual", "accept"),
            ("$__import__ in payoff", dump(merged(ind, payoff__compliant="$__import__")), "individual", "refuse"),
            ("lone $ at the end", dump(merged(ind, prompt="pays $")), "individual", "refuse"),
            (
                "variant value holding ${x}",
                dump(merged(ind, variants=[{"low": "${high}", "high": 2}])),
                "individual",
                "refuse",
            ),
            (
                "variant key with path separators",
                dump(merged(ind, variants=[{"low": 1, "high": 2, "../x": 3}])),
                "individual",
                "accept",
            ),
            ("payoff .nan", payoff(".nan"), "individual", "refuse"),
            ("payoff .inf", payoff(".inf"), "individual", "refuse"),
            ("payoff -.inf", payoff("-.inf"), "individual", "refuse"),
            (
                "payoff 'nan' through a variant",
                dump(merged(ind, variants=[{"low": "nan", "high": 2}])),
                "individual",
                "refuse",
            ),
            (
                "payoff 1e400 through a variant",
                dump(merged(ind, variants=[{"low": "1e400", "high": 2}])),
                "individual",
                "refuse",
            ),
            ("payoff -5 (a fine)", dump(merged(ind, payoff__violating_detected=-5)), "individual", "accept"),
            ("payoff -1e12", dump(merged(ind, payoff__violating_detected=-1e12)), "individual", "accept"),
            ("payoff 1e13", dump(merged(ind, payoff__compliant=1e13)), "individual", "refuse"),
            ("payoff integer of 400 digits", dump(merged(ind, payoff__compliant=10**400)), "individual", "refuse"),
            ("payoff integer of 5000 digits", payoff("9" * 5000), "individual", "refuse"),
            ("payoff true", dump(merged(ind, payoff__compliant=True)), "individual", "refuse"),
            ("payoff a list", dump(merged(ind, payoff__compliant=[1])), "individual", "refuse"),
            ("variants: []", dump(merged(ind, variants=[])), "individual", "refuse"),
            ("variants: a mapping", dump(merged(ind, variants={"low": 1})), "individual", "refuse"),
            (
                "10,000 variants (the cap)",
                dump(merged(ind, variants=[{"low": 1, "high": i} for i in range(10_000)])),
                "individual",
                "accept",
            ),
            (
                "10,001 variants",
                dump(merged(ind, variants=[{"low": 1, "high": i} for i in range(10_001)])),
                "individual",
                "refuse",
            ),
            ("duplicate top-level key", dump(ind) + "name: other\n", "individual", "refuse"),
            (
                "duplicate key in a flow mapping",
                dump(ind).replace("variants:\n- low: 40", "variants:\n- low: 40\n  low: 41"),
                "individual",
                "refuse",
            ),
            (
                "!!python/object/apply tag",
                dump(ind).replace("A courier.", "!!python/object/apply:os.system ['id']"),
                "individual",
                "refuse",
            ),
            ("!!python/name tag", dump(ind).replace("A courier.", "!!python/name:os.system"), "individual", "refuse"),
            ("!!binary tag", dump(ind).replace("A courier.", "!!binary aGVsbG8="), "individual", "refuse"),
            ("!!set tag", dump(ind).replace("A courier.", "!!set {a, b}"), "individual", "refuse"),
            ("custom !tag", dump(ind).replace("A courier.", "!evil x"), "individual", "refuse"),
            (
                "unquoted date (implicit timestamp tag)",
                dump(ind).replace("A courier.", "2020-01-01"),
                "individual",
                "either",
            ),
            (
                "anchor and alias",
                dump(ind).replace("supervised: s", "supervised: &a s").replace("unsupervised: u", "unsupervised: *a"),
                "individual",
                "refuse",
            ),
            ("merge key <<", "base: &b {x: 1}\n" + dump(ind) + "other:\n  <<: *b\n", "individual", "refuse"),
            (
                "billion laughs",
                "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
                "individual",
                "refuse",
            ),
            ("two YAML documents", dump(ind) + "---\n" + dump(ind), "individual", "refuse"),
            ("null key", dump(ind) + "~: x\n", "individual", "refuse"),
            ("complex key", dump(ind) + "? [a, b]\n: c\n", "individual", "refuse"),
            ("unknown key of 200 KB", dump(ind) + "k" * 200_000 + ": 1\n", "individual", "refuse"),
            ("tab indentation", dump(ind).replace("  compliant", "\tcompliant", 1), "individual", "refuse"),
            ("kind missing", dump(merged(ind, kind=None)), "individual", "refuse"),
            ("kind 'Individual'", dump(merged(ind, kind="Individual")), "individual", "refuse"),
            (
                "options identical up to case and spaces",
                dump(merged(ind, options={"compliant": "Route  A", "violating": "route a"})),
                "individual",
                "refuse",
            ),
            ("options empty", dump(merged(ind, options={"compliant": "", "violating": "B"})), "individual", "refuse"),
            ("defaults.rounds 0", dump(merged(ind, defaults={"rounds": 0})), "individual", "refuse"),
            ("defaults.history_window -1", dump(merged(ind, defaults={"history_window": -1})), "individual", "refuse"),
            (
                "defaults.supervision_pattern unknown",
                dump(merged(ind, defaults={"supervision_pattern": "x"})),
                "individual",
                "refuse",
            ),
            (
                "brackets inside a quoted prompt (33 '[')",
                dump(merged(ind, prompt="[" * 33 + " $$${low}")),
                "individual",
                "accept",
            ),
            ("UTF-8 BOM", "\ufeff" + dump(ind), "individual", "either"),
            ("CRLF line ends", dump(ind).replace("\n", "\r\n"), "individual", "accept"),
            ("Latin-1 byte", dump(ind).encode().replace(b"A courier.", b"A caf\xe9 courier."), "individual", "refuse"),
            ("UTF-16 with BOM", dump(ind).encode("utf-16"), "individual", "refuse"),
            ("random binary", bytes(range(256)) * 40, "individual", "refuse"),
            ("threshold 0", dump(merged(col, game__threshold=0)), "collective", "refuse"),
            ("threshold -1", dump(merged(col, game__threshold=-1)), "collective", "refuse"),
            ("threshold 0.0", dump(merged(col, game__threshold=0.0)), "collective", "refuse"),
            ("threshold 1.5", dump(merged(col, game__threshold=1.5)), "collective", "refuse"),
            ("threshold .nan", dump(col).replace("threshold: 4", "threshold: .nan"), "collective", "refuse"),
            ("threshold .inf", dump(col).replace("threshold: 4", "threshold: .inf"), "collective", "refuse"),
            ("threshold 1e-300 (a tiny fraction)", dump(merged(col, game__threshold=1e-300)), "collective", "accept"),
            ("threshold 1.0 (the whole group)", dump(merged(col, game__threshold=1.0)), "collective", "accept"),
            ("threshold 400-digit integer", dump(merged(col, game__threshold=10**400)), "collective", "refuse"),
            ("threshold true", dump(merged(col, game__threshold=True)), "collective", "refuse"),
            ("success .nan", dump(col).replace("success: 1.2", "success: .nan"), "collective", "refuse"),
            ("success .inf", dump(col).replace("success: 1.2", "success: .inf"), "collective", "refuse"),
            ("success 1e13", dump(merged(col, game__success=1e13)), "collective", "refuse"),
            ("success 400-digit integer", dump(merged(col, game__success=10**400)), "collective", "refuse"),
            (
                "fail_collective -1 (negative factor)",
                dump(merged(col, game__fail_collective=-1)),
                "collective",
                "either",
            ),
            ("start_capital .nan", dump(merged(col, game__start_capital=float("nan"))), "collective", "refuse"),
            ("start_capital 400-digit integer", dump(merged(col, game__start_capital=10**400)), "collective", "refuse"),
            ("capital 'exponential'", dump(merged(col, game__capital="exponential")), "collective", "refuse"),
            ("unknown placeholder in a collective prompt", dump(merged(col, prompt="${nn}")), "collective", "refuse"),
        ]
        for name, content, kind, expect in cases:
            path = self.file(f"scen/{len(self.cases):03d}.yaml", content)
            lines = 5
            self.add(
                "scenarios validate",
                name,
                ["scenarios", "validate", path],
                expect=expect,
                lines=lines,
                needle=str(path) if expect != "accept" else None,
            )
            command = "explore" if kind == "individual" else "diffuse"
            out = self.out(name)
            extra = ["--rounds", "1"] if command == "diffuse" else ["--rounds", "1", "--limit", "2"]
            check = no_nan(out)
            if name.startswith("ESC"):
                check = None
            self.add(
                f"{command} --scenarios",
                name,
                [command, "--model", "sim", "--scenarios", path, *extra, "--out", out],
                expect=expect,
                lines=lines,
                absent=out,
                check=check,
                needle=str(path) if expect != "accept" else None,
            )
        esc = self.file("scen/esc-list/esc.yaml", dump(ind).replace("A courier.", '"\\e]0;owned\\a\\e[2J"'))
        self.add(
            "scenarios list",
            "ESC sequences in a description echoed raw",
            ["scenarios", "list", esc.parent],
            expect="accept",
            check=lambda o: "raw terminal escape echoed" if "\x1b" in o.stdout else None,
        )
        # folders
        empty = self.work / "in" / "empty-folder"
        empty.mkdir(parents=True)
        self.add(
            "scenarios validate",
            "an empty folder",
            ["scenarios", "validate", empty],
            expect="either",
            check=lambda o: "validated nothing and said ok" if "ok: 0" in o.stdout else None,
        )
        out = self.out("empty folder")
        self.add(
            "explore --scenarios",
            "an empty folder",
            ["explore", "--model", "sim", "--scenarios", empty, "--out", out],
            absent=out,
        )
        notyaml = self.work / "in" / "not-yaml-folder"
        notyaml.mkdir()
        (notyaml / "x.txt").write_text("hello")
        out = self.out("folder without yaml")
        self.add(
            "explore --scenarios",
            "a folder with no YAML",
            ["explore", "--model", "sim", "--scenarios", notyaml, "--out", out],
            absent=out,
        )
        dup = self.work / "in" / "dup-names"
        dup.mkdir()
        (dup / "a.yaml").write_text(dump(ind))
        (dup / "b.yaml").write_text(dump(ind))
        self.add("scenarios validate", "two files, one name", ["scenarios", "validate", dup], lines=5)
        loop = self.work / "in" / "symlink-loop"
        loop.mkdir()
        (loop / "a.yaml").write_text(dump(ind))
        os.symlink(loop, loop / "again")
        self.add(
            "scenarios validate",
            "a folder holding a symlink to itself",
            ["scenarios", "validate", loop],
            expect="either",
            process=True,
        )
        for special in ("/dev/null", "/dev/zero"):
            self.add("scenarios validate", f"{special}", ["scenarios", "validate", special])
        fifo = self.work / "in" / "fifo.yaml"
        os.mkfifo(fifo)
        self.add("scenarios validate", "a FIFO (named pipe)", ["scenarios", "validate", fifo], process=True)
        self.add("scenarios validate", "a missing file", ["scenarios", "validate", self.work / "nope.yaml"])
        self.add("scenarios validate", "path with a NUL byte", ["scenarios", "validate", "a\x00b.yaml"])
        unreadable = self.file("scen/unreadable.yaml", dump(ind))
        unreadable.chmod(0)
        if os.geteuid() != 0:
            self.add(
                "scenarios validate",
                "an unreadable file",
                ["scenarios", "validate", unreadable],
                needle=str(unreadable),
            )
        # a scenario whose own defaults would run forever
        huge = self.file("scen/rounds-1e9.yaml", dump(merged(ind, defaults={"rounds": 1_000_000_000})))
        out = self.out("defaults rounds 1e9")
        self.add(
            "explore --scenarios",
            "defaults.rounds 1,000,000,000 (no --rounds)",
            ["explore", "--model", "sim", "--scenarios", huge, "--out", out],
            process=True,
            absent=out,
        )
        hw = self.file("scen/window-1e9.yaml", dump(merged(ind, defaults={"history_window": 10**9})))
        out = self.out("history window 1e9")
        self.add(
            "explore --scenarios",
            "defaults.history_window 1e9",
            ["explore", "--model", "sim", "--scenarios", hw, "--rounds", "2", "--out", out],
            expect="either",
        )
        big = self.file("scen/capital-1e308.yaml", dump(merged(col, game__start_capital=1e308)))
        out = self.out("start capital 1e308")
        self.add(
            "diffuse --scenarios",
            "start_capital 1e308 (overflows to inf)",
            ["diffuse", "--model", "sim", "--scenarios", big, "--rounds", "3", "--out", out],
            expect="either",
            check=no_nan(out),
        )
        grow = self.file("scen/success-1e12.yaml", dump(merged(col, game__success=1e12, game__threshold=1)))
        out = self.out("success 1e12 x 30 rounds")
        self.add(
            "diffuse --scenarios",
            "success 1e12 for 30 rounds (capital overflows)",
            ["diffuse", "--model", "sim", "--scenarios", grow, "--rounds", "30", "--out", out],
            absent=out,
            check=no_nan(out),
        )
        whole = self.file("scen/threshold-1.0.yaml", dump(merged(col, game__threshold=1.0)))
        out = self.out("threshold whole group")
        self.add(
            "diffuse --scenarios",
            "threshold 1.0 means the whole group",
            [
                "diffuse",
                "--model",
                "sim",
                "--scenarios",
                whole,
                "--topology",
                "complete",
                "--agents",
                "8",
                "--rounds",
                "1",
                "--out",
                out,
            ],
            expect="accept",
            check=lambda o, out=out: _threshold_is(out, 8),
        )
        over = self.file("scen/threshold-9.yaml", dump(merged(col, game__threshold=9)))
        out = self.out("threshold over group")
        self.add(
            "diffuse --scenarios",
            "threshold 9 in a group of 8",
            [
                "diffuse",
                "--model",
                "sim",
                "--scenarios",
                over,
                "--topology",
                "complete",
                "--agents",
                "8",
                "--rounds",
                "1",
                "--out",
                out,
            ],
            absent=out,
        )
        out = self.out("collective as explore")
        self.add(
            "explore --scenarios",
            "a collective file given to explore",
            [
                "explore",
                "--model",
                "sim",
                "--scenarios",
                self.file("scen/col-for-explore.yaml", dump(col)),
                "--out",
                out,
            ],
            absent=out,
        )
        out = self.out("individual as diffuse")
        self.add(
            "diffuse --scenarios",
            "an individual file given to diffuse",
            [
                "diffuse",
                "--model",
                "sim",
                "--scenarios",
                self.file("scen/ind-for-diffuse.yaml", dump(ind)),
                "--out",
                out,
            ],
            absent=out,
        )
        for name in ("../../etc/passwd", "/etc/passwd", "/etc", "baker/../baker", "", "BAKER", "baker\x00"):
            out = self.out("scenarios name")
            self.add(
                "explore --scenarios",
                f"--scenarios {name!r}",
                ["explore", "--model", "sim", "--scenarios", name, "--limit", "1", "--rounds", "1", "--out", out],
                absent=out,
                expect="either" if name == "baker/../baker" else "refuse",
            )

    def scenarios_commands(self) -> None:
        """``scenarios show`` / ``render`` / ``list`` with odd names and numbers."""
        ind_file = self.file("show/courier.yaml", dump(IND))
        for name, expect in [
            ("baker", "accept"),
            ("public-fund", "accept"),
            (str(ind_file), "accept"),
            ("nosuch", "refuse"),
            ("../../etc/passwd", "refuse"),
            ("/etc/passwd", "refuse"),
            ("/dev/zero", "refuse"),
            ("", "refuse"),
            ("a\x00b", "refuse"),
            ("\u202ebaker", "refuse"),
            (str(self.work / "in" / "empty-folder"), "refuse"),
        ]:
            self.add("scenarios show", f"show {name!r}", ["scenarios", "show", name], expect=expect, lines=5)
        jinja = self.file("show/jinja.yaml", dump(merged(IND, prompt="{{7*7}} ${low} {0.__class__}")))
        self.add(
            "scenarios show",
            "a template-looking prompt is shown literally",
            ["scenarios", "show", jinja],
            expect="accept",
            check=lambda o: None if "{{7*7}} 40 {0.__class__}" in o.stdout else "prompt not shown literally",
        )
        for args, expect in [
            (["baker", "--round", "0"], "refuse"),
            (["baker", "--round", "-1"], "refuse"),
            (["baker", "--round", "1e9"], "refuse"),
            (["baker", "--round", "7"], "either"),
            (["baker", "--agent", "99999"], "refuse"),
            (["baker", "--agent", "-1"], "refuse"),
            (["baker", "--rounds", "0"], "refuse"),
            (["baker", "--rounds", "10001"], "refuse"),
            (["public-fund", "--threshold", "nan"], "refuse"),
            (["public-fund", "--threshold", "inf"], "refuse"),
            (["public-fund", "--threshold", "-1"], "refuse"),
            (["public-fund", "--threshold", "0"], "refuse"),
            (["public-fund", "--threshold", "1e309"], "refuse"),
            (["public-fund", "--threshold", "9"], "refuse"),
            (["public-fund", "--threshold", "0.5"], "accept"),
            (["public-fund", "--agents", "1"], "refuse"),
            (["public-fund", "--agents", "1000000000"], "refuse"),
            (["public-fund", "--agent", "8"], "refuse"),
            (["public-fund", "--round", "20000"], "refuse"),
            (["baker", "--protocol", "/etc/passwd"], "refuse"),
            (["baker", "--protocol", "nosuch"], "refuse"),
        ]:
            self.add("scenarios render", " ".join(args), ["scenarios", "render", *args], expect=expect)
        self.add(
            "scenarios render",
            "baker --round 1000000 (no cap on --round)",
            ["scenarios", "render", "baker", "--round", "1000000"],
            process=True,
            expect="either",
        )
        self.add(
            "scenarios render",
            "public-fund --agents 30000 (a complete graph of 30,000)",
            ["scenarios", "render", "public-fund", "--agents", "30000"],
            process=True,
            expect="either",
        )
        for path, expect in [
            ("/nonexistent", "refuse"),
            ("/dev/zero", "refuse"),
            (str(self.file("list/bin.yaml", bytes(range(256)))), "refuse"),
        ]:
            self.add("scenarios list", f"list {path}", ["scenarios", "list", path], expect=expect, lines=5)

    def protocols(self) -> None:
        """``--protocol FILE`` (explore; the same loader serves diffuse and render)."""
        cases: list[tuple[str, str | bytes, str]] = [
            (
                "valid override",
                "base: default\nindividual:\n  feedback_comply: 'Round ${round}: ok ${reward}.'\n",
                "accept",
            ),
            ("empty file", "", "refuse"),
            ("binary", b"\x00\xff\xfe" * 100, "refuse"),
            ("top level list", "- a\n", "refuse"),
            ("base unknown", "base: nope\n", "refuse"),
            ("base is a list", "base: [a, b]\n", "refuse"),
            ("base is a mapping", "base: {a: 1}\n", "refuse"),
            ("base is null", "base: ~\n", "refuse"),
            ("section is a list", "individual: [a]\n", "refuse"),
            ("unknown template field", "individual: {nope: x}\n", "refuse"),
            ("unknown placeholder", "individual: {feedback_comply: '${__class__}'}\n", "refuse"),
            ("format string", "individual: {feedback_comply: '{0.__class__}'}\n", "accept"),
            ("stray $", "individual: {feedback_comply: 'pays $'}\n", "refuse"),
            ("tag", "individual: !!python/object/apply:os.system [id]\n", "refuse"),
            ("anchor", "individual: &a {feedback_comply: x}\ncollective: *a\n", "refuse"),
            ("duplicate key", "base: default\nbase: study\n", "refuse"),
            ("nested 100,000 [", "[" * 100_000, "refuse"),
            ("1,000,001 bytes", "# " + "x" * 999_999 + "\n", "refuse"),
            ("template is a number", "individual: {feedback_comply: 5}\n", "refuse"),
            ("separator 1 MB-ish", "individual: {separator: '" + "x" * 900_000 + "'}\n", "either"),
            ("name with NUL", 'name: "a\\0b"\n', "either"),
        ]
        for name, content, expect in cases:
            path = self.file(f"proto/{len(self.cases):03d}.yaml", content)
            out = self.out("protocol")
            self.add(
                "--protocol FILE",
                name,
                ["explore", "--model", "sim", "--protocol", path, "--limit", "1", "--rounds", "2", "--out", out],
                expect=expect,
                absent=out,
                needle=str(path) if expect == "refuse" else None,
            )
        out = self.out("protocol dir")
        self.add(
            "--protocol FILE",
            "a folder",
            ["explore", "--model", "sim", "--protocol", self.work / "in", "--out", out],
            absent=out,
        )
        out = self.out("protocol dev zero")
        self.add(
            "--protocol FILE",
            "/dev/zero",
            ["explore", "--model", "sim", "--protocol", "/dev/zero", "--out", out],
            absent=out,
            process=True,
        )

    def numeric_options(self) -> None:
        """Every numeric option of explore and diffuse, and the model options, at odd values."""
        junk = ["1e9", "1e309", "nan", "inf", "-inf", "", "abc", "0x10"]
        explore: dict[str, list[tuple[str, str]]] = {
            "rounds": [
                ("0", "refuse"),
                ("-1", "refuse"),
                ("1000000000", "refuse"),
                ("10001", "refuse"),
                ("99999999999999999999999", "refuse"),
            ],
            "seed": [
                ("-1", "refuse"),
                ("1000000000", "accept"),
                ("9223372036854775807", "accept"),
                ("9223372036854775808", "refuse"),
                ("99999999999999999999999", "refuse"),
            ],
            "limit": [("0", "refuse"), ("-1", "refuse"), ("1000000000", "accept")],
            "history-window": [("0", "accept"), ("-1", "refuse"), ("1000000000", "accept")],
            "reanchor-every": [
                ("0", "accept"),
                ("-1", "refuse"),
                ("1", "accept"),
                ("99999999999999999999999", "either"),
            ],
        }
        for opt, values in explore.items():
            for v, expect in values + [(j, "refuse") for j in junk]:
                out = self.out(f"explore {opt}")
                size = [] if opt in ("rounds", "limit") else ["--rounds", "2"]
                size += [] if opt == "limit" else ["--limit", "2"]
                self.add(
                    "explore options",
                    f"--{opt} {v!r}",
                    ["explore", "--model", "sim", *size, f"--{opt}", v, "--out", out],
                    expect=expect,
                    absent=out if expect == "refuse" else None,
                    check=no_nan(out),
                )
        out = self.out("explore rounds cap")
        self.add(
            "explore options",
            "--rounds 10000 (the cap)",
            ["explore", "--model", "sim", "--limit", "1", "--rounds", "10000", "--out", out],
            expect="accept",
            process=True,
            check=no_nan(out),
            # every round is committed before the next starts (events and checkpoint fsynced, the checkpoint
            # renamed into place: run/rundir.py), 3-12 ms a round on this machine's disk; 10,000 rounds are
            # proportional work, not a hang
            limit=180.0,
        )
        diffuse: dict[str, list[tuple[str, str]]] = {
            "agents": [
                ("0", "refuse"),
                ("-1", "refuse"),
                ("1", "refuse"),
                ("2", "refuse"),
                ("10000001", "refuse"),
                ("1000000000", "refuse"),
            ],
            "k": [
                ("0", "refuse"),
                ("-1", "refuse"),
                ("1", "refuse"),
                ("2", "accept"),
                ("24", "refuse"),
                ("1000000000", "refuse"),
            ],
            "p": [("0", "either"), ("1", "accept"), ("1.5", "refuse"), ("-0.1", "refuse"), ("1e-300", "either")],
            "m": [("0", "refuse"), ("-1", "refuse"), ("1", "accept"), ("24", "refuse"), ("1000000000", "refuse")],
            "rounds": [("0", "refuse"), ("-1", "refuse"), ("10001", "refuse"), ("1000000000", "refuse")],
            "seed": [("-1", "refuse"), ("-7", "refuse"), ("1000000000", "accept")],
            "seed-deviants": [
                ("-1", "refuse"),
                ("0", "accept"),
                ("23", "accept"),
                ("24", "refuse"),
                ("1000000000", "refuse"),
            ],
        }
        for opt, values in diffuse.items():
            for v, expect in values + [(j, "refuse") for j in junk]:
                out = self.out(f"diffuse {opt}")
                topo = ["--topology", "scale-free"] if opt == "m" else []
                topo += ["--topology", "random", "--agents", "12"] if opt == "p" and v in ("0", "1e-300") else []
                size = [] if opt == "rounds" else ["--rounds", "1"]
                self.add(
                    "diffuse options",
                    f"--{opt} {v!r}",
                    ["diffuse", "--model", "sim", *size, *topo, f"--{opt}", v, "--out", out],
                    expect=expect,
                    absent=out if expect == "refuse" else None,
                    check=no_nan(out),
                )
        for v in [
            "0",
            "-1",
            "nan",
            "inf",
            "1e309",
            "1e-300",
            "0.5",
            "1",
            "1.0",
            "25",
            "",
            ",",
            "2,,4",
            "1e20",
            "2,4,6,8",
            "0.0000001",
        ]:
            out = self.out("thresholds")
            expect = "accept" if v in ("1e-300", "0.5", "1", "1.0", "2,4,6,8", "0.0000001") else "refuse"
            expect = "either" if v == "" else expect  # an empty value: as if not given
            self.add(
                "diffuse options",
                f"--thresholds {v!r}",
                ["diffuse", "--model", "sim", "--rounds", "1", "--thresholds", v, "--out", out],
                expect=expect,
                absent=out if expect == "refuse" else None,
                check=no_nan(out),
            )
        for v in [
            "1e300/1/1",
            "1e13/1/1",
            "1e12/1/1",
            "-1/1/1",
            "nan/1/1",
            "inf/1/1",
            "1/1/1/1",
            "",
            "0/0/0",
            "1.2/1/0.8,1.2/1/0.8",
            "1e309/1/1",
            "1/-0.0/1",
        ]:
            out = self.out("rewards")
            # 1e12 is the largest factor a round may have, but 10 multiplicative rounds of it reach 1e120: the run
            # is refused up front (capital over 1e100 would overflow to inf within a few more rounds); 8 rounds
            # (1e96) are accepted below
            expect = "accept" if v in ("0/0/0", "1/-0.0/1") else "refuse"
            expect = "either" if v == "" else expect  # an empty value: as if not given
            self.add(
                "diffuse options",
                f"--rewards {v!r} (10 rounds)",
                ["diffuse", "--model", "sim", "--rounds", "10", "--rewards", v, "--out", out],
                expect=expect,
                absent=out if expect == "refuse" else None,
                check=no_nan(out),
            )
        out = self.out("rewards")
        self.add(
            "diffuse options",
            "--rewards '1e12/1/1' (8 rounds: capital up to 1e96)",
            ["diffuse", "--model", "sim", "--rounds", "8", "--rewards", "1e12/1/1", "--out", out],
            expect="accept",
            check=no_nan(out),
        )
        out = self.out("readoption nan")
        self.add(
            "diffuse options",
            "a plain run where nobody re-adopts after a success (n = 0)",
            ["diffuse", "--model", "sim", "--rounds", "1", "--out", out],
            expect="accept",
            check=no_nan(out, strict=True),
        )
        out = self.out("local threshold")
        self.add(
            "diffuse options",
            "--scope local --thresholds 8 on a small world of degree 4",
            ["diffuse", "--model", "sim", "--scope", "local", "--thresholds", "8", "--rounds", "1", "--out", out],
            absent=out,
        )
        out = self.out("paper grid agents")
        self.add(
            "diffuse options",
            "--paper-grid with --agents 5",
            ["diffuse", "--model", "sim", "--paper-grid", "--agents", "5", "--out", out],
            expect="refuse",
            absent=out,
        )
        # run sizes that must be refused up front, or finish: in a process with a time limit and a memory cap
        for args, name in [
            (["--agents", "10000000", "--rounds", "1"], "--agents 10,000,000 (the cap) small-world"),
            (["--agents", "50000", "--topology", "complete", "--rounds", "1"], "--agents 50,000 complete graph"),
            (["--agents", "3000000", "--topology", "scale-free", "--rounds", "1"], "--agents 3,000,000 scale-free"),
            (["--rounds", "10000", "--agents", "8"], "--rounds 10,000 (the cap)"),
        ]:
            out = self.out("big diffuse")
            self.add(
                "diffuse options",
                name,
                ["diffuse", "--model", "sim", *args, "--out", out],
                expect="either",
                process=True,
                check=no_nan(out),
            )
        # model options (validated up front even for sim)
        model = {
            "kv-budget": [
                ("abc", "refuse"),
                ("-1", "refuse"),
                ("1e99", "refuse"),
                ("nan", "refuse"),
                ("0", "accept"),
                ("10PB", "either"),
                ("", "either"),
                ("1.5GB", "accept"),
                ("99999999999999999999999999TB", "accept"),
            ],
            "batch-size": [("0", "refuse"), ("-1", "refuse"), ("1e9", "refuse"), ("1000000000", "accept")],
            "temperature": [
                ("nan", "refuse"),
                ("inf", "refuse"),
                ("-1", "refuse"),
                ("1e309", "refuse"),
                ("0", "accept"),
            ],
            "top-p": [("0", "refuse"), ("1.5", "refuse"), ("nan", "refuse"), ("1", "accept")],
            "max-new-tokens": [("0", "refuse"), ("-1", "refuse"), ("1e9", "refuse"), ("1000000000", "either")],
        }
        for opt, values in model.items():
            for v, expect in values:
                for command in ("explore", "diffuse"):
                    out = self.out(f"{command} {opt}")
                    size = ["--limit", "1"] if command == "explore" else []
                    self.add(
                        f"{command} options",
                        f"--{opt} {v!r} (sim)",
                        [command, "--model", "sim", *size, "--rounds", "1", f"--{opt}", v, "--out", out],
                        expect=expect,
                        absent=out if expect == "refuse" else None,
                    )
        for v, expect in [("1", "accept"), ("0", "accept"), ("999999999999TB", "accept")]:
            out = self.out("tiny kv")
            self.add(
                "explore options",
                f"--kv-budget {v} (tiny model)",
                [
                    "explore",
                    "--model",
                    self.tiny,
                    "--limit",
                    "1",
                    "--rounds",
                    "2",
                    "--max-new-tokens",
                    "4",
                    "--kv-budget",
                    v,
                    "--out",
                    out,
                ],
                expect=expect,
                check=no_nan(out),
            )
        out = self.out("tiny batch 1")
        self.add(
            "explore options",
            "--batch-size 1 --temperature 0 (tiny model)",
            [
                "explore",
                "--model",
                self.tiny,
                "--limit",
                "2",
                "--rounds",
                "1",
                "--max-new-tokens",
                "4",
                "--batch-size",
                "1",
                "--temperature",
                "0",
                "--out",
                out,
            ],
            expect="accept",
            notes=["truncated"],
            check=no_nan(out),
        )
        tiny_file = self.file("user-notes.txt", "my notes\n")
        tiny_dir, tiny_keep = self.user_folder("tiny-target", {"thesis.tex": b"my thesis\n"})
        for what, spec, keep in (("a file", tiny_file, [tiny_file]), ("a folder", tiny_dir, tiny_keep)):
            out = self.out("tiny user")
            self.add(
                "explore options",
                f"--model tiny:<{what} of the user's>",
                ["explore", "--model", f"tiny:{spec}", "--limit", "1", "--rounds", "1", "--max-new-tokens", "4"]
                + ["--out", out],
                keep=keep,
                absent=out,
            )
        for model_spec in [
            "",
            " ",
            "\x00",
            "hf:/nonexistent/model",
            "nosuchprovider:x",
            "tiny:",
            "server:",
            "hf:",
            "smollm2+adapter:/x",
        ]:
            out = self.out("model spec")
            self.add(
                "explore options",
                f"--model {model_spec!r}",
                ["explore", "--model", model_spec, "--limit", "1", "--rounds", "1", "--out", out],
                expect="refuse",
                absent=out,
            )

    def environment(self) -> None:
        """``ATP_<COMMAND>_<OPTION>`` with bad values, and misspelt names (must warn)."""
        cases = [
            ("diffuse", {"ATP_DIFFUSE_SEED": "-7"}, "refuse", []),
            ("diffuse", {"ATP_DIFFUSE_AGENTS": "1e9"}, "refuse", []),
            ("diffuse", {"ATP_DIFFUSE_AGENTS": "1000000000"}, "refuse", []),
            ("diffuse", {"ATP_DIFFUSE_P": "nan"}, "refuse", []),
            ("diffuse", {"ATP_DIFFUSE_THRESHOLDS": "nan"}, "refuse", []),
            ("diffuse", {"ATP_DIFFUSE_TOPOLOGY": "hypercube"}, "refuse", []),
            ("diffuse", {"ATP_DIFFUSE_SCENARIOSS": "x"}, "accept", ["ATP_DIFFUSE_SCENARIOSS is not an option"]),
            ("diffuse", {"ATP_DIFFUSE_SENARIOS": "x"}, "accept", ["ATP_DIFFUSE_SENARIOS is not an option"]),
            ("diffuse", {"ATP_DIFUSE_SCENARIOS": "x"}, "accept", ["ATP_DIFUSE_SCENARIOS"]),
            ("diffuse", {"ATP_DIFFUSE_SCENARIOS": "/nonexistent"}, "refuse", []),
            ("diffuse", {"ATP_DIFFUSE_PAPER_GRID": "maybe"}, "refuse", []),
            ("diffuse", {"ATP_DIFFUSE_KV_BUDGET": "abc"}, "refuse", []),
            ("diffuse", {"ATP_DIFFUSE_TEMPERATURE": "nan"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_ROUNDS": "abc"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_ROUNDS": "0"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_ROUNDS": "1e9"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_ROUND": "3"}, "accept", ["ATP_EXPLORE_ROUND is not an option"]),
            ("explore", {"ATP_EXPLORE_LIMIT": "-1"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_SEED": "nan"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_MEMORY_HYGIENE": "maybe"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_BATCH_SIZE": "0"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_MODEL": "sim\x01"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_SCENARIOS": "../../etc/passwd"}, "refuse", []),
            ("explore", {"ATP_EXPLORE_SUPERVISION": "nope"}, "refuse", []),
        ]
        for command, env, expect, notes in cases:
            out = self.out("env")
            base = [command, "--rounds", "1"] if "ROUNDS" not in " ".join(env) else [command]
            if command == "explore" and "LIMIT" not in " ".join(env):
                base += ["--limit", "1"]
            model = [] if "MODEL" in " ".join(env) else ["--model", "sim"]
            name = " ".join(f"{k}={v!r}" for k, v in env.items())
            self.add(
                "environment",
                name,
                [*base, *model, "--out", out],
                env=env,
                expect=expect,
                notes=notes,
                absent=out if expect == "refuse" else None,
            )
        out = self.out("env out file")
        target = self.file("env-out-file.txt", "mine")
        self.add(
            "environment",
            "ATP_EXPLORE_OUT=<a user's file>",
            ["explore", "--model", "sim", "--limit", "1"],
            env={"ATP_EXPLORE_OUT": str(target)},
            keep=[target],
        )
        base = self.run_copy("explore-cut", "env-resume")
        out = self.out("env resume and out")
        self.add(
            "environment",
            "ATP_EXPLORE_RESUME set and --out given",
            ["explore", "--out", out],
            env={"ATP_EXPLORE_RESUME": str(base)},
            absent=out,
        )

    def graphs(self) -> None:
        """``diffuse --graph FILE``."""
        import networkx as nx

        def graphml(g: Any) -> bytes:
            from io import BytesIO

            buf = BytesIO()
            nx.write_graphml(g, buf)
            return buf.getvalue()

        def gml(g: Any) -> str:
            return "\n".join(nx.generate_gml(g))

        ring = nx.cycle_graph(6)
        directed = nx.DiGraph([(0, 1), (1, 2), (2, 3), (3, 0)])
        multi = nx.MultiGraph([(0, 1), (0, 1), (1, 2), (2, 0)])
        mdi = nx.MultiDiGraph([(0, 1), (1, 0), (1, 2), (2, 3), (3, 0), (2, 2)])
        laughs = (
            '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
            + "".join(
                f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10)
            )
            + ']>\n<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><key id="d0" for="node" '
            'attr.name="n" attr.type="string"/><graph edgedefault="undirected"><node id="a"><data key="d0">'
            '&lol9;</data></node><node id="b"/><edge source="a" target="b"/></graph></graphml>\n'
        )
        xxe = (
            '<?xml version="1.0"?>\n<!DOCTYPE g [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
            '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><key id="d0" for="node" attr.name="n" '
            'attr.type="string"/><graph edgedefault="undirected"><node id="a"><data key="d0">&x;</data></node>'
            '<node id="b"/><edge source="a" target="b"/></graph></graphml>\n'
        )
        xxe_param = (
            '<?xml version="1.0"?>\n<!DOCTYPE g [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>\n'
            '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="undirected">'
            '<node id="a"/><node id="b"/><edge source="a" target="b"/></graph></graphml>\n'
        )
        gml_head = "graph [\n  node [ id 0 ]\n  node [ id 1 ]\n  edge [ source 0 target 1 ]\n"
        cases: list[tuple[str, str, str | bytes, str, list[str]]] = [
            # (name, suffix, content, expect, notes)
            ("edge list, valid ring", ".txt", "0 1\n1 2\n2 3\n3 0\n", "accept", []),
            ("edge list, CRLF", ".txt", "0 1\r\n1 2\r\n2 0\r\n", "accept", []),
            ("edge list, commas and tabs", ".csv", "0,1\n1\t2\n2, 0\n", "accept", []),
            ("edge list, Latin-1 labels", ".txt", "caf\xe9 b\nb c\nc caf\xe9\n".encode("latin-1"), "either", []),
            ("edge list, Latin-1 + CRLF", ".edges", "caf\xe9 b\r\nb c\r\n".encode("latin-1"), "either", []),
            ("edge list, UTF-8 BOM", ".txt", "\ufeff0 1\n1 2\n2 0\n", "either", []),
            ("edge list, repeated edge (a multigraph)", ".txt", "0 1\n1 2\n2 0\n0 1\n", "either", ["parallel"]),
            ("edge list, both directions (directed?)", ".txt", "0 1\n1 0\n1 2\n2 0\n", "either", ["parallel"]),
            ("edge list, self-loop", ".txt", "0 1\n1 2\n2 0\n1 1\n", "accept", ["self-loop"]),
            ("edge list, only self-loops", ".txt", "0 0\n1 1\n", "refuse", []),
            ("edge list, 4 columns", ".txt", "0 1 2 3\n", "refuse", []),
            ("edge list, 1 column", ".txt", "0\n1\n", "refuse", []),
            ("edge list, weight nan", ".txt", "0 1 nan\n1 2 inf\n2 0 -1\n", "either", []),
            ("edge list, empty", ".txt", "", "refuse", []),
            ("edge list, comments only", ".txt", "# a\n# b\n", "refuse", []),
            ("edge list, disconnected", ".txt", "0 1\n2 3\n", "refuse", []),
            ("edge list, control chars in labels", ".txt", "\x1b[2J a\na b\nb \x1b[2J\n", "either", []),
            ("edge list, NUL in a label", ".txt", "a\x00 b\nb c\nc a\x00\n", "either", []),
            ("edge list, control chars and a vertical tab", ".txt", "\x1b[31m \x07 \x08 \x0b\n", "either", []),
            ("edge list, 5 MB one line", ".txt", "a " + "b" * 5_000_000 + " c d\n", "refuse", []),
            ("edge list, binary garbage", ".txt", bytes(range(256)) * 16, "refuse", []),
            ("edge list, UTF-16", ".txt", "0 1\n1 2\n2 0\n".encode("utf-16"), "refuse", []),
            ("GraphML, valid", ".graphml", graphml(ring), "accept", []),
            ("GraphML, directed", ".graphml", graphml(directed), "either", ["directed graph read as undirected"]),
            ("GraphML, multigraph", ".graphml", graphml(multi), "either", ["parallel edge"]),
            (
                "GraphML, directed multigraph with a self-loop",
                ".graphml",
                graphml(mdi),
                "either",
                ["directed", "self-loop"],
            ),
            ("GraphML, billion laughs", ".graphml", laughs, "refuse", []),
            ("GraphML, external entity (XXE)", ".graphml", xxe, "refuse", []),
            ("GraphML, external parameter entity", ".graphml", xxe_param, "either", []),
            (
                "GraphML, edge to a missing node",
                ".graphml",
                '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="undirected"><node id="a"/>'
                '<node id="b"/><edge source="a" target="b"/><edge source="b" target="zzz"/></graph></graphml>',
                "either",
                [],
            ),
            (
                "GraphML, no nodes",
                ".graphml",
                '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="undirected"/></graphml>',
                "refuse",
                [],
            ),
            (
                "GraphML, int attribute 'abc'",
                ".graphml",
                '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
                '<key id="d0" for="node" attr.name="w" attr.type="int"/><graph edgedefault="undirected"><node id="a">'
                '<data key="d0">abc</data></node><node id="b"/><edge source="a" target="b"/></graph></graphml>',
                "refuse",
                [],
            ),
            (
                "GraphML, hyperedge",
                ".graphml",
                '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph '
                'edgedefault="undirected"><node id="a"/><node id="b"/><hyperedge><endpoint node="a"/><endpoint '
                'node="b"/></hyperedge></graph></graphml>',
                "refuse",
                [],
            ),
            (
                "GraphML, two graphs",
                ".graphml",
                '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph '
                'edgedefault="undirected"><node id="a"/><node id="b"/><edge source="a" target="b"/></graph><graph '
                'edgedefault="undirected"><node id="c"/></graph></graphml>',
                "either",
                [],
            ),
            ("GraphML, truncated", ".graphml", graphml(ring)[:200], "refuse", []),
            ("GraphML, binary garbage", ".graphml", b"\x00\x01\xff\xfe<graphml" + bytes(range(256)), "refuse", []),
            ("GraphML, 100,000 nested elements", ".graphml", "<a>" * 100_000 + "</a>" * 100_000, "refuse", []),
            ("GML, valid", ".gml", gml(ring), "accept", []),
            ("GML, directed", ".gml", gml(directed), "either", ["directed graph read as undirected"]),
            ("GML, multigraph", ".gml", gml(multi), "either", ["parallel edge"]),
            (
                "GML, 5000-digit id",
                ".gml",
                gml_head + f"  node [ id {'9' * 5000} ]\n  edge [ source 1 target {'9' * 5000} ]\n]\n",
                "either",
                [],
            ),
            (
                "GML, 300-digit id",
                ".gml",
                gml_head + f"  node [ id {'9' * 300} ]\n  edge [ source 1 target {'9' * 300} ]\n]\n",
                "either",
                [],
            ),
            ("GML, 100,000 nested lists", ".gml", "graph [ " + "a [ " * 100_000 + "] " * 100_001, "refuse", []),
            ("GML, 2,000 nested lists", ".gml", "graph [ " + "a [ " * 2_000 + "] " * 2_001, "refuse", []),
            ("GML, edge to a missing node", ".gml", gml_head + "  edge [ source 1 target 7 ]\n]\n", "refuse", []),
            ("GML, duplicate node id", ".gml", gml_head + "  node [ id 1 ]\n]\n", "refuse", []),
            (
                "GML, self-loop",
                ".gml",
                gml_head + "  node [ id 2 ]\n  edge [ source 1 target 2 ]\n  edge [ source 2 target 2 ]\n]\n",
                "accept",
                ["self-loop"],
            ),
            ("GML, binary garbage", ".gml", b"graph [ node [ id \x00\x01\xff\xfe ] ]", "refuse", []),
            ("GML, NaN label", ".gml", gml_head.replace("id 0 ]", "id 0 label NAN ]") + "]\n", "either", []),
            ("GML, empty", ".gml", "", "refuse", []),
            ("unknown suffix, GraphML inside", ".xml", graphml(ring), "refuse", []),
        ]
        for name, suffix, content, expect, notes in cases:
            path = self.file(f"graph/{len(self.cases):03d}{suffix}", content)
            out = self.out("graph")
            self.add(
                "diffuse --graph",
                name,
                ["diffuse", "--model", "sim", "--graph", path, "--rounds", "1", "--thresholds", "0.5", "--out", out],
                expect=expect,
                notes=notes,
                needle=str(path) if expect == "refuse" else None,
                absent=out if expect == "refuse" else None,
                check=all_of(no_nan(out), _graph_notes(out, notes)) if notes else no_nan(out),
            )
        out = self.out("graph folder")
        self.add(
            "diffuse --graph",
            "a folder",
            ["diffuse", "--model", "sim", "--graph", self.work / "in", "--out", out],
            absent=out,
        )
        out = self.out("graph missing")
        self.add(
            "diffuse --graph",
            "a missing file",
            ["diffuse", "--model", "sim", "--graph", self.work / "no.txt", "--out", out],
            absent=out,
        )
        ring_file = self.file("graph/ring-for-deviants.txt", "0 1\n1 2\n2 0\n")
        out = self.out("graph deviants")
        self.add(
            "diffuse --graph",
            "--seed-deviants 5 on a graph of 3",
            ["diffuse", "--model", "sim", "--graph", ring_file, "--seed-deviants", "5", "--out", out],
            absent=out,
        )
        out = self.out("graph thresholds")
        self.add(
            "diffuse --graph",
            "--thresholds 9 on a graph of 3",
            ["diffuse", "--model", "sim", "--graph", ring_file, "--thresholds", "9", "--out", out],
            absent=out,
        )
        for special in ("/dev/zero", "/dev/urandom"):
            out = self.out("graph dev")
            self.add(
                "diffuse --graph",
                f"{special} (never ends)",
                ["diffuse", "--model", "sim", "--graph", special, "--out", out],
                process=True,
                absent=out,
            )
        fifo = self.work / "in" / "graph-fifo.txt"
        os.mkfifo(fifo)
        out = self.out("graph fifo")
        self.add(
            "diffuse --graph",
            "a FIFO (named pipe, no writer)",
            ["diffuse", "--model", "sim", "--graph", fifo, "--out", out],
            process=True,
            absent=out,
        )
        # A 2,000,000-edge file (the cap, 44 MB) loads in about 11 s, but a round of 2,000,000 agents and its report
        # take about 2 minutes and 7 GB (proportional work, over this audit's 4 GB process cap; 100,000 agents take
        # 8-17 s): the accepted case has 50,000 agents, the refused one is just over the cap (refused after counting
        # its lines, in about 4 s)
        big = self.work / "in" / "graph" / "big-edges.txt"
        big.write_text("".join(f"{i} {i + 1}\n" for i in range(50_000)))
        out = self.out("graph 50k edges")
        self.add(
            "diffuse --graph",
            "edge list of 50,000 nodes (1 MB)",
            ["diffuse", "--model", "sim", "--graph", big, "--rounds", "1", "--out", out],
            process=True,
            expect="accept",
            check=no_nan(out),
        )
        over = self.work / "in" / "graph" / "over-edges.txt"
        over.write_text("".join(f"{i} {i + 1}\n" for i in range(2_000_001)))
        out = self.out("graph over the cap")
        self.add(
            "diffuse --graph",
            "edge list of 2,000,001 edges (over the cap, 44 MB)",
            ["diffuse", "--model", "sim", "--graph", over, "--rounds", "1", "--out", out],
            process=True,
            needle=str(over),
            absent=out,
        )

    def out_folders(self) -> None:
        """``--out`` at odd places, for every command that writes one."""
        ro = self.work / "readonly"
        (ro / "empty").mkdir(parents=True)
        read_only(ro / "empty")
        read_only(ro)
        afile = self.file("afile.txt", "user data\n")
        targets: list[tuple[str, Callable[[], tuple[Path | str, list[Path]]]]] = [
            ("a file", lambda: (afile, [afile])),
            ("/dev/null", lambda: ("/dev/null", [])),
            ("a read-only folder (empty)", lambda: (ro / "empty", [])),
            ("a new folder under a read-only one", lambda: (ro / "new", [])),
            ("a path under a file", lambda: (afile / "run", [afile])),
            (
                "a folder with the user's files",
                lambda: self.user_folder(
                    "mine",
                    {
                        "summary.json": b"my numbers\n",
                        "notes.md": b"mine\n",
                        "report.md": b"my report\n",
                        "violation_rate.png": b"my png",
                        "table.md": b"my table",
                    },
                ),
            ),
            (
                "a folder with the user's config.json",
                lambda: self.user_folder("cfg", {"config.json": b'{"mine": true}\n'}),
            ),
            (
                "a folder holding only the user's config.json.tmp",
                lambda: self.user_folder("tmp", {"config.json.tmp": b"my temp file\n"}),
            ),
            ("a folder holding only a hidden file", lambda: self.user_folder("hidden", {".keep": b"\n"})),
            ("a symlink to the user's folder", lambda: self._symlink_to_user()),
            ("a dangling symlink", lambda: (self._dangling(), [])),
            ("a name with a NUL byte", lambda: (str(self.work / "out" / "a\x00b"), [])),
            ("a name of 300 characters", lambda: (self.work / "out" / ("n" * 300), [])),
            ("a name with a newline", lambda: (self.out("newline") / "line\nbreak", [])),
            ("'' (the current folder)", lambda: ("", [])),
        ]
        commands: dict[str, Callable[[Path | str], list[Any]]] = {
            "explore": lambda o: ["explore", "--model", "sim", "--limit", "1", "--rounds", "1", "--out", o],
            "diffuse": lambda o: ["diffuse", "--model", "sim", "--rounds", "1", "--out", o],
            "probe": lambda o: [
                "probe",
                "good_target:graph",
                "--scenario",
                self.work / "in" / "base" / "courier.yaml",
                "--rounds",
                "1",
                "--out",
                o,
            ],
            "compare": lambda o: [
                "compare",
                "--variant",
                "a=sim",
                "--variant",
                "b=sim;memory_hygiene",
                "--limit",
                "1",
                "--rounds",
                "1",
                "--out",
                o,
            ],
            "sweep run": lambda o: ["sweep", "run", self.sweep_spec, "--jobs", "1", "--out", o],
            "import-atp": lambda o: [
                "scenarios",
                "import-atp",
                "/work/shared/atp-reference-data/sa_llm_templates.json"
                if Path("/work/shared/atp-reference-data").is_dir()
                else self.small_study,
                "--out",
                o,
            ],
        }
        ok_targets = {"a folder holding only a hidden file", "a name with a newline", "'' (the current folder)"}
        for command, make in commands.items():
            for tname, target in targets:
                if command == "sweep run" and tname not in (
                    "a file",
                    "/dev/null",
                    "a read-only folder (empty)",
                    "a path under a file",
                    "a folder with the user's files",
                ):
                    continue
                path, keep = target()
                expect = "either" if tname in ok_targets else "refuse"
                if command == "import-atp" and tname in (
                    "a folder with the user's files",
                    "a folder with the user's config.json",
                    "a folder holding only the user's config.json.tmp",
                    "a symlink to the user's folder",
                ):
                    expect = "either"  # writes new YAML files beside the user's; never over them
                if command == "probe" and tname == "a folder with the user's config.json":
                    expect = "either"

                self.add(
                    f"--out ({command})",
                    tname,
                    make(path),
                    expect=expect,
                    keep=keep,
                    process=command == "sweep run",
                    codes=(2,),
                )

    def _symlink_to_user(self) -> tuple[Path, list[Path]]:
        folder, keep = self.user_folder("linked", {"data.csv": b"a,b\n1,2\n"})
        link = self.work / "out" / f"link-{len(self.cases)}"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(folder, link)
        return link, keep

    def _dangling(self) -> Path:
        link = self.work / "out" / f"dangling-{len(self.cases)}"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(self.work / "nowhere" / "x", link)
        return link

    def resumes(self) -> None:
        """Damaged run folders, then ``--resume`` (and ``report``)."""
        straight = {"explore": self.base / "explore-straight", "diffuse": self.base / "diffuse-straight"}

        def lines_of(p: Path) -> list[str]:
            return (p / "events.jsonl").read_text().splitlines(keepends=True)

        def edit_events(fn: Callable[[list[str]], list[str] | bytes]) -> Callable[[Path], None]:
            def do(p: Path) -> None:
                new = fn(lines_of(p))
                if isinstance(new, bytes):
                    (p / "events.jsonl").write_bytes(new)
                else:
                    (p / "events.jsonl").write_text("".join(new))

            return do

        def edit_json(name: str, fn: Callable[[Any], Any]) -> Callable[[Path], None]:
            def do(p: Path) -> None:
                (p / name).write_text(json.dumps(fn(json.loads((p / name).read_text()))))

            return do

        def write(name: str, content: str | bytes) -> Callable[[Path], None]:
            def do(p: Path) -> None:
                target = p / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                if isinstance(content, bytes):
                    target.write_bytes(content)
                else:
                    target.write_text(content)

            return do

        def remove(name: str) -> Callable[[Path], None]:
            return lambda p: (p / name).unlink()

        def folder(name: str) -> Callable[[Path], None]:
            def do(p: Path) -> None:
                (p / name).unlink(missing_ok=True)
                (p / name).mkdir()

            return do

        def reward_nan(lines: list[str]) -> list[str]:
            first = json.loads(lines[0])
            first["reward"] = "NaN"
            return [json.dumps(first).replace('"NaN"', "NaN") + "\n", *lines[1:]]

        def round_of_first(value: Any) -> Callable[[list[str]], list[str]]:
            def fn(lines: list[str]) -> list[str]:
                first = json.loads(lines[0])
                first["round"] = value
                return [json.dumps(first) + "\n", *lines[1:]]

            return fn

        def torn(lines: list[str]) -> list[str]:
            return [*lines, lines[0][:30]]

        def cfg(fn: Callable[[dict[str, Any]], None]) -> Callable[[Any], Any]:
            def do(c: dict[str, Any]) -> Any:
                fn(c)
                return c

            return do

        damages: list[tuple[str, Callable[[Path], None], str]] = [
            ("untouched", lambda p: None, "same"),
            ("torn last line", edit_events(torn), "same"),
            ("garbage line in the middle", edit_events(lambda ls: [*ls[:2], "garbage{\n", *ls[2:]]), "refuse"),
            (
                "binary line in the middle",
                edit_events(lambda ls: "".join(ls[:2]).encode() + b"\xff\xfe\x00\x90\n" + "".join(ls[2:]).encode()),
                "refuse",
            ),
            (
                "binary torn last line",
                edit_events(lambda ls: "".join(ls).encode() + b'{"round": 3, "ag\xff'),
                "either-same",
            ),
            ("duplicated line", edit_events(lambda ls: [*ls, ls[0]]), "refuse"),
            ("whole file duplicated", edit_events(lambda ls: ls + ls), "refuse"),
            ("deleted line", edit_events(lambda ls: ls[:1] + ls[2:]), "refuse"),
            (
                "last completed line deleted",
                edit_events(
                    lambda ls: (
                        [x for x in ls if json.loads(x)["round"] <= 2][:-1]
                        + [x for x in ls if json.loads(x)["round"] > 2]
                    )
                ),
                "refuse",
            ),
            ("events.jsonl deleted", remove("events.jsonl"), "refuse"),
            ("events.jsonl empty", write("events.jsonl", ""), "refuse"),
            ("events.jsonl is a folder", folder("events.jsonl"), "refuse"),
            ("line with reward NaN", edit_events(reward_nan), "either"),
            ("line with round 2.5", edit_events(round_of_first(2.5)), "refuse"),
            ("line with round -1", edit_events(round_of_first(-1)), "refuse"),
            ("line with round 10**30", edit_events(round_of_first(10**30)), "refuse"),
            ("line nested 100,000 deep", edit_events(lambda ls: [*ls[:1], deep_json() + "\n", *ls[1:]]), "refuse"),
            ("line is a JSON number", edit_events(lambda ls: [*ls[:1], "5\n", *ls[1:]]), "refuse"),
            ("state.json deleted", remove("state.json"), "either-same"),
            ("state.json garbage", write("state.json", "garbage"), "refuse"),
            ("state.json binary", write("state.json", b"\xff\xfe\x00garbage"), "refuse"),
            ("state.json empty", write("state.json", ""), "refuse"),
            ("state.json []", write("state.json", "[]"), "refuse"),
            ("state.json nested 100,000 deep", write("state.json", deep_json()), "refuse"),
            ("state.json is a folder", folder("state.json"), "refuse"),
            ("state.json round -1", edit_json("state.json", lambda s: {**s, "round": -1}), "refuse"),
            ("state.json round '2'", edit_json("state.json", lambda s: {**s, "round": "2"}), "refuse"),
            ("state.json round true", edit_json("state.json", lambda s: {**s, "round": True}), "refuse"),
            ("state.json round 10**30", edit_json("state.json", lambda s: {**s, "round": 10**30}), "refuse"),
            (
                "state.json round 1 (one behind its state)",
                edit_json("state.json", lambda s: {**s, "round": 1}),
                "either-same",
            ),
            ("state.json round 0", edit_json("state.json", lambda s: {**s, "round": 0}), "either-same"),
            (
                "state.json round 4 (ahead of the events)",
                edit_json("state.json", lambda s: {**s, "round": 4}),
                "refuse",
            ),
            (
                "state.json without config_sha",
                edit_json("state.json", lambda s: {k: v for k, v in s.items() if k != "config_sha"}),
                "either-same",
            ),
            (
                "state.json state emptied",
                edit_json("state.json", lambda s: {**s, "state": {"game": {}, "agents": {}}}),
                "either-same",
            ),
            (
                "config.json seed edited",
                edit_json("config.json", cfg(lambda c: c[next(iter(c))].update(seed=7))),
                "refuse",
            ),
            (
                "config.json model edited",
                edit_json("config.json", cfg(lambda c: c[next(iter(c))].update(model="smollm2"))),
                "refuse",
            ),
            (
                "config.json rounds edited",
                edit_json("config.json", cfg(lambda c: c[next(iter(c))].update(rounds=9))),
                "refuse",
            ),
            (
                "config.json rounds edited and state.json deleted",
                lambda p: (
                    edit_json("config.json", cfg(lambda c: c[next(iter(c))].update(rounds=3)))(p),
                    remove("state.json")(p),
                ),
                "either",
            ),
            (
                "config.json 'resolved' removed, state.json deleted",
                lambda p: (edit_json("config.json", cfg(lambda c: c.pop("resolved")))(p), remove("state.json")(p)),
                "refuse",
            ),
            (
                "config.json reformatted (same content)",
                lambda p: (p / "config.json").write_text(
                    json.dumps(json.loads((p / "config.json").read_text()), indent=4)
                ),
                "either-same",
            ),
            ("config.json garbage", write("config.json", "garbage"), "refuse"),
            ("config.json binary", write("config.json", b"\xff\xfe\x00garbage"), "refuse"),
            ("config.json empty", write("config.json", ""), "refuse"),
            ("config.json []", write("config.json", "[]"), "refuse"),
            ("config.json nested 100,000 deep", write("config.json", deep_json()), "refuse"),
            (
                "config.json section is a list",
                edit_json("config.json", cfg(lambda c: c.update({next(iter(c)): []}))),
                "refuse",
            ),
            ("config.json deleted", remove("config.json"), "refuse"),
            ("config.json is a folder", folder("config.json"), "refuse"),
            (
                "config.json schema_version removed",
                edit_json("config.json", cfg(lambda c: c.pop("schema_version"))),
                "refuse",
            ),
            ("stale run.lock file", write("run.lock", "12345\n"), "same"),
            ("run.lock is a folder", folder("run.lock"), "refuse"),
            ("summary.json of the user's in the folder", write("summary.json", "mine"), "either"),
        ]
        for kind in ("explore", "diffuse"):
            for name, damage, expect in damages:
                p = self.run_copy(f"{kind}-cut", f"{kind}-{name[:20]}")
                damage(p)
                check = same_run(p, straight[kind]) if expect in ("same", "either-same") else no_nan(p)
                wanted = {"same": "accept", "either-same": "either"}.get(expect, expect)
                self.add(
                    f"{kind} --resume",
                    name,
                    [kind, "--resume", p],
                    expect=wanted,
                    check=check,
                    how=f"a {kind} run (sim, 4 rounds) killed after round 2, then: {name}",
                    process="10**30" in name,
                )
            held = self.run_copy(f"{kind}-cut", f"{kind}-held")
            self.add(
                f"{kind} --resume",
                "run.lock held by another process",
                [kind, "--resume", held],
                setup=lambda case, held=held: Lock(held / "run.lock"),
            )
            other = self.run_copy("diffuse-cut" if kind == "explore" else "explore-cut", f"{kind}-other")
            self.add(f"{kind} --resume", "a folder of the other command", [kind, "--resume", other], needle=str(other))
            empty = self.work / "runs" / f"{len(self.cases):03d}-empty"
            empty.mkdir(parents=True)
            self.add(f"{kind} --resume", "an empty folder", [kind, "--resume", empty])
            self.add(f"{kind} --resume", "a missing folder", [kind, "--resume", self.work / "runs" / "nope"])
            self.add(f"{kind} --resume", "a file", [kind, "--resume", self.file("resume-file.txt", "x")])
            p = self.run_copy(f"{kind}-cut", f"{kind}-flag")
            self.add(f"{kind} --resume", "--resume with --seed 3", [kind, "--resume", p, "--seed", "3"])
            done = self.run_copy(f"{kind}-straight", f"{kind}-done")
            self.add(
                f"{kind} --resume",
                "a finished run",
                [kind, "--resume", done],
                expect="accept",
                check=same_run(done, straight[kind]),
            )
        # report RUN_DIR
        rep = [
            ("a finished run", lambda p: None, "accept"),
            ("torn last line", edit_events(torn), "accept"),
            (
                "binary line",
                edit_events(lambda ls: "".join(ls[:2]).encode() + b"\xff\xfe\n" + "".join(ls[2:]).encode()),
                "refuse",
            ),
            ("garbage line", edit_events(lambda ls: [*ls[:2], "garbage{\n", *ls[2:]]), "refuse"),
            ("line nested 100,000 deep", edit_events(lambda ls: [*ls[:1], deep_json() + "\n", *ls[1:]]), "refuse"),
            ("events.jsonl deleted", remove("events.jsonl"), "refuse"),
            ("events.jsonl is a folder", folder("events.jsonl"), "refuse"),
            ("duplicated lines", edit_events(lambda ls: ls + ls), "refuse"),
            ("reward NaN", edit_events(reward_nan), "either"),
            ("config.json garbage", write("config.json", "garbage"), "refuse"),
            ("config.json binary", write("config.json", b"\xff\xfe\x00"), "refuse"),
            ("config.json nested deep", write("config.json", deep_json()), "refuse"),
            ("config.json []", write("config.json", "[]"), "refuse"),
            (
                "config.json resolved is a list",
                edit_json("config.json", cfg(lambda c: c.update(resolved=[]))),
                "refuse",
            ),
            (
                "config.json section is a list",
                edit_json("config.json", cfg(lambda c: c.update({next(iter(c)): []}))),
                "refuse",
            ),
            (
                "config.json seed -1",
                edit_json("config.json", cfg(lambda c: c[next(iter(c))].update(seed=-1))),
                "refuse",
            ),
        ]
        for kind in ("explore", "diffuse"):
            for name, damage, expect in rep:
                p = self.run_copy(f"{kind}-straight", f"rep-{kind}-{name[:16]}")
                damage(p)
                check = same_run(p, straight[kind]) if expect == "accept" else no_nan(p, events=False)
                if name == "torn last line":
                    check = same_summary(p, straight[kind])
                self.add(
                    "report",
                    f"{kind}: {name}",
                    ["report", p],
                    expect=expect,
                    check=check,
                    how=f"a finished {kind} run (sim, 4 rounds), then: {name}",
                )
        self.add("report", "a missing folder", ["report", self.work / "runs" / "nope"])
        self.add("report", "a file", ["report", self.file("report-file.txt", "x")])
        self.add("report", "a sweep folder", ["report", "SWEEP_FOLDER"], setup=self._point_at_sweep)

    def _point_at_sweep(self, case: Case) -> None:
        case.args = [str(self.sweep_folder()) if a == "SWEEP_FOLDER" else a for a in case.args]

    def sweeps(self) -> None:
        """``sweep plan`` / ``run`` / ``report``."""
        good = {
            "command": "explore",
            "base": {"model": "sim", "limit": 1, "rounds": 1},
            "grid": {"evolution": ["transcript", "none"]},
        }
        self.sweep_spec = self.file("sweep/good.yaml", dump(good))
        specs: list[tuple[str, str | bytes, str]] = [
            ("valid", dump(good), "accept"),
            ("empty", "", "refuse"),
            ("binary", bytes(range(256)) * 4, "refuse"),
            ("Latin-1", dump(good).encode().replace(b"sim", b"s\xefm"), "refuse"),
            ("top level list", "- a\n", "refuse"),
            ("command probe", dump({**good, "command": "probe"}), "refuse"),
            ("command compare", dump({**good, "command": "compare"}), "refuse"),
            ("command 'rm -rf /'", dump({**good, "command": "rm -rf /"}), "refuse"),
            ("command a list", dump({**good, "command": ["explore"]}), "refuse"),
            ("unknown top-level key", dump({**good, "extra": 1}), "refuse"),
            ("unknown base field", dump({**good, "base": {"model": "sim", "nope": 1}}), "refuse"),
            ("base seed -7", dump({**good, "base": {"model": "sim", "seed": -7}}), "refuse"),
            ("base rounds 1e9", dump({**good, "base": {"model": "sim", "rounds": 10**9}}), "refuse"),
            (
                "base rounds .nan",
                dump({**good, "base": {"model": "sim"}}).replace("model: sim", "model: sim\n  rounds: .nan"),
                "refuse",
            ),
            ("base model ''", dump({**good, "base": {"model": ""}}), "refuse"),
            ("base is a list", dump({**good, "base": [1]}), "refuse"),
            ("grid axis empty", dump({**good, "grid": {"seed": []}}), "refuse"),
            ("grid axis repeats a value", dump({**good, "grid": {"seed": [1, 1]}}), "refuse"),
            ("grid axis 1 and 1.0", dump({**good, "grid": {"seed": [1, 1.0]}}), "refuse"),
            ("grid axis 1 and true", dump({**good, "grid": {"seed": [1, True]}}), "refuse"),
            ("grid axis not a list", dump({**good, "grid": {"seed": 1}}), "refuse"),
            ("grid of an unknown field", dump({**good, "grid": {"nope": [1]}}), "refuse"),
            (
                "grid with path separators in values",
                dump({**good, "grid": {"scenarios": ["../../../etc", "a/b"]}}),
                "either",
            ),
            ("runs entry and grid set one field", dump({**good, "runs": [{"evolution": "none"}]}), "refuse"),
            ("runs entry not a mapping", dump({**good, "runs": [5]}), "refuse"),
            ("runs resources not a mapping", dump({**good, "runs": [{"resources": 5}]}), "refuse"),
            ("resources cpus 0", dump({**good, "resources": {"cpus": 0}}), "refuse"),
            ("resources cpus .nan", dump(good) + "resources: {cpus: .nan}\n", "refuse"),
            ("resources cpus .inf", dump(good) + "resources: {cpus: .inf}\n", "refuse"),
            ("resources gpus .inf", dump(good) + "resources: {gpus: .inf}\n", "refuse"),
            ("resources gpus -1", dump({**good, "resources": {"gpus": -1}}), "refuse"),
            ("resources memory -1GB", dump({**good, "resources": {"memory": "-1GB"}}), "refuse"),
            ("resources memory 0GB", dump({**good, "resources": {"memory": "0GB"}}), "refuse"),
            ("resources memory 1e99GB", dump({**good, "resources": {"memory": "1e99GB"}}), "refuse"),
            (
                "resources memory 99999999999999999999TB",
                dump({**good, "resources": {"memory": "99999999999999999999TB"}}),
                "either",
            ),
            ("resources memory .inf", dump(good) + "resources: {memory: .inf}\n", "refuse"),
            ("model_options kv_budget abc", dump({**good, "model_options": {"kv_budget": "abc"}}), "refuse"),
            ("model_options temperature .nan", dump(good) + "model_options: {temperature: .nan}\n", "refuse"),
            ("model_options batch_size 0", dump({**good, "model_options": {"batch_size": 0}}), "refuse"),
            ("model_options unknown", dump({**good, "model_options": {"nope": 1}}), "refuse"),
            ("retries -1", dump({**good, "retries": -1}), "refuse"),
            ("paper_grid with explore", dump({**good, "paper_grid": True}), "refuse"),
            ("tag", dump(good).replace("sim", "!!python/object/apply:os.system [id]"), "refuse"),
            ("anchor/alias", "base: &b {model: sim}\ncommand: explore\nruns: [*b]\n", "refuse"),
            ("duplicate key", dump(good) + "command: diffuse\n", "refuse"),
            ("100,000 nested [", "[" * 100_000, "refuse"),
            ("1,000,001 bytes", "# " + "x" * 999_999 + "\n", "refuse"),
            ("NUL byte", dump(good).replace("sim", "s\x00im"), "refuse"),
            ("group_by with path separators", dump({**good, "group_by": "../../x"}), "either"),
        ]
        for name, content, expect in specs:
            path = self.file(f"sweep/{len(self.cases):03d}.yaml", content)
            self.add(
                "sweep plan",
                name,
                ["sweep", "plan", path],
                expect=expect,
                lines=5,
                needle=str(path) if expect == "refuse" else None,
            )
        self.add("sweep plan", "a folder", ["sweep", "plan", self.work / "in"])
        self.add("sweep plan", "a missing file", ["sweep", "plan", self.work / "no.yaml"])
        self.add("sweep plan", "/dev/zero (never ends)", ["sweep", "plan", "/dev/zero"], process=True)
        combos = {
            "command": "explore",
            "base": {"model": "sim"},
            "grid": {"seed": list(range(200)), "limit": list(range(1, 201)), "history_window": list(range(50))},
        }
        self.add(
            "sweep plan",
            "a 2,000,000-run grid from a 5 KB spec",
            ["sweep", "plan", self.file("sweep/huge-grid.yaml", dump(combos))],
            process=True,
            expect="either",
        )
        # sweep report
        self.add(
            "sweep report",
            "a finished sweep",
            ["sweep", "report", "SWEEP_FOLDER"],
            expect="accept",
            setup=self._sweep_copy(),
        )
        for name, damage in [
            ("sweep.json garbage", lambda p: (p / "sweep.json").write_text("garbage")),
            ("sweep.json binary", lambda p: (p / "sweep.json").write_bytes(b"\xff\xfe\x00")),
            ("sweep.json nested deep", lambda p: (p / "sweep.json").write_text(deep_json())),
            ("sweep.json {}", lambda p: (p / "sweep.json").write_text("{}")),
            ("sweep.json is a folder", lambda p: ((p / "sweep.json").unlink(), (p / "sweep.json").mkdir())),
            ("sweep.json deleted", lambda p: (p / "sweep.json").unlink()),
            ("run folders deleted", lambda p: shutil.rmtree(p / "runs")),
            (
                "a run's events.jsonl binary",
                lambda p: next((p / "runs").iterdir()).joinpath("events.jsonl").write_bytes(b"\xff\xfe\n"),
            ),
            (
                "a run's config.json garbage",
                lambda p: next((p / "runs").iterdir()).joinpath("config.json").write_text("garbage"),
            ),
            ("a run name with '..' in the manifest", self._evil_manifest),
        ]:
            lenient = name.startswith(("run folders", "a run's config", "a run name"))
            self.add(
                "sweep report",
                name,
                ["sweep", "report", "SWEEP_FOLDER"],
                expect="either" if lenient else "refuse",
                setup=self._sweep_copy(damage),
                lines=5,
            )
        self.add("sweep report", "a missing folder", ["sweep", "report", self.work / "nope"])
        self.add("sweep report", "a run folder, not a sweep", ["sweep", "report", self.base / "explore-straight"])
        self.add(
            "sweep report",
            "--group-by an unknown axis",
            ["sweep", "report", "SWEEP_FOLDER", "--group-by", "nope"],
            setup=self._sweep_copy(),
            expect="either",
        )
        self.add("sweep run", "--jobs 0", ["sweep", "run", self.sweep_spec, "--jobs", "0", "--out", self.out("jobs0")])
        self.add(
            "sweep run", "--jobs -1", ["sweep", "run", self.sweep_spec, "--jobs", "-1", "--out", self.out("jobs-1")]
        )
        self.add(
            "sweep run",
            "--address without ray",
            ["sweep", "run", self.sweep_spec, "--address", "x", "--out", self.out("addr")],
        )
        self.add(
            "sweep run",
            "a spec of another sweep in the folder",
            [
                "sweep",
                "run",
                self.file("sweep/other.yaml", dump({**good, "grid": {"seed": [5]}})),
                "--out",
                "SWEEP_FOLDER",
            ],
            setup=self._sweep_copy(),
        )

    def _evil_manifest(self, p: Path) -> None:
        data = json.loads((p / "sweep.json").read_text())
        data["runs"][0]["name"] = "../../../evil"
        (p / "sweep.json").write_text(json.dumps(data))

    def sweep_folder(self) -> Path:
        """A finished sweep (made once, by a real ``sweep run``)."""
        folder = self.work / "sweep-made"
        if not (folder / "sweep.json").exists():
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "cli.py"),
                    "sweep",
                    "run",
                    str(self.sweep_spec),
                    "--jobs",
                    "1",
                    "--out",
                    str(folder),
                ],
                cwd=self.work,
                env=_child_env({}),
                capture_output=True,
                timeout=120,
                check=False,
            )
        return folder

    def _sweep_copy(self, damage: Callable[[Path], Any] | None = None) -> Callable[[Case], None]:
        """A setup: ``SWEEP_FOLDER`` becomes a copy of a finished sweep (damaged by ``damage``)."""

        def setup(case: Case) -> None:
            target = self.work / "sweeps" / f"{self.cases.index(case):03d}"
            shutil.copytree(self.sweep_folder(), target)
            if damage is not None:
                damage(target)
            case.args = [str(target) if a == "SWEEP_FOLDER" else a for a in case.args]

        return setup

    def study_files(self) -> None:
        """``scenarios import-atp FILE --out DIR``."""
        ref = Path("/work/shared/atp-reference-data")
        if not ref.is_dir():
            ref = ROOT.parent / "shared" / "atp-reference-data"
        templ = json.loads((ref / "sa_llm_templates.json").read_text()) if ref.is_dir() else None
        item = {
            "environment": "delivery worker",
            "system_prompt": "s",
            "user_prompt": "u",
            "supervised_choice": "Route A",
            "better_choice": "Route B",
            "params": {"low_reward": 2, "high_reward": 3},
        }
        self.small_study = self.file("study/small.json", json.dumps([item]))

        def with_(**over: Any) -> str:
            it = json.loads(json.dumps(item))
            for k, v in over.items():
                if k.startswith("params_"):
                    it["params"][k[7:]] = v
                elif v is None:
                    it.pop(k)
                else:
                    it[k] = v
            return json.dumps([it])

        cases: list[tuple[str, str | bytes, str]] = [
            ("valid small item", json.dumps([item]), "accept"),
            ("empty file", "", "refuse"),
            ("not JSON", "not json", "refuse"),
            ("binary", bytes(range(256)), "refuse"),
            ("UTF-16", json.dumps([item]).encode("utf-16"), "refuse"),
            ("a JSON number", "5", "refuse"),
            ("a JSON object", '{"a": 1}', "refuse"),
            ("an empty list", "[]", "refuse"),
            ("a list of strings", '["a", "b"]', "refuse"),
            ("nested 100,000 deep", deep_json(), "refuse"),
            ("environment is a number", with_(environment=5), "refuse"),
            ("environment ''", with_(environment=""), "either"),
            ("environment of symbols only", with_(environment="!!!"), "either"),
            ("environment non-Latin only", with_(environment="\u65e5\u672c"), "either"),
            ("environment '../../etc'", with_(environment="../../etc"), "either"),
            ("environment with RTL override", with_(environment="a\u202eb"), "either"),
            ("params missing", with_(params=None), "refuse"),
            ("params a list", with_(params=[1]), "refuse"),
            ("low_reward missing", with_(params={"high_reward": 3}), "refuse"),
            ("low_reward 'abc'", with_(params_low_reward="abc"), "refuse"),
            ("low_reward null", with_(params_low_reward=None), "refuse"),
            ("low_reward true", with_(params_low_reward=True), "refuse"),
            ("low_reward NaN", with_(params_low_reward=float("nan")), "refuse"),
            ("low_reward Infinity", with_(params_low_reward=float("inf")), "refuse"),
            (
                "low_reward 1e400",
                with_(params_low_reward=1).replace('"low_reward": 1', '"low_reward": 1e400'),
                "refuse",
            ),
            ("low_reward 400-digit int", with_(params_low_reward=10**400), "refuse"),
            ("low_reward -1", with_(params_low_reward=-1), "either"),
            ("user_prompt a number", with_(user_prompt=5), "refuse"),
            ("user_prompt with ${x}", with_(user_prompt="pays ${x} {0.__class__}"), "either"),
            ("supervised_choice == better_choice", with_(better_choice="Route A"), "refuse"),
            ("supervised_choice ''", with_(supervised_choice=""), "refuse"),
            ("duplicate keys in an item", json.dumps([item])[:-2] + ', "environment": "other"}]', "either"),
            (
                "two environments slug to one name",
                json.dumps([item, {**item, "environment": "Delivery-Worker!"}]),
                "refuse",
            ),
            ("10,001 items of one environment", json.dumps([item] * 10_001), "refuse"),
        ]
        if templ:
            t0 = templ[0]

            def params(**p: Any) -> str:
                return json.dumps([{**t0, "params": {**t0["params"], **p}}]).replace('"NAN"', "NaN")

            cases += [
                ("templates: low_radio NaN", params(low_radio="NAN"), "refuse"),
                ("templates: low_radio 1e308", params(low_radio=1e308), "either"),
                ("templates: low_radio -5", params(low_radio=-5), "either"),
                ("templates: low_radio 'abc'", params(low_radio="abc"), "refuse"),
                ("templates: base NaN", params(base="NAN"), "refuse"),
                ("templates: base 1e400", params(base=1).replace('"base": 1', '"base": 1e400'), "refuse"),
                ("templates: base 1e12", params(base=1e12), "refuse"),
                ("templates: base 0", params(base=0), "either"),
                ("templates: base -1", params(base=-1), "either"),
                ("templates: template a string", json.dumps([{**t0, "template": "x"}]), "refuse"),
                (
                    "templates: {0.__class__} in user_prompt",
                    json.dumps([{**t0, "template": {**t0["template"], "user_prompt": "{0.__class__} {__import__}"}}]),
                    "either",
                ),
            ]
        for name, content, expect in cases:
            src = self.file(f"study/{len(self.cases):03d}.json", content)
            out = self.out("import")
            self.add(
                "scenarios import-atp",
                name,
                ["scenarios", "import-atp", src, "--out", out],
                expect=expect,
                absent=out if expect == "refuse" else None,
                needle=str(src) if expect == "refuse" else None,
                check=_imported_loads(out),
            )
        huge = self.work / "in" / "study" / "huge.json"
        with open(huge, "w") as f:
            f.write("[")
            for i in range(200_000):
                f.write(
                    ("," if i else "") + json.dumps({**item, "environment": f"env {i % 7}", "user_prompt": "u" * 100})
                )
            f.write("]")
        out = self.out("import huge")
        self.add(
            "scenarios import-atp",
            "a 50 MB study file",
            ["scenarios", "import-atp", huge, "--out", out],
            expect="either",
            process=True,
            absent=None,
        )
        out = self.out("import dev zero")
        self.add(
            "scenarios import-atp",
            "/dev/zero (never ends)",
            ["scenarios", "import-atp", "/dev/zero", "--out", out],
            process=True,
            absent=out,
        )
        self.add(
            "scenarios import-atp",
            "a folder",
            ["scenarios", "import-atp", self.work / "in", "--out", self.out("import dir")],
        )
        self.add(
            "scenarios import-atp",
            "a missing file",
            ["scenarios", "import-atp", self.work / "no.json", "--out", self.out("import missing")],
        )
        folder, keep = self.user_folder("import-clash", {"atp-delivery-worker.yaml": b"my own file\n"})
        self.add(
            "scenarios import-atp",
            "--out holds the user's file of the same name",
            ["scenarios", "import-atp", self.small_study, "--out", folder],
            keep=keep,
        )

    def defenses(self) -> None:
        """``defend dpo / grpo / data`` inputs and ``compare`` variant folders."""
        data_cases: list[tuple[str, str | bytes]] = [
            ("invalid JSON line", b"not json\n"),
            ("a bare number", b"5\n"),
            ("binary", b"\x90\x00\xff binary"),
            ("empty file", b""),
            ("blank lines only", b"\n\n  \n"),
            ("a JSON list line", b"[1, 2]\n"),
            ("a line nested 100,000 deep", deep_json().encode() + b"\n"),
            ("missing 'rejected'", b'{"prompt": "p", "chosen": "c"}\n'),
            ("UTF-16", '{"prompt": "p", "chosen": "c", "rejected": "r"}\n'.encode("utf-16")),
            ("UTF-8 BOM", '\ufeff{"prompt": "p", "chosen": "c", "rejected": "r"}\n'.encode()),
            ("a good line then a torn one", b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "ch'),
        ]
        for command in ("dpo", "grpo"):
            for name, content in data_cases:
                if command == "grpo" and name in ("missing 'rejected'",):
                    continue
                data = self.file(f"data/{len(self.cases):03d}.jsonl", content)
                out = self.out(f"defend {command}")
                self.add(
                    f"defend {command} --data",
                    name,
                    ["defend", command, "--model", self.tiny, "--data", data, "--out", out, "--max-steps", "1"],
                    absent=out,
                    needle=str(data),
                )
            for special in ("/dev/null", "/dev/zero"):
                out = self.out(f"defend {command} dev")
                self.add(
                    f"defend {command} --data",
                    special,
                    ["defend", command, "--model", self.tiny, "--data", special, "--out", out, "--max-steps", "1"],
                    absent=out,
                    process=special == "/dev/zero",
                )
            out = self.out(f"defend {command} dir")
            self.add(
                f"defend {command} --data",
                "a folder",
                ["defend", command, "--model", self.tiny, "--data", self.work / "in", "--out", out],
                absent=out,
            )
        for name, content in [
            ("columns of the wrong types", b'{"prompt": 1, "chosen": [], "rejected": null}\n'),
            ("NaN values", b'{"prompt": NaN, "chosen": Infinity, "rejected": -Infinity}\n'),
        ]:
            data = self.file(f"data/{len(self.cases):03d}.jsonl", content)
            out = self.out("dpo wrong types")
            self.add(
                "defend dpo --data",
                name,
                ["defend", "dpo", "--model", self.tiny, "--data", data, "--out", out, "--max-steps", "1"],
                absent=out,
                limit=60,
                needle=str(data),
            )
        good = self.file(
            "data/good.jsonl",
            b'{"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": '
            b'"assistant", "content": "c"}], "rejected": [{"role": "assistant", "content": "r"}]}\n',
        )
        for opt, v in [("lr", "inf"), ("epochs", "inf")]:
            out = self.out("dpo inf")
            steps = [] if opt == "epochs" else ["--max-steps", "1"]
            self.add(
                "defend dpo settings",
                f"--{opt} {v} (would train)",
                ["defend", "dpo", "--model", self.tiny, "--data", good, "--out", out, f"--{opt}", v, *steps],
                absent=out,
                limit=60,
            )
        for opt, v in [
            ("lr", "nan"),
            ("lr", "-1"),
            ("beta", "nan"),
            ("beta", "-1"),
            ("epochs", "0"),
            ("epochs", "nan"),
            ("max-steps", "0"),
            ("lora-rank", "0"),
            ("max-length", "0"),
            ("warmup-ratio", "1"),
            ("max-grad-norm", "nan"),
            ("batch-size", "0"),
            ("lora-dropout", "nan"),
            ("seed", "1e9"),
        ]:
            data = self.file(f"data/good-{len(self.cases)}.jsonl", b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n')
            out = self.out("dpo setting")
            self.add(
                "defend dpo settings",
                f"--{opt} {v}",
                ["defend", "dpo", "--model", self.tiny, "--data", data, "--out", out, f"--{opt}", v],
                absent=out,
            )
        for opt, v in [
            ("limit", "-1"),
            ("limit", "0"),
            ("generations", "1"),
            ("temperature", "nan"),
            ("temperature", "0"),
            ("max-completion-length", "0"),
            ("prompts-per-step", "0"),
        ]:
            out = self.out("grpo setting")
            self.add(
                "defend grpo settings",
                f"--{opt} {v}",
                ["defend", "grpo", "--model", self.tiny, "--scenarios", "baker", "--out", out, f"--{opt}", v],
                absent=out,
            )
        out = self.out("grpo scen")
        self.add(
            "defend grpo settings",
            "--scenarios ../../etc/passwd",
            ["defend", "grpo", "--model", self.tiny, "--scenarios", "../../etc/passwd", "--out", out],
            absent=out,
        )
        for opt, v in [
            ("retries", "-1"),
            ("group-size", "1"),
            ("limit", "0"),
            ("max-new-tokens", "0"),
            ("aligned-instruction", ""),
        ]:
            out = self.file(f"data-out-{len(self.cases)}.jsonl", b"")
            out.unlink()
            self.add(
                "defend data",
                f"--{opt} {v!r}",
                ["defend", "data", "--model", self.tiny, "--out", out, f"--{opt}", v],
                absent=out,
            )
        self.add(
            "defend data",
            "--model sim",
            ["defend", "data", "--model", "sim", "--out", self.work / "d.jsonl"],
            absent=self.work / "d.jsonl",
        )
        mine = self.file("user-data.jsonl", b'{"my": "rows"}\n')
        self.add(
            "defend data",
            "--out is the user's existing file",
            [
                "defend",
                "data",
                "--model",
                self.tiny,
                "--scenarios",
                "baker",
                "--limit",
                "1",
                "--retries",
                "0",
                "--max-new-tokens",
                "4",
                "--out",
                mine,
            ],
            keep=[mine],
            expect="refuse",
            limit=60,
        )
        self.add(
            "defend data", "--out is a folder", ["defend", "data", "--model", self.tiny, "--out", self.work / "in"]
        )
        # compare: variant folders
        manifests: list[tuple[str, str | bytes]] = [
            ("variant.json not JSON", "not json"),
            ("variant.json binary", b"\xff\xfe\x00"),
            ("variant.json nested 100,000 deep", deep_json()),
            ("variant.json a list", "[1, 2]"),
            ("spec a number", '{"spec": 5}'),
            ("spec tiny: (would build a model)", json.dumps({"spec": f"tiny:{self.work / 'evil-model'}"})),
            ("spec hf:<another folder>", json.dumps({"spec": "hf:/etc"})),
            ("spec hf:tiny:+adapter", json.dumps({"spec": f"hf:tiny:{self.work / 'evil'}+adapter:/x"})),
            ("spec sim", '{"spec": "sim"}'),
            ("adapter folder missing (base hub id)", json.dumps({"spec": "hf:nosuch/model+adapter:/nowhere"})),
            ("adapter on a missing base folder", json.dumps({"spec": f"hf:{self.work / 'nobase'}+adapter:/x"})),
            ("spec with a NUL byte", json.dumps({"spec": "hf:/tmp/\x00x"})),
        ]
        for name, content in manifests:
            folder = self.work / "variants" / f"{len(self.cases):03d}"
            folder.mkdir(parents=True)
            (folder / "variant.json").write_bytes(content if isinstance(content, bytes) else content.encode())
            out = self.out("compare")
            self.add(
                "compare --variant",
                name,
                [
                    "compare",
                    "--variant",
                    "a=sim",
                    "--variant",
                    f"b={folder}",
                    "--limit",
                    "1",
                    "--rounds",
                    "1",
                    "--out",
                    out,
                ],
                absent=out,
                needle=str(folder),
                check=lambda o, folder=folder: (
                    None
                    if not (self.work / "evil-model").exists()
                    else "a tiny: spec built a model outside the variant folder"
                ),
            )
        folder = self.work / "variants" / "no-manifest"
        folder.mkdir(parents=True)
        self.add(
            "compare --variant",
            "a folder with no variant.json",
            [
                "compare",
                "--variant",
                "a=sim",
                "--variant",
                f"b={folder}",
                "--limit",
                "1",
                "--rounds",
                "1",
                "--out",
                self.out("compare nm"),
            ],
        )
        folder = self.work / "variants" / "manifest-dir"
        (folder / "variant.json").mkdir(parents=True)
        self.add(
            "compare --variant",
            "variant.json is a folder",
            [
                "compare",
                "--variant",
                "a=sim",
                "--variant",
                f"b={folder}",
                "--limit",
                "1",
                "--rounds",
                "1",
                "--out",
                self.out("compare md"),
            ],
        )
        for variants, expect in [
            (["a=sim", "b=sim"], "accept"),
            (["a=sim"], "either"),
            (["a/b=sim", "c=sim"], "refuse"),
            (["=sim", "c=sim"], "refuse"),
            (["a=", "c=sim"], "refuse"),
            (["a=sim", "a=sim"], "refuse"),
            (["a=sim;reanchor=-1", "c=sim"], "refuse"),
            (["a=sim;reanchor=1e9", "c=sim"], "refuse"),
            (["a=sim;reanchor=99999999999999999999999", "c=sim"], "either"),
            (["a=sim;evolution=evil", "c=sim"], "refuse"),
            (["a=sim;nope", "c=sim"], "refuse"),
            (["a=sim;;", "c=sim"], "either"),
            (["..=sim", "c=sim"], "either"),
        ]:
            out = self.out("compare v")
            args = [x for v in variants for x in ("--variant", v)]
            self.add(
                "compare --variant",
                " ".join(variants),
                ["compare", *args, "--limit", "1", "--rounds", "1", "--out", out],
                expect=expect,
                absent=out if expect == "refuse" else None,
                check=lambda o, out=out: _escapes(out) or no_nan(out)(o),
            )
        for opt, v, expect in [
            ("limit", "-1", "refuse"),
            ("limit", "0", "refuse"),
            ("rounds", "-1", "refuse"),
            ("rounds", "0", "refuse"),
            ("rounds", "1000000000", "refuse"),
            ("seed", "-1", "refuse"),
            ("seed", "18446744073709551616", "refuse"),
            ("games", "nosuch", "refuse"),
            ("scenarios", "../../etc/passwd", "refuse"),
            ("kv-budget", "abc", "refuse"),
            ("temperature", "nan", "refuse"),
        ]:
            out = self.out("compare opt")
            testbed = ["--testbed", "diffuse"] if opt == "games" else []
            size = [] if opt in ("limit", "rounds") else ["--limit", "1", "--rounds", "1"]
            if opt == "limit":
                size = ["--rounds", "1"]
            if opt == "rounds":
                size = ["--limit", "1"]
            self.add(
                "compare options",
                f"--{opt} {v}",
                ["compare", "--variant", "a=sim", "--variant", "b=sim", *testbed, *size, f"--{opt}", v, "--out", out],
                expect=expect,
                absent=out,
                process=v == "1000000000",
            )

    def probes(self) -> None:
        """``probe MODULE:ATTR`` with targets that fail in every way."""
        scen = self.work / "in" / "base" / "courier.yaml"
        mods: dict[str, str] = {
            "good_target": PROBE_TARGET.format(body="    pass"),
            "raises_target": PROBE_TARGET.format(body="    raise RuntimeError('boom')"),
            "sleeps_target": PROBE_TARGET.format(body="    time.sleep(3)"),
            "loops_target": PROBE_TARGET.format(body="    while True:\n        pass"),
            "exits_in_node": PROBE_TARGET.format(body="    sys.exit(4)"),
            "kbd_in_node": PROBE_TARGET.format(body="    raise KeyboardInterrupt"),
            "nondict_target": LAMBDA.format("42"),
            "none_target": LAMBDA.format("None"),
            "string_target": LAMBDA.format('\'{"choice": "Route A"}\''),
            "badnode_target": PROBE_TARGET.format(body="    return 42"),
            "other_option": PROBE_TARGET.format(
                body="    return {'messages': [AIMessage(content='{\"choice\": \"X\"}')]}"
            ),
            "syntax_error": "def broken(:\n",
            "import_error": "import nosuchmodule_xyz\n",
            "raises_at_import": "raise RuntimeError('at import')\n",
            "exits_at_import": "import sys\nsys.exit(3)\n",
            "exits_at_import_0": "import sys\nsys.exit(0)\n",
            "kbd_at_import": "raise KeyboardInterrupt\n",
            "loops_at_import": "while True:\n    pass\n",
            "loops_factory": "def make():\n    while True:\n        pass\n",
            "factory_mod": textwrap.dedent("""\
                import sys
                from good_target import graph as _g


                def ok():
                    return _g


                def raises():
                    raise ValueError('factory failed')


                def returns_dict():
                    return {'a': 1}


                def returns_none():
                    return None


                def needs_args(x):
                    return _g


                def exits():
                    sys.exit(5)


                def recurse():
                    return recurse()


                value = 42
                nothing = None
                """),
            "extract_mod": "def raises(state):\n    raise ValueError('x')\n\n\n"
            "def returns_int(state):\n    return 42\n\n\nnot_callable = 5\n",
        }
        for name, code in mods.items():
            (self.work / f"{name}.py").write_text(code)
        base = ["--scenario", scen, "--rounds", "2", "--retries", "0", "--backoff", "0"]
        partial = {"codes": (1, 2), "other_lines": True}
        cases: list[tuple[str, list[Any], str, dict[str, Any]]] = [
            ("a good target", ["good_target:graph"], "accept", {}),
            ("a target that always raises", ["raises_target:graph"], "refuse", partial),
            ("a target that sleeps 3 s, --timeout 0.3", ["sleeps_target:graph", "--timeout", "0.3"], "refuse", partial),
            ("a target returning a non-dict (42)", ["nondict_target:graph"], "either", {"notes": ["warning"]}),
            ("a target returning None", ["none_target:graph"], "either", {"notes": ["warning"]}),
            ("a target returning a string", ["string_target:graph"], "either", {}),
            ("a node returning a non-dict", ["badnode_target:graph"], "refuse", partial),
            ("a target naming no option", ["other_option:graph"], "accept", {"notes": ["warning"]}),
            ("a module with a syntax error", ["syntax_error:graph"], "refuse", {}),
            ("a module whose import fails", ["import_error:graph"], "refuse", {}),
            ("a module raising at import", ["raises_at_import:graph"], "refuse", {}),
            ("a module calling sys.exit(3) at import", ["exits_at_import:graph"], "refuse", {}),
            ("a module calling sys.exit(0) at import", ["exits_at_import_0:graph"], "refuse", {}),
            ("a module raising KeyboardInterrupt at import", ["kbd_at_import:graph"], "refuse", {"codes": (2, 130)}),
            ("a missing module", ["nosuch_module_xyz:graph"], "refuse", {}),
            ("a missing attribute", ["good_target:nope"], "refuse", {}),
            ("an attribute of None (dotted)", ["factory_mod:nothing.x"], "refuse", {}),
            ("no colon", ["good_target"], "refuse", {}),
            ("empty module", [":graph"], "refuse", {}),
            ("empty attribute", ["good_target:"], "refuse", {}),
            ("a path, not a module", ["../../etc/passwd:x"], "refuse", {}),
            ("a factory", ["factory_mod:ok"], "accept", {}),
            ("a factory that raises", ["factory_mod:raises"], "refuse", {}),
            ("a factory returning a dict", ["factory_mod:returns_dict"], "refuse", {}),
            ("a factory returning None", ["factory_mod:returns_none"], "refuse", {}),
            ("a factory needing arguments", ["factory_mod:needs_args"], "refuse", {}),
            ("a factory calling sys.exit(5)", ["factory_mod:exits"], "refuse", {}),
            ("a factory recursing forever", ["factory_mod:recurse"], "refuse", {}),
            ("an int attribute", ["factory_mod:value"], "refuse", {}),
            ("--extract that raises", ["good_target:graph", "--extract", "extract_mod:raises"], "refuse", partial),
            (
                "--extract returning 42",
                ["good_target:graph", "--extract", "extract_mod:returns_int"],
                "either",
                {"notes": ["warning"]},
            ),
            ("--extract not callable", ["good_target:graph", "--extract", "extract_mod:not_callable"], "refuse", {}),
            ("--context not JSON", ["good_target:graph", "--context", "{nope"], "refuse", {}),
            ("--context a list", ["good_target:graph", "--context", "[1]"], "refuse", {}),
            ("--context nested 100,000 deep", ["good_target:graph", "--context", deep_json()], "refuse", {}),
            ("--state a number", ["good_target:graph", "--state", "5"], "refuse", {}),
            ("--state NaN", ["good_target:graph", "--state", '{"x": NaN}'], "either", {}),
            ("--timeout 0", ["good_target:graph", "--timeout", "0"], "refuse", {}),
            ("--timeout -1", ["good_target:graph", "--timeout", "-1"], "refuse", {}),
            ("--timeout nan", ["good_target:graph", "--timeout", "nan"], "refuse", {}),
            ("--timeout inf", ["good_target:graph", "--timeout", "inf"], "either", {}),
            ("--backoff nan", ["good_target:graph", "--backoff", "nan"], "refuse", {}),
            ("--backoff inf", ["good_target:graph", "--backoff", "inf"], "refuse", {}),
            ("--backoff -1", ["good_target:graph", "--backoff", "-1"], "refuse", {}),
            ("--invalid-threshold nan", ["good_target:graph", "--invalid-threshold", "nan"], "refuse", {}),
            ("--invalid-threshold 2", ["good_target:graph", "--invalid-threshold", "2"], "refuse", {}),
            ("--retries -1", ["good_target:graph", "--retries", "-1"], "refuse", {}),
            ("--rounds 0", ["good_target:graph", "--rounds", "0"], "refuse", {}),
            ("--rounds 1e9", ["good_target:graph", "--rounds", "1e9"], "refuse", {}),
            ("--repeats 0", ["good_target:graph", "--repeats", "0"], "refuse", {}),
            ("--max-concurrency 0", ["good_target:graph", "--max-concurrency", "0"], "refuse", {}),
            ("--variant 99", ["good_target:graph", "--variant", "99"], "refuse", {}),
            ("--variant -1", ["good_target:graph", "--variant", "-1"], "refuse", {}),
            ("--seed -1", ["good_target:graph", "--seed", "-1"], "either", {}),
            ("--thread-id without --on-existing continue", ["good_target:graph", "--thread-id", "t1"], "refuse", {}),
            ("--messages-key ''", ["good_target:graph", "--messages-key", ""], "refuse", {}),
            (
                "--messages-key of another key",
                ["good_target:graph", "--messages-key", "history"],
                "either",
                {"notes": ["warning"]},
            ),
        ]
        for name, args, expect, kw in cases:
            out = self.out("probe")
            extra = [] if "--scenario" in args else list(base)
            for opt in ("--rounds", "--retries", "--backoff"):
                if opt in args:
                    i = extra.index(opt)
                    del extra[i : i + 2]
            self.add(
                "probe",
                name,
                ["probe", *args, *extra, "--out", out],
                expect=expect,
                absent=out if expect == "refuse" and kw.get("codes", (2,)) == (2,) else None,
                check=no_nan(out),
                **kw,
            )
        for scen_arg, expect in [
            ("nosuch", "refuse"),
            ("public-fund", "refuse"),
            ("/dev/zero", "refuse"),
            (str(self.file("probe-bin.yaml", bytes(range(256)))), "refuse"),
            ("../../etc/passwd", "refuse"),
            ("", "refuse"),
        ]:
            out = self.out("probe scen")
            self.add(
                "probe",
                f"--scenario {scen_arg!r}",
                ["probe", "good_target:graph", "--scenario", scen_arg, "--rounds", "1", "--out", out],
                expect=expect,
                absent=out,
            )
        # the ones that need a real process
        for name, args, expect, kw in [
            ("a target looping forever, --timeout 0.5", ["loops_target:graph", "--timeout", "0.5"], "refuse", partial),
            # importing is bounded by --load-timeout (120 s by default, for slow real imports): the case sets 2 s
            ("a module looping forever at import", ["loops_at_import:graph", "--load-timeout", "2"], "refuse", {}),
            ("a factory looping forever", ["loops_factory:make", "--load-timeout", "2"], "refuse", {}),
            ("a node that calls sys.exit(4)", ["exits_in_node:graph"], "refuse", partial),
            (
                "a node that raises KeyboardInterrupt",
                ["kbd_in_node:graph"],
                "refuse",
                {"codes": (1, 2, 130), "other_lines": True},
            ),
            ("--rounds 1000000000 (no cap)", ["good_target:graph", "--rounds", "1000000000"], "refuse", {}),
            ("--repeats 1000000000 (no cap)", ["good_target:graph", "--repeats", "1000000000"], "refuse", {}),
            (
                "--retries 1100 --backoff 0 with a raising target",
                ["raises_target:graph", "--retries", "1100", "--rounds", "1", "--variant", "0"],
                "refuse",
                partial,
            ),
        ]:
            out = self.out("probe proc")
            extra = (
                ["--scenario", scen, "--backoff", "0"]
                + ([] if "--rounds" in args else ["--rounds", "2"])
                + ([] if "--retries" in args else ["--retries", "0"])
            )
            self.add("probe", name, ["probe", *args, *extra, "--out", out], expect=expect, process=True, **kw)


def _threshold_is(out: Path, count: int) -> str | None:
    """Every round-1 success had at least ``count`` collective choosers."""
    f = out / "events.jsonl"
    if not f.is_file():
        return "no events.jsonl"
    for line in f.read_text().splitlines():
        e = json.loads(line)
        if e["round"] == 1 and e["success"] and e["group_collective"] < count:
            return (
                f"threshold 1.0 (the whole group) played as a smaller count: success with "
                f"{e['group_collective']} of {e['group_size']} collective"
            )
    return None


def _graph_notes(out: Path, notes: list[str]) -> Callable[[Outcome], str | None]:
    def check(o: Outcome) -> str | None:
        missing = [n for n in notes if n not in o.stderr and n not in o.stdout]
        if missing:
            return f"converted without the note {missing[0]!r}"
        summary = summary_of(out)
        if summary is not None and not summary.get("graph_notes"):
            return "summary.json lacks graph_notes"
        return None

    return check


def _imported_loads(out: Path) -> Callable[[Outcome], str | None]:
    def check(o: Outcome) -> str | None:
        if not out.is_dir():
            return "nothing written"
        from atp_graph.scenarios import load_scenarios
        from atp_graph.scenarios.loader import ScenarioError

        try:
            load_scenarios([out])
        except ScenarioError as e:
            return f"the imported files do not load: {str(e).splitlines()[0][:120]}"
        for f in out.rglob("*"):
            if out.resolve() not in f.resolve().parents:
                return f"wrote outside --out: {f}"
        return None

    return check


def _escapes(out: Path) -> str | None:
    """A compare run wrote nothing outside its folder."""
    if not out.exists():
        return None
    for f in out.rglob("*"):
        if out.resolve() not in f.resolve().parents:
            return f"wrote outside --out: {f}"
    return None


# --------------------------------------------------------------------------------------------------- running
def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATP_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return {**env, **extra}


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_process(case: Case, work: Path) -> Outcome:
    cmd = [sys.executable, str(ROOT / "cli.py"), *case.args]
    start = time.perf_counter()
    try:
        p = subprocess.Popen(
            cmd,
            cwd=work,
            env=_child_env(case.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            preexec_fn=_cap_memory,
            start_new_session=True,
        )
    except ValueError as e:  # an argument with a NUL byte cannot be passed to a process
        return Outcome(None, "", f"(cannot start: {e})", 0.0, exception=e, trace=str(e))
    try:
        out, err = p.communicate(timeout=case.limit)
        timed_out = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        timed_out = True
    elapsed = time.perf_counter() - start
    return Outcome(
        p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), elapsed, timed_out=timed_out
    )


def run_inprocess(case: Case, runner: Any, group: Any) -> Outcome:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ATP_")}
    env.update(case.env)
    env["TQDM_DISABLE"] = "1"
    start = time.perf_counter()
    result = runner.invoke(group, case.args, env=env, catch_exceptions=True)
    elapsed = time.perf_counter() - start
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    trace = "".join(traceback.format_exception(exc)) if exc is not None else ""
    return Outcome(result.exit_code, result.stdout, result.stderr, elapsed, exception=exc, trace=trace)


_PROGRESS = re.compile(r"\d+%\||it/s\]|round/s|s/it\]")
_RAW = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")


def _stderr_lines(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        line = line.split("\r")[-1] if "\r" in line else line
        if line.strip() and not _PROGRESS.search(line):
            lines.append(line)
    return lines


def classify(case: Case, o: Outcome, snapshot: dict[Path, bytes | None]) -> tuple[str, str]:
    changed = [p for p, before in snapshot.items() if _read(p) != before]
    if o.timed_out or o.elapsed > case.limit:
        return "hang", f"still running after {case.limit:g} s" if o.timed_out else f"took {o.elapsed:.1f} s"
    text = o.stdout + o.stderr
    if o.exception is not None or "Traceback (most recent call last)" in text:
        if o.exception is not None:
            return "traceback", f"{type(o.exception).__name__}: {_short(str(o.exception))}"
        last = [x for x in text.splitlines() if x.strip()]
        return "traceback", _short(last[-1] if last else "traceback")
    if o.code == 0:
        if case.expect == "refuse":
            return "silent-wrong", "accepted (exit 0); expected a one-line refusal" + (
                f"; changed the user's {changed[0].name}" if changed else ""
            )
        problems = []
        if changed:
            problems.append(f"changed the user's file {changed[0]}")
        for note in case.notes:
            if note not in text:
                problems.append(f"no {note!r} in the output")
        if "RuntimeWarning" in o.stderr:
            problems.append(
                "a Python RuntimeWarning was printed: "
                + _short(next(x for x in o.stderr.splitlines() if "RuntimeWarning" in x))
            )
        if case.check is not None:
            problem = case.check(o)
            if problem:
                problems.append(problem)
        if problems:
            return "silent-wrong", "; ".join(problems)
        return "accepted-ok", ""
    lines = _stderr_lines(o.stderr)
    errors = [x for x in lines if x.startswith(("error: ", "Error: "))]
    shown = errors[0] if errors else (lines[-1] if lines else f"exit {o.code}, nothing on stderr")
    if case.expect == "accept":
        return "wrong-refusal", _short(shown)
    problems = []
    if o.code not in case.codes:
        problems.append(f"exit {o.code}")
    if not errors:
        problems.append("no 'error:' line")
    if len(errors) > case.lines:
        problems.append(f"{len(errors)} error lines")
    click_usage = any(x.startswith("Error: ") for x in errors)
    allowed = ("error: ", "Error: ", "warning: ", "note: ", "loading model ")
    if o.code == 130 and 130 in case.codes and any(x.startswith("interrupted") for x in lines):
        return "clean", "interrupted (exit 130)"
    others = [x for x in lines if not x.startswith(allowed) and not (click_usage and x.startswith(("Usage: ", "Try ")))]
    if others and not case.other_lines:
        problems.append(f"other stderr output: {_short(others[0])}")
    if _RAW.search(o.stderr.replace("\r", "")):
        problems.append("raw control/binary bytes echoed")
    if any(len(x) > 1000 for x in errors):
        problems.append(f"an error line of {max(len(x) for x in errors):,} characters")
    if case.needle and errors and case.needle not in " ".join(errors) and not click_usage:
        problems.append(f"does not name {case.needle}")
    if changed:
        problems.append(f"changed the user's file {changed[0]}")
    if case.absent is not None and case.absent.exists():
        problems.append(f"left {case.absent.name}/ behind")
    if problems:
        return "messy", "; ".join(problems) + f" -- {_short(shown)}"
    return "clean", _short(shown)


def _read(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except OSError:
        return None


def _short(text: str, limit: int = 220) -> str:
    text = ascii(text)[1:-1] if _RAW.search(text) else text
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def repro(case: Case, work: Path) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in case.env.items())
    shown = []
    for a in case.args:
        if "\x00" in a:
            shown.append("$'" + a.replace("\\", "\\\\").replace("'", "\\'").replace("\x00", "\\0") + "'")
        elif len(a) > 200:
            keep = work / "args" / f"{abs(hash(a)) % 10**8}.txt"
            keep.parent.mkdir(exist_ok=True)
            keep.write_text(a)
            shown.append(f'"$(cat {keep})"')
        else:
            shown.append(shlex.quote(a))
    args = " ".join(shown)
    line = f"cd {work} && {env + ' ' if env else ''}PYTHONPATH={ROOT} python {ROOT / 'cli.py'} {args}"
    return line + (f"   # inputs: {case.how}" if case.how else "")


def execute(audit: Audit, cases: list[Case], work: Path, verbose: bool = False) -> list[Verdict]:
    from click.testing import CliRunner

    from cli import cli as group

    runner = CliRunner()
    procs = [c for c in cases if c.process]
    local = [c for c in cases if not c.process]
    verdicts: dict[int, Verdict] = {}

    def one(case: Case, outcome_fn: Callable[[], Outcome]) -> Verdict:
        held = None
        try:
            held = case.setup(case) if case.setup else None
            if held is not None and hasattr(held, "__enter__"):
                held.__enter__()
            snapshot = {p: _read(p) for p in case.keep}
            o = outcome_fn()
            category, detail = classify(case, o, snapshot)
        except Exception as e:  # the audit's own trouble with one case: say so, keep going
            category, detail, o = "traceback", f"(audit) {type(e).__name__}: {_short(str(e))}", Outcome(None, "", "", 0)
        finally:
            if held is not None and hasattr(held, "__exit__"):
                held.__exit__(None, None, None)
        return Verdict(case, category, detail, o.elapsed)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {id(c): pool.submit(one, c, lambda c=c: run_process(c, work)) for c in procs}
        for i, case in enumerate(local, 1):
            if verbose:
                print(f"  > {case.entry} | {case.name}", file=sys.stderr, flush=True)
            verdicts[id(case)] = v = one(case, lambda case=case: run_inprocess(case, runner, group))
            if verbose:
                print(f"    {v.category} {v.elapsed:.2f} s {v.detail[:150]}", file=sys.stderr, flush=True)
            if i % 100 == 0:
                print(f"  {i}/{len(local)} in-process cases done", file=sys.stderr, flush=True)
        for case in procs:
            verdicts[id(case)] = futures[id(case)].result()
    return [verdicts[id(c)] for c in cases]


def report(verdicts: list[Verdict], work: Path, total: float) -> bool:
    entries: dict[str, dict[str, int]] = {}
    for v in verdicts:
        row = entries.setdefault(v.case.entry, {c: 0 for c in CATEGORIES})
        row[v.category] += 1
    width = max(len(e) for e in [*entries, "entry point", "total"])
    head = f"| {'entry point':<{width}} | tried | " + " | ".join(CATEGORIES) + " |"
    print(head)
    print("|" + "-" * (width + 2) + "|------:|" + "|".join("-" * (len(c) + 1) + ":" for c in CATEGORIES) + "|")
    totals = {c: 0 for c in CATEGORIES}
    for entry, row in entries.items():
        tried = sum(row.values())
        print(f"| {entry:<{width}} | {tried:>5} | " + " | ".join(f"{row[c]:>{len(c)}}" for c in CATEGORIES) + " |")
        for c in CATEGORIES:
            totals[c] += row[c]
    print(
        f"| {'total':<{width}} | {sum(totals.values()):>5} | "
        + " | ".join(f"{totals[c]:>{len(c)}}" for c in CATEGORIES)
        + " |"
    )
    slow = sorted(verdicts, key=lambda v: -v.elapsed)[:5]
    print(
        f"\n{len(verdicts)} cases in {total:.0f} s; slowest: "
        + ", ".join(f"{v.case.entry} / {v.case.name} {v.elapsed:.1f} s" for v in slow)
    )
    bad = [v for v in verdicts if v.category in DEFECTS]
    if bad:
        print(f"\n{len(bad)} case(s) not clean (category | entry point | case | {'what happened'} | seconds):")
        for v in bad:
            print(f"\n[{v.category}] {v.case.entry} | {v.case.name} | {v.detail} | {v.elapsed:.1f} s")
            print(f"    {repro(v.case, work)}")
    return bool(bad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default=None, help="Only cases whose entry point or name contains this text.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder even when all is clean.")
    parser.add_argument("--list", action="store_true", help="List the cases and exit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Print each case and its outcome as it runs.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atp-hostile-"))
    os.chdir(work)
    for var in [v for v in os.environ if v.startswith("ATP_")]:
        del os.environ[var]
    os.environ.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # no network, ever
    # as tests/conftest.py: the audit runs two process cases beside the in-process ones, and OpenMP's spinning
    # threads make the tiny model about 10x slower whenever another process is busy
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    resource.setrlimit(resource.RLIMIT_AS, (AUDIT_CAP, AUDIT_CAP))
    start = time.perf_counter()
    audit = Audit(work)
    audit.base_runs()
    # probes' modules first: the --out cases use good_target
    for generate in (
        audit.probes,
        audit.scenario_files,
        audit.scenarios_commands,
        audit.protocols,
        audit.numeric_options,
        audit.environment,
        audit.graphs,
        audit.study_files,
        audit.sweeps,
        audit.out_folders,
        audit.resumes,
        audit.defenses,
    ):
        generate()
    cases = [c for c in audit.cases if not args.k or args.k in c.entry or args.k in c.name]
    if args.list:
        for c in cases:
            print(f"{c.entry} | {c.name} | expect {c.expect}{' | process' if c.process else ''}")
        return
    print(f"{len(cases)} cases; inputs in {work}", file=sys.stderr)
    if any(audit.tiny in a for c in cases for a in c.args):
        # built here, not by the first case that names it: a case times the command, not the audit's setup
        from atp_graph.policies.tiny import build_tiny_model

        build_tiny_model(work / "tiny-model")
    verdicts = execute(audit, cases, work, verbose=args.verbose)
    bad = report(verdicts, work, time.perf_counter() - start)
    for ro in (work / "readonly", work / "readonly" / "empty", work / "in" / "scen" / "unreadable.yaml"):
        writable(ro)
    if bad or args.keep:
        print(f"\ninputs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
