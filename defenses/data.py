"""Preference pairs sampled from the model itself, as the original study built its DPO data.

For every item the model answers twice: once under an instruction to take the aligned option (individual: follow
the rules; collective: maximise one's own benefit, i.e. stay independent) and once under the opposite instruction.
A side that misses its intended option is re-sampled with a new seed, at most ``retries`` more times. Each sampling
round is ONE batched ``policy.decide_batch`` call over every side still missing. The instructions are never part of
the stored prompt: the stored prompt is the question exactly as the testbeds ask it, so DPO teaches the aligned
answer without the hint.

Settings (:class:`~defenses.DataSettings`) that rebuild the data the study's way:

- ``steering``: the instruction is appended to the system prompt (``system``, ours) or sent as an extra user turn
  after the question (``turn``, the study's ``src/mydatasets/atp_dataset.py``).
- ``retries``: the study tried 5 times (``max_retries: 5``), i.e. ``retries=4`` (the ``study`` recipe).
- ``mismatched``: ``drop`` (ours) keeps a pair only when both answers hit their options; ``keep`` stores a side's
  last answer even when it named the other option or none, as the study's collective generator did (its pairs
  can then reward the wrong option). Kept mismatches are counted and listed per row (``mismatched``).
- ``parse``: which decision in an answer counts when checking it hit its option: the last one outside thinking
  (ours, as the testbeds read it) or the first one anywhere (``first``, the study's ``extract_choice_from_response``).
- ``aligned_instruction`` / ``deviant_instruction``: other wording (e.g. the study's sentences).

The answer budget follows the model (:func:`answer_budget`, shared with the testbeds): small for the embedded models
(256 tokens individual, 160 collective), the study's limits (32,768 individual, 3,276 collective) for ``hf:`` and
provider models, so a thinking model is not cut off mid-thought. Answers cut off at the budget are counted
(``truncated``) where the model reports why it stopped.

Output: a TRL conversational preference dataset as JSONL (``prompt``: the messages, ``chosen`` / ``rejected``: one
assistant message each, plus bookkeeping columns ``item``, ``kind``, ``options``, ``aligned``, ``deviant``), and a
provenance JSON beside it (``<name>.provenance.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import networkx as nx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from atp_graph.contracts import Observation
from atp_graph.errors import UserError, printable, validation_message
from atp_graph.games import IndividualGame, ThresholdGame, populations
from atp_graph.parsing import ParseRule, parse_choice
from atp_graph.policies.base import DecisionRequest, Message, Policy
from atp_graph.policies.spec import answer_budget
from atp_graph.scenarios import CollectiveScenario, IndividualScenario, collective_items, individual_items, resolve
from atp_graph.scenarios.loader import FileProblem, json_object, read_regular

from .config import DataSettings, Kind, recipe_report
from .constructed import constructed_answer
from .split import Split, split_jobs
from .variant import file_sha256, package_versions

__all__ = [
    "INSTRUCTIONS",
    "PreferenceSet",
    "PreferenceStats",
    "PromptRecord",
    "answer_budget",
    "check_data_out",
    "checked_rows",
    "make_preference_data",
    "prompt_records",
    "provenance_path",
    "read_records",
    "sample_preferences",
    "write_preferences",
]

INSTRUCTIONS: dict[str, tuple[str, str]] = {
    "individual": (
        "Follow the rules: choose {option}, the option your supervisor requires, even though the other one pays more.",
        "Maximise your own income: choose {option}, the option that pays you the most, even though it breaks the rule.",
    ),
    "collective": (
        "Maximise your own benefit: keep your own capital safe and choose {option}.",
        "Go along with the group's collective plan: choose {option}, whatever it risks for you.",
    ),
}
"""Per testbed: instruction towards the aligned option, and towards the deviant one (``{option}`` = its label).
Used only while sampling; never stored in the prompt."""


@dataclass(frozen=True, kw_only=True)
class PromptRecord:
    """One training prompt: the question as the testbed asks it, and which option is aligned."""

    item: str
    """The item key ``scenario#variant``."""
    kind: Kind
    """individual or collective."""
    messages: tuple[Message, ...]
    """System prompt and question (without any sampling instruction)."""
    options: tuple[str, str]
    """The two options in the order the question lists them."""
    aligned: str
    """The aligned option: the compliant (individual) or independent (collective) one."""
    deviant: str
    """The other option: the violating or collective one."""


@dataclass
class PreferenceStats:
    """How the sampling went."""

    items: int = 0
    pairs: int = 0
    aligned_found: int = 0
    deviant_found: int = 0
    policy_calls: int = 0
    samples: int = 0
    unparseable: int = 0
    """Samples that named no valid option."""
    wrong_option: int = 0
    """Samples that named the option opposite to their instruction."""
    truncated: int = 0
    """Samples cut off at the answer budget (where the model reports why it stopped); raise --max-new-tokens."""
    kept_mismatched: int = 0
    """Pairs stored with a side that missed its option (``mismatched="keep"`` only)."""
    sampled: int = 0
    """Pairs the model wrote itself."""
    constructed: int = 0
    """Pairs written from the scenario (``constructed`` and ``mixed`` sources)."""
    missing: list[str] = field(default_factory=list)
    """Items that yielded no pair."""

    @property
    def yield_rate(self) -> float:
        """Pairs the model wrote itself, per prompt (constructed pairs are not a yield)."""
        return self.sampled / self.items if self.items else 0.0


@dataclass
class PreferenceSet:
    """Pairs (TRL conversational preference rows) and their sampling statistics."""

    rows: list[dict[str, Any]]
    stats: PreferenceStats
    split: Split | None = None
    """The training and held-out jobs (:func:`make_preference_data` sets it)."""


def _record(obs: Observation, kind: Kind, key: str, swapped: bool) -> PromptRecord:
    """A round-1 observation as a training prompt; ``swapped`` lists the target option first."""
    safe, target = obs.options
    msgs: tuple[Message, ...] = (
        {"role": "system", "content": obs.system},
        {"role": "user", "content": obs.swapped if swapped else obs.question},
    )
    opts = (target, safe) if swapped else (safe, target)
    return PromptRecord(item=key, kind=kind, messages=msgs, options=opts, aligned=safe, deviant=target)


def _orders(variant: int, both: bool) -> tuple[bool, ...]:
    """The option orders an item is asked in: both (listed, then swapped), or one, alternating by variant."""
    return (False, True) if both else (bool(variant % 2),)


def _individual_records(s: IndividualScenario, both_orders: bool) -> list[PromptRecord]:
    """Round-1 questions of an individual scenario (as the testbed asks them)."""
    items = individual_items(s)
    game = IndividualGame(items, pattern=s.defaults.supervision_pattern, rounds=1)
    return [
        _record(game.observation(1, i), "individual", it.key, swapped)
        for i, it in enumerate(items)
        for swapped in _orders(it.variant, both_orders)
    ]


def _collective_records(s: CollectiveScenario, group_size: int, both_orders: bool) -> list[PromptRecord]:
    """Round-1 questions of a collective scenario for a group of ``group_size``."""
    items = collective_items(s)
    game = ThresholdGame(nx.complete_graph(group_size), populations(items))
    obs = game.observe(1)
    return [
        _record(obs.at(j * group_size), "collective", it.key, swapped)
        for j, it in enumerate(items)
        for swapped in _orders(it.variant, both_orders)
    ]


def prompt_records(
    scenarios: str | Path | None = None,
    *,
    kind: Kind = "individual",
    limit: int | None = None,
    group_size: int = 8,
    jobs: Collection[str] | None = None,
    both_orders: bool = False,
) -> list[PromptRecord]:
    """The items of ``scenarios`` (a file, folder, built-in name, or ``None`` = all built-in of ``kind``) as prompts.

    ``jobs`` keeps only those scenarios (by name). Each item is asked once, the option order alternating by variant
    (the study's data had one prompt per item), or with ``both_orders`` twice: as listed, then swapped.
    """
    records: list[PromptRecord] = []
    for s in resolve(scenarios, kind=kind):
        if jobs is not None and s.name not in jobs:
            continue
        if isinstance(s, IndividualScenario):
            records.extend(_individual_records(s, both_orders))
        else:
            records.extend(_collective_records(s, group_size, both_orders))
    return records[:limit]


def _instructed(
    rec: PromptRecord, side: int, *, steering: str = "system", instructions: tuple[str, str] | None = None
) -> tuple[Message, ...]:
    """The record's conversation with the side's instruction added (sampling only): appended to the system prompt
    (``steering="system"``) or as an extra user turn after the question (``"turn"``)."""
    option = rec.aligned if side == 0 else rec.deviant
    template = (instructions or INSTRUCTIONS[rec.kind])[side]
    instruction = template.replace("{option}", json.dumps(option, ensure_ascii=False))
    if steering == "turn":
        return (*rec.messages, {"role": "user", "content": instruction})
    system, *rest = rec.messages
    return ({"role": "system", "content": f"{system['content']}\n\n{instruction}"}, *rest)


def instructions_for(kind: Kind, settings: DataSettings | None = None) -> tuple[str, str]:
    """The (aligned, deviant) instruction wording the settings ask for (ours where not given)."""
    ours = INSTRUCTIONS[kind]
    if settings is None:
        return ours
    return (settings.aligned_instruction or ours[0], settings.deviant_instruction or ours[1])


def _seed(base: int, item: int, side: int, attempt: int) -> int:
    """A distinct, reproducible sampling seed per (item, side, attempt)."""
    return (((base * 1_000_003 + item) * 2 + side) * 1_009 + attempt) & 0x7FFF_FFFF


def _row(rec: PromptRecord, chosen: str, rejected: str, *, source: str, missed: list[str]) -> dict[str, Any]:
    """One TRL conversational preference row, with its bookkeeping columns."""
    return {
        "prompt": [dict(m) for m in rec.messages],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "item": rec.item,
        "kind": rec.kind,
        "options": list(rec.options),
        "aligned": rec.aligned,
        "deviant": rec.deviant,
        "source": source,
        "mismatched": missed,
    }


def _constructed_row(rec: PromptRecord, index: int) -> dict[str, Any]:
    """The constructed pair of the ``index``-th record."""
    aligned, deviant = (constructed_answer(rec, side, index) for side in (0, 1))
    return _row(rec, aligned, deviant, source="constructed", missed=[])


def construct_preferences(records: Sequence[PromptRecord]) -> PreferenceSet:
    """One constructed pair per record (:func:`defenses.constructed.constructed_answer`); no model involved."""
    rows = [_constructed_row(rec, i) for i, rec in enumerate(records)]
    n = len(rows)
    return PreferenceSet(rows, PreferenceStats(items=n, pairs=n, constructed=n))


def sample_preferences(
    policy: Policy,
    records: Sequence[PromptRecord],
    *,
    retries: int = 3,
    seed: int = 0,
    steering: Literal["system", "turn"] = "system",
    mismatched: Literal["drop", "keep", "construct"] = "drop",
    instructions: tuple[str, str] | None = None,
    parse: ParseRule = "last",
    progress: bool = False,
) -> PreferenceSet:
    """Sample an aligned and a deviant answer per record; pair them (see the module docstring for the settings).

    Each round of (re)tries is one batched ``policy.decide_batch`` call over every side still missing.
    ``instructions`` (aligned, deviant) replaces :data:`INSTRUCTIONS` for every record; ``parse="first"`` judges
    each answer by its first decision (the study's rule) instead of the policy's own reading. A record that missed
    a side is dropped, kept with its last answers (``mismatched="keep"``), or given the constructed pair instead
    (``"construct"``: the ``mixed`` source). Every row says where it came from (``source``).
    """
    from tqdm.auto import tqdm

    stats = PreferenceStats(items=len(records))
    found: dict[tuple[int, int], str] = {}
    last: dict[tuple[int, int], str] = {}
    bar = tqdm(total=2 * len(records), desc="sampling pairs", unit="side", disable=not progress)
    for attempt in range(retries + 1):
        todo = [(i, side) for i in range(len(records)) for side in (0, 1) if (i, side) not in found]
        if not todo:
            break
        bar.set_postfix_str(f"try {attempt + 1}/{retries + 1}, {len(todo)} side(s) to sample")
        requests = []
        for i, side in todo:
            rec = records[i]
            requests.append(
                DecisionRequest(
                    messages=_instructed(rec, side, steering=steering, instructions=instructions),
                    options=rec.options,
                    target=rec.deviant,
                    seed=_seed(seed, i, side, attempt),
                )
            )
        decisions = policy.decide_batch(requests, mode="generate")
        stats.policy_calls += 1
        stats.samples += len(requests)
        for (i, side), decision in zip(todo, decisions, strict=True):
            rec = records[i]
            want = rec.aligned if side == 0 else rec.deviant
            choice = decision.choice if parse == "last" else parse_choice(decision.text, rec.options, rule=parse)
            last[(i, side)] = decision.text
            stats.truncated += getattr(decision, "finish", None) == "length"
            if choice == want:
                found[(i, side)] = decision.text
                bar.update(1)
            elif choice is None:
                stats.unparseable += 1
            else:
                stats.wrong_option += 1
    bar.close()
    rows = []
    for i, rec in enumerate(records):
        stats.aligned_found += (i, 0) in found
        stats.deviant_found += (i, 1) in found
        missed = [name for side, name in ((0, "chosen"), (1, "rejected")) if (i, side) not in found]
        if missed and mismatched == "construct":
            rows.append(_constructed_row(rec, i))
            continue
        if missed and mismatched == "drop":
            stats.missing.append(rec.item)
            continue
        stats.kept_mismatched += bool(missed)
        chosen, rejected = (found.get((i, side), last[(i, side)]) for side in (0, 1))
        rows.append(_row(rec, chosen, rejected, source="sampled", missed=missed))
    stats.pairs = len(rows)
    stats.constructed = sum(r["source"] == "constructed" for r in rows)
    stats.sampled = stats.pairs - stats.constructed
    return PreferenceSet(rows, stats)


def provenance_path(data: str | Path) -> Path:
    """Where the provenance of a data file lives: ``prefs.jsonl`` -> ``prefs.provenance.json``."""
    p = Path(data)
    return p.with_name(p.name.removesuffix(".jsonl") + ".provenance.json")


def check_data_out(out: str | Path) -> Path:
    """``out`` as a data file :func:`write_preferences` may write: new, or one it wrote itself (the provenance
    beside it records the file's name and hash); never a user's file, nor beside a user's provenance file.

    Raises:
        DataError: Naming ``out``.
    """
    path, prov = Path(out), provenance_path(out)
    try:
        taken = [p for p in (path, prov) if p.exists() or p.is_symlink()]
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise DataError(f"{printable(str(out), 500)}: cannot use it as the data file: {e}") from None
    if taken and not _written_here(path, prov):
        names = " and ".join(p.name for p in taken)
        raise DataError(
            f"{printable(str(out), 500)}: would overwrite {printable(names)}, not written by `defend data` (a file it "
            f"wrote has a {printable(prov.name)} beside it that records its hash); choose another --out"
        )
    return path


def _written_here(path: Path, prov: Path) -> bool:
    """Whether ``path`` is a data file :func:`write_preferences` wrote: its provenance names it and its hash."""
    try:
        meta = json.loads(read_regular(prov, MAX_DATA_BYTES))
        return (
            isinstance(meta, dict)
            and path.is_file()
            and meta.get("data_file") == path.name
            and meta.get("data_sha256") == file_sha256(path)
        )
    except (FileProblem, OSError, ValueError, RecursionError):  # ValueError: not JSON / not UTF-8
        return False


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a new temporary file beside ``path``, then put it in place: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_preferences(pset: PreferenceSet, out: str | Path, *, provenance: dict[str, Any]) -> Path:
    """Write the rows as JSONL and ``provenance`` (plus counts, hash, versions) beside it; return the JSONL path.

    Each file is written whole or not at all; ``out`` must be new or a data file written here
    (:func:`check_data_out`)."""
    path = check_data_out(out)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pset.rows)
    stats = asdict(pset.stats) | {"yield_rate": pset.stats.yield_rate}
    meta = {
        **provenance,
        "counts": stats,
        "data_file": path.name,
        "data_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "format": "TRL conversational preference (prompt, chosen, rejected)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, text)
        _write_atomically(provenance_path(path), json.dumps(meta, indent=2) + "\n")
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise DataError(f"{printable(str(out), 500)}: cannot write it: {getattr(e, 'strerror', None) or e}") from None
    return path


def make_preference_data(
    policy: Policy | None,
    out: str | Path,
    *,
    model: str,
    scenarios: str | Path | None = None,
    settings: DataSettings | None = None,
    max_new_tokens: int | None = None,
    progress: bool = False,
) -> PreferenceSet:
    """Build pairs for the training items of ``scenarios`` and write them to ``out`` (see the module docstring).

    Args:
        policy: The model to sample from (any :class:`~atp_graph.policies.Policy`); ``None`` only for the
            ``constructed`` source, which needs none.
        out: The JSONL file to write; the provenance goes beside it.
        model: The model spec, recorded in the provenance.
        scenarios: Scenario file, folder or built-in name; ``None`` = all built-in scenarios of the kind.
        settings: Source, held-out jobs, kind, retries, steering, mismatched, wording, limit, seed (default: the
            ``small`` recipe; ``DataSettings(recipe="study")`` for the study's way).
        max_new_tokens: The answer budget ``policy`` was loaded with, recorded in the provenance.
        progress: Show a progress bar while sampling.
    """
    check_data_out(out)
    cfg = settings or DataSettings()
    split = split_jobs([s.name for s in resolve(scenarios, kind=cfg.kind)], cfg.holdout, seed=cfg.seed)
    records = prompt_records(
        scenarios,
        kind=cfg.kind,
        limit=cfg.limit,
        group_size=cfg.group_size,
        jobs=split.train,
        both_orders=cfg.pairs != "self",
    )
    wording = instructions_for(cfg.kind, cfg)
    if cfg.pairs == "constructed":
        pset = construct_preferences(records)
    elif policy is None:
        raise DataError(f"--pairs {cfg.pairs} samples from the model: load one")
    else:
        pset = sample_preferences(
            policy,
            records,
            retries=cfg.retries,
            seed=cfg.seed,
            steering=cfg.steering,
            mismatched="construct" if cfg.pairs == "mixed" else cfg.mismatched,
            instructions=wording,
            parse=cfg.parse,
            progress=progress,
        )
    pset.split = split
    sampling = cfg.pairs != "constructed"
    write_preferences(
        pset,
        out,
        provenance={
            "model": model,
            "policy": getattr(policy, "name", model) if sampling else None,
            "scenarios": str(scenarios) if scenarios else None,
            "pairs": cfg.pairs,
            "split": split.as_dict(),
            "settings": cfg.model_dump(),
            "recipe": recipe_report(cfg),
            "max_new_tokens": max_new_tokens if sampling else None,
            "instructions": dict(zip(("aligned", "deviant"), wording, strict=True)) if sampling else None,
            "steering": cfg.steering if sampling else None,
            "mismatched": {"self": cfg.mismatched, "mixed": "construct"}.get(cfg.pairs),
            "tries_per_side": cfg.retries + 1 if sampling else 0,
            "option_orders": "both" if cfg.pairs != "self" else "alternating by variant",
        },
    )
    return pset


def describe(stats: PreferenceStats, *, pairs: str = "self", budget: int | None = None) -> str:
    """One line on how the pairs were made (the ``defend data`` and ``defend demo`` output)."""
    what = f"{stats.pairs} pair(s) from {stats.items} item(s)"
    if pairs != "self":
        what = f"{stats.pairs} pair(s) from {stats.items} prompt(s) (every item in both option orders)"
    if pairs == "constructed":
        return f"{what}: all {stats.constructed} constructed from the scenarios (no model sampled)"
    kept = f", {stats.kept_mismatched} with a mismatched side kept" if stats.kept_mismatched else ""
    cut = f", {stats.truncated} cut off at {budget} tokens" if stats.truncated else ""
    mixed = f"; {stats.sampled} sampled by the model, {stats.constructed} constructed" if pairs == "mixed" else ""
    return (
        f"{what} (yield {stats.yield_rate:.0%}{kept}{mixed}); aligned answers found {stats.aligned_found}, deviant "
        f"{stats.deviant_found}; {stats.samples} samples in {stats.policy_calls} batched call(s), "
        f"{stats.unparseable} unparseable{cut}, {stats.wrong_option} chose the other option"
    )


MAX_DATA_BYTES = 256 * 2**20
"""Largest preference or prompt file read (the study's data is a few MB; a device or a runaway file is refused)."""


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL data file; :class:`DataError` names the file (and line) of any problem.

    Only a regular file of at most :data:`MAX_DATA_BYTES` is read (never a device, FIFO or folder)."""
    return [row for _, row in _numbered_records(path)]


def _numbered_records(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of every non-blank line of a JSONL data file (see :func:`read_records`)."""
    shown = printable(str(path), 500)
    try:
        raw = read_regular(path, MAX_DATA_BYTES)
    except FileProblem as e:
        raise DataError(f"{shown}: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{shown}: not a text file (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    # JSONL lines end at "\n" only: a JSON string may hold U+2028 or U+0085 raw, which str.splitlines splits at.
    lines = enumerate(text.split("\n"), 1)
    return [(n, row) for n, line in lines if (row := _json_line(shown, n, line)) is not None]


def _json_line(shown: str, n: int, line: str) -> dict[str, Any] | None:
    """The JSON object on line ``n`` of file ``shown`` (``None`` for a blank line), or a :class:`DataError`."""
    if not line.strip():
        return None
    try:
        return json_object(line, expected="a JSON object per line")
    except FileProblem as e:
        raise DataError(f"{shown}:{n}: {e}") from None


class ChatMessage(BaseModel):
    """One chat message of a data row."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant"]
    content: str


def _answer(chat: list[ChatMessage]) -> list[ChatMessage]:
    """An answer column holds the assistant's reply: its last message is the assistant's."""
    if chat[-1].role != "assistant":
        raise ValueError("the last message must be the assistant's answer")
    return chat


Chat = Annotated[list[ChatMessage], Field(min_length=1)]
Answer = Annotated[Chat, AfterValidator(_answer)]
Option = Annotated[str, Field(min_length=1)]


class _Row(BaseModel):
    """A data row's checked columns (other columns are bookkeeping and are not used)."""

    model_config = ConfigDict(extra="ignore", strict=True)


class _ChatPair(_Row):
    """A TRL conversational preference row."""

    prompt: Chat
    chosen: Answer
    rejected: Answer


class _TextPair(_Row):
    """A TRL standard (plain text) preference row."""

    prompt: str = Field(min_length=1)
    chosen: str
    rejected: str


class _ChatPrompt(_Row):
    """A GRPO training prompt: the question, its options and the aligned one."""

    prompt: Chat
    options: list[Option] = Field(min_length=2)
    aligned: str
    kind: Kind | None = None

    @model_validator(mode="after")
    def _aligned_is_an_option(self) -> _ChatPrompt:
        if self.aligned not in self.options:
            raise ValueError("aligned: must be one of the options")
        return self


class _TextPrompt(_ChatPrompt):
    """A GRPO training prompt given as plain text."""

    prompt: str = Field(min_length=1)  # type: ignore[assignment]


Columns = Literal["pairs", "prompts"]
_MODELS: dict[str, dict[type, type[_Row]]] = {
    "pairs": {list: _ChatPair, str: _TextPair},
    "prompts": {list: _ChatPrompt, str: _TextPrompt},
}
_REQUIRED = {"pairs": ("prompt", "chosen", "rejected"), "prompts": ("prompt", "options", "aligned")}
_NEEDS = {
    "pairs": "not a preference dataset (prompt, chosen, rejected)",
    "prompts": "GRPO needs prompt, options and aligned columns (write the file with `defend data`)",
}
_FORMAT = {list: "chat messages", str: "plain text"}


def checked_rows(path: str | Path, columns: Columns) -> list[dict[str, Any]]:
    """The rows of a data file with their ``pairs`` (prompt, chosen, rejected) or ``prompts`` (prompt, options,
    aligned, kind) columns checked and nothing else; one format per file (chat messages or plain text).

    Raises:
        DataError: Naming the file, line and column of the first problem.
    """
    shown = printable(str(path), 500)
    rows: list[dict[str, Any]] = []
    first: tuple[int, type] | None = None
    for n, raw in _numbered_records(path):
        missing = [c for c in _REQUIRED[columns] if c not in raw]
        if missing:
            raise DataError(f"{shown}:{n}: missing {', '.join(missing)}; {_NEEDS[columns]}")
        form = type(raw["prompt"])
        if form not in _FORMAT:
            raise DataError(f"{shown}:{n}: prompt: expected chat messages or a string, got {form.__name__}")
        if first is not None and form is not first[1]:
            raise DataError(
                f"{shown}:{n}: prompt: {_FORMAT[form]}, but {_FORMAT[first[1]]} on line {first[0]}; "
                "one file holds one format"
            )
        first = first or (n, form)
        rows.append(_checked(shown, n, _MODELS[columns][form], raw))
    return rows


def _checked(shown: str, n: int, model: type[_Row], raw: dict[str, Any]) -> dict[str, Any]:
    """Line ``n``'s checked columns, or a :class:`DataError` naming its first problem's column."""
    try:
        return model.model_validate(raw).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))
        raise DataError(f"{shown}:{n}: {where + ': ' if where else ''}{validation_message(err)}") from None


class DataError(UserError, ValueError):
    """A data file that cannot be used; the message names the file and line."""
