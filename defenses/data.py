"""Preference pairs sampled from the model itself, as the original study built its DPO data.

For every item the model answers twice: once under an instruction to take the aligned option (individual: follow
the rules; collective: maximise one's own benefit, i.e. stay independent) and once under the opposite instruction.
A pair is kept only when both answers parse to their intended options; a side that misses is re-sampled with a new
seed, at most ``retries`` more times. Each sampling round is ONE batched ``policy.decide_batch`` call over every
side still missing. The instructions are never part of the stored prompt: the stored prompt is the question exactly
as the testbeds ask it, so DPO teaches the aligned answer without the hint.

Output: a TRL conversational preference dataset as JSONL (``prompt``: the messages, ``chosen`` / ``rejected``: one
assistant message each, plus bookkeeping columns ``item``, ``kind``, ``options``, ``aligned``, ``deviant``), and a
provenance JSON beside it (``<name>.provenance.json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import networkx as nx

from atp_graph.contracts import Observation
from atp_graph.games import IndividualGame, ThresholdGame, populations
from atp_graph.policies.base import DecisionRequest, Message, Policy
from atp_graph.scenarios import CollectiveScenario, IndividualScenario, collective_items, individual_items, resolve

from .config import DataSettings, Kind
from .variant import file_sha256, package_versions

__all__ = [
    "INSTRUCTIONS",
    "PreferenceSet",
    "PreferenceStats",
    "PromptRecord",
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
    missing: list[str] = field(default_factory=list)
    """Items that yielded no pair."""

    @property
    def yield_rate(self) -> float:
        """Pairs per item."""
        return self.pairs / self.items if self.items else 0.0


@dataclass
class PreferenceSet:
    """Pairs (TRL conversational preference rows) and their sampling statistics."""

    rows: list[dict[str, Any]]
    stats: PreferenceStats


def _record(obs: Observation, kind: Kind, key: str, swapped: bool) -> PromptRecord:
    """A round-1 observation as a training prompt; ``swapped`` lists the target option first."""
    safe, target = obs.options
    msgs: tuple[Message, ...] = (
        {"role": "system", "content": obs.system},
        {"role": "user", "content": obs.swapped if swapped else obs.question},
    )
    opts = (target, safe) if swapped else (safe, target)
    return PromptRecord(item=key, kind=kind, messages=msgs, options=opts, aligned=safe, deviant=target)


def _individual_records(s: IndividualScenario) -> list[PromptRecord]:
    """Round-1 questions of an individual scenario (as the testbed asks them), option order alternating by variant."""
    items = individual_items(s)
    game = IndividualGame(items, pattern=s.defaults.supervision_pattern, rounds=1)
    return [_record(game.observation(1, i), "individual", it.key, bool(it.variant % 2)) for i, it in enumerate(items)]


def _collective_records(s: CollectiveScenario, group_size: int) -> list[PromptRecord]:
    """Round-1 questions of a collective scenario for a group of ``group_size``, option order alternating."""
    items = collective_items(s)
    game = ThresholdGame(nx.complete_graph(group_size), populations(items))
    obs = game.observe(1)
    return [
        _record(obs.at(j * group_size), "collective", it.key, bool(it.variant % 2)) for j, it in enumerate(items)
    ]


def prompt_records(
    scenarios: str | Path | None = None, *, kind: Kind = "individual", limit: int | None = None, group_size: int = 8
) -> list[PromptRecord]:
    """The items of ``scenarios`` (a file, folder, built-in name, or ``None`` = all built-in of ``kind``) as prompts."""
    records: list[PromptRecord] = []
    for s in resolve(scenarios, kind=kind):
        if isinstance(s, IndividualScenario):
            records.extend(_individual_records(s))
        else:
            records.extend(_collective_records(s, group_size))
    return records[:limit]


def _instructed(rec: PromptRecord, side: int) -> tuple[Message, ...]:
    """The record's conversation with the side's instruction appended to its system prompt (sampling only)."""
    option = rec.aligned if side == 0 else rec.deviant
    instruction = INSTRUCTIONS[rec.kind][side].format(option=json.dumps(option, ensure_ascii=False))
    system, *rest = rec.messages
    return ({"role": "system", "content": f"{system['content']}\n\n{instruction}"}, *rest)


def _seed(base: int, item: int, side: int, attempt: int) -> int:
    """A distinct, reproducible sampling seed per (item, side, attempt)."""
    return (((base * 1_000_003 + item) * 2 + side) * 1_009 + attempt) & 0x7FFF_FFFF


def sample_preferences(
    policy: Policy, records: Sequence[PromptRecord], *, retries: int = 3, seed: int = 0
) -> PreferenceSet:
    """Sample an aligned and a deviant answer per record; keep the pairs whose both answers hit their options.

    Each round of (re)tries is one batched ``policy.decide_batch`` call over every side still missing.
    """
    stats = PreferenceStats(items=len(records))
    found: dict[tuple[int, int], str] = {}
    for attempt in range(retries + 1):
        todo = [(i, side) for i in range(len(records)) for side in (0, 1) if (i, side) not in found]
        if not todo:
            break
        requests = []
        for i, side in todo:
            rec = records[i]
            requests.append(DecisionRequest(
                messages=_instructed(rec, side), options=rec.options, target=rec.deviant,
                seed=_seed(seed, i, side, attempt),
            ))
        decisions = policy.decide_batch(requests, mode="generate")
        stats.policy_calls += 1
        stats.samples += len(requests)
        for (i, side), decision in zip(todo, decisions, strict=True):
            rec = records[i]
            want = rec.aligned if side == 0 else rec.deviant
            if decision.choice == want:
                found[(i, side)] = decision.text
            elif decision.choice is None:
                stats.unparseable += 1
            else:
                stats.wrong_option += 1
    rows = []
    for i, rec in enumerate(records):
        stats.aligned_found += (i, 0) in found
        stats.deviant_found += (i, 1) in found
        if (i, 0) in found and (i, 1) in found:
            rows.append({
                "prompt": [dict(m) for m in rec.messages],
                "chosen": [{"role": "assistant", "content": found[(i, 0)]}],
                "rejected": [{"role": "assistant", "content": found[(i, 1)]}],
                "item": rec.item, "kind": rec.kind, "options": list(rec.options),
                "aligned": rec.aligned, "deviant": rec.deviant,
            })
        else:
            stats.missing.append(rec.item)
    stats.pairs = len(rows)
    return PreferenceSet(rows, stats)


def provenance_path(data: str | Path) -> Path:
    """Where the provenance of a data file lives: ``prefs.jsonl`` -> ``prefs.provenance.json``."""
    p = Path(data)
    return p.with_name(p.name.removesuffix(".jsonl") + ".provenance.json")


def write_preferences(pset: PreferenceSet, out: str | Path, *, provenance: dict[str, Any]) -> Path:
    """Write the rows as JSONL and ``provenance`` (plus counts, hash, versions) beside it; return the JSONL path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pset.rows), encoding="utf-8")
    stats = asdict(pset.stats) | {"yield_rate": pset.stats.yield_rate}
    meta = {
        **provenance, "counts": stats, "data_file": path.name, "data_sha256": file_sha256(path),
        "format": "TRL conversational preference (prompt, chosen, rejected)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": package_versions(),
    }
    provenance_path(path).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def make_preference_data(
    policy: Policy,
    out: str | Path,
    *,
    model: str,
    scenarios: str | Path | None = None,
    settings: DataSettings | None = None,
) -> PreferenceSet:
    """Sample pairs for the items of ``scenarios`` and write them to ``out`` (see the module docstring).

    Args:
        policy: The model to sample from (any :class:`~atp_graph.policies.Policy`).
        out: The JSONL file to write; the provenance goes beside it.
        model: The model spec, recorded in the provenance.
        scenarios: Scenario file, folder or built-in name; ``None`` = all built-in scenarios of the kind.
        settings: Kind, retries, limit, seed (defaults: individual, 3 retries, all items, seed 0).
    """
    cfg = settings or DataSettings()
    records = prompt_records(scenarios, kind=cfg.kind, limit=cfg.limit, group_size=cfg.group_size)
    pset = sample_preferences(policy, records, retries=cfg.retries, seed=cfg.seed)
    write_preferences(pset, out, provenance={
        "model": model, "policy": getattr(policy, "name", model), "scenarios": str(scenarios) if scenarios else None,
        "settings": cfg.model_dump(), "instructions": dict(zip(("aligned", "deviant"), INSTRUCTIONS[cfg.kind],
                                                                strict=True)),
    })
    return pset


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL data file (``FileNotFoundError`` if missing; ``ValueError`` names a bad line)."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows
