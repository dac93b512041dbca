"""Prefix reuse for :class:`~atp_graph.policies.hf.HFPolicy`: a byte-budgeted LRU store of key/value caches, keyed by
the token ids they were computed from and cut at segment boundaries.

Agents' prompts grow by appending (transcript mode adds each round's answer, feedback and question after the old
conversation), and many agents share their start (system prompt, scenario). The store keeps the KV cache of token
sequences together with their segment boundaries (the policy cuts prompts at message ends) and answers one question:
*which stored sequence shares the longest run of whole segments with these tokens?* The KV of the first ``n`` tokens
of a causal model depends on those ``n`` tokens only, so that start's KV is reused as it is and only the rest is
computed. Lookups walk a chain of block hashes (every :data:`BLOCK` tokens, like a trie with 16-token edges), then
compare tokens exactly, so a hash collision can never reuse the wrong KV.

Memory is bounded: the stored tensors never exceed ``budget`` bytes together with what the running batch reserved
(:meth:`PrefixStore.reserve`); the least recently used sequences are dropped first, and a dropped sequence just
costs its recomputation next time. A sequence that starts with an older stored one replaces it (an agent's next call
supersedes its previous one).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: the command line reads parse_bytes without paying for torch
    import torch

__all__ = ["BLOCK", "PrefixStore", "default_kv_budget", "parse_bytes", "release_freed_memory"]

BLOCK = 16
"""Tokens per hashed block: sequences shorter than one block are never stored."""

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "m": 1e6, "mb": 1e6, "mib": 1024**2}
_UNITS |= {"g": 1e9, "gb": 1e9, "gib": 1024**3, "t": 1e12, "tb": 1e12, "tib": 1024**4}


def parse_bytes(value: int | float | str) -> int:
    """A byte count from a number or a string such as ``"4GB"``, ``"512MiB"`` or ``"0"``.

    Raises:
        ValueError: For a negative or unreadable size.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else "?"
        if not match or unit not in _UNITS:
            raise ValueError(f"cannot read {value!r} as a size in bytes (examples: 0, 4GB, 512MiB)")
        number = float(match.group(1)) * _UNITS[unit]
    if number < 0:
        raise ValueError(f"a size in bytes cannot be negative, got {value!r}")
    if not math.isfinite(number):  # 400 nines, or a float('inf') from Python
        raise ValueError(f"a size in bytes must be finite, got {str(value)[:40]!r}")
    return int(number)


def _available_ram() -> int:
    """Bytes of memory the OS reports available (MemAvailable), else free pages, else 4 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def default_kv_budget(device: torch.device) -> int:
    """Half the free memory of a CUDA device (measured after the weights were loaded), else a quarter of the RAM
    available now."""
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    return int(_available_ram() * 0.25)


@functools.cache
def _malloc_trim() -> object | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory(device: torch.device) -> None:
    """Hand memory that freed CPU tensors left in glibc's heap back to the OS (``malloc_trim``). Without it, the many
    differently sized KV tensors of a run fragment the heap and the process holds about twice what the store holds."""
    trim = _malloc_trim() if device.type == "cpu" else None
    if trim is not None:
        trim(0)  # type: ignore[operator]


def _chain(tokens: np.ndarray) -> list[int]:
    """Hash of every whole-block start of ``tokens``: entry ``k`` identifies ``tokens[: (k + 1) * BLOCK]``."""
    hashes, h = [], 0
    for k in range(len(tokens) // BLOCK):
        h = hash((h, tokens[k * BLOCK : (k + 1) * BLOCK].tobytes()))
        hashes.append(h)
    return hashes


def _common(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common start of two token arrays."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


@dataclass(eq=False)
class _Entry:
    tokens: np.ndarray
    kv: torch.Tensor  # [layers, 2, kv_heads, len, head_dim]
    hashes: list[int]
    bounds: tuple[int, ...]  # segment ends, the last one len(tokens)

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()


@dataclass
class StoreStats:
    """Counters for benchmarks and tests."""

    reused: int = 0
    """Prompt tokens whose KV came from the store."""
    computed: int = 0
    """Prompt tokens the model had to read (prefilled)."""
    evicted: int = 0
    """Sequences dropped to stay within the budget."""
    peak_bytes: int = 0
    """Most bytes held at once (stored sequences plus the running batch's reservation)."""


@dataclass
class PrefixStore:
    """LRU store of KV caches keyed by token prefixes, bounded by ``budget`` bytes (0 disables it).

    Attributes:
        budget: Most bytes of KV held at once, stored sequences and the running batch's reservation together.
    """

    budget: int
    stats: StoreStats = field(default_factory=StoreStats)
    _entries: OrderedDict[int, _Entry] = field(default_factory=OrderedDict)
    _index: dict[int, set[int]] = field(default_factory=dict)
    _next: int = 0
    _used: int = 0
    _reserved: int = 0

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    @property
    def used(self) -> int:
        """Bytes held by stored sequences."""
        return self._used

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every stored sequence."""
        self._entries.clear()
        self._index.clear()
        self._used = 0

    def _candidates(self, hashes: Sequence[int]) -> tuple[set[int], set[int]]:
        """Entries sharing the deepest matching block, and every entry met on the way down."""
        deepest: set[int] = set()
        seen: set[int] = set()
        for h in hashes:
            ids = self._index.get(h)
            if not ids:
                break
            deepest = ids
            seen |= ids
        return deepest, seen

    def lookup(self, tokens: Sequence[int], bounds: Sequence[int]) -> tuple[int, torch.Tensor | None]:
        """The longest stored run of whole segments starting ``tokens`` (segments end at ``bounds``, increasing): a
        stored sequence qualifies up to a boundary when it holds the same tokens and the same boundaries so far.

        Returns:
            ``(length, kv)``: ``length`` is 0 or one of ``bounds``; ``kv`` a view ``[layers, 2, kv_heads, length,
            head_dim]`` (``None`` when nothing qualifies).
        """
        if not self.enabled or not self._entries or not bounds:
            return 0, None
        arr = np.asarray(tokens[: bounds[-1]], dtype=np.int64)
        deepest, _ = self._candidates(_chain(arr))
        best, best_id = 0, None
        for eid in deepest:
            e = self._entries[eid]
            n = _common(e.tokens, arr)
            for mine, theirs in zip(bounds, e.bounds, strict=False):
                if mine != theirs or mine > n:
                    break
                if mine > best:
                    best, best_id = mine, eid
        if best_id is None:
            return 0, None
        self._entries.move_to_end(best_id)
        return best, self._entries[best_id].kv[:, :, :, :best]

    def reserve(self, nbytes: int) -> None:
        """Set aside ``nbytes`` for the running batch, dropping stored sequences until both fit the budget."""
        self._reserved = nbytes
        self._shrink(0)
        self.stats.peak_bytes = max(self.stats.peak_bytes, self._used + self._reserved)

    def insert(self, tokens: Sequence[int], kv: torch.Tensor, bounds: Sequence[int]) -> None:
        """Store the KV of ``tokens`` (``[layers, 2, kv_heads, len(tokens), head_dim]``), cut into segments ending
        at ``bounds`` (the last one ``len(tokens)``).

        Stored sequences that are a start of this one (tokens and boundaries) are replaced; if this one is the start
        of a stored sequence, that one is only marked as recently used.
        """
        if not self.enabled or len(tokens) < BLOCK:
            return
        arr = np.asarray(tokens, dtype=np.int64)
        bounds = tuple(int(b) for b in bounds)
        if kv.shape[3] != len(arr) or not bounds or bounds[-1] != len(arr):
            raise ValueError(f"KV covers {kv.shape[3]} tokens; {len(arr)} tokens; segments end at {bounds}")
        hashes = _chain(arr)
        _, seen = self._candidates(hashes)
        for eid in list(seen):
            e = self._entries[eid]
            n = _common(e.tokens, arr)
            if n == len(arr) and e.bounds[: len(bounds)] == bounds:  # already stored as the start of a longer one
                self._entries.move_to_end(eid)
                return
            if n == len(e.tokens) and bounds[: len(e.bounds)] == e.bounds:
                self._remove(eid)
        entry = _Entry(arr, kv.contiguous(), hashes, bounds)
        if entry.nbytes + self._reserved > self.budget:
            return
        self._shrink(entry.nbytes)
        eid, self._next = self._next, self._next + 1
        self._entries[eid] = entry
        for h in hashes:
            self._index.setdefault(h, set()).add(eid)
        self._used += entry.nbytes
        self.stats.peak_bytes = max(self.stats.peak_bytes, self._used + self._reserved)

    def _shrink(self, incoming: int) -> None:
        """Drop least recently used sequences until ``incoming`` more bytes fit with the reservation."""
        while self._entries and self._used + self._reserved + incoming > self.budget:
            eid = next(iter(self._entries))
            self._remove(eid)
            self.stats.evicted += 1

    def _remove(self, eid: int) -> None:
        entry = self._entries.pop(eid)
        self._used -= entry.nbytes
        for h in entry.hashes:
            ids = self._index.get(h)
            if ids is not None:
                ids.discard(eid)
                if not ids:
                    del self._index[h]
