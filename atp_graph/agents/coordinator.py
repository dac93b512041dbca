"""Rendezvous points that turn many agent graphs' concurrent node calls into one batched call.

Every agent's graph runs as one task on the run's asyncio loop. When an agent reaches ``decide`` it waits here;
once all agents of the round have arrived, the policy decides the whole batch in ONE call, and each graph
continues with its own answer. ``settle`` does the same for the environment (a threshold game needs every
choice before anyone is paid) and ``reflect`` for written lessons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ..contracts import Settlement, Submission
from ..policies.base import Decision, DecisionRequest, Message

T = TypeVar("T")
R = TypeVar("R")


class _Gather(Generic[T, R]):
    """Collect ``expected`` submissions, run ``fn`` once on all of them in a worker thread, hand back results."""

    def __init__(self, expected: int, fn: Callable[[list[str], list[T]], list[R]]):
        self.expected, self.fn = expected, fn
        self.keys: list[str] = []
        self.items: list[T] = []
        self.futures: list[asyncio.Future[R]] = []

    async def submit(self, key: str, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.keys.append(key)
        self.items.append(item)
        self.futures.append(fut)
        if len(self.items) == self.expected:
            try:
                results = await asyncio.to_thread(self.fn, self.keys, self.items)
                if len(results) != len(self.items):
                    raise RuntimeError(f"batch returned {len(results)} results for {len(self.items)} requests")
                for f, r in zip(self.futures, results, strict=True):
                    f.set_result(r)
            except BaseException as e:  # hand the failure to every waiting agent, not just this one
                for f in self.futures:
                    if not f.done():
                        f.set_exception(e)
        return await fut

    def fail(self, exc: BaseException) -> None:
        for f in self.futures:
            if not f.done():
                f.set_exception(exc)


class Coordinator:
    """The three rendezvous points of one round for ``expected`` agents."""

    def __init__(
        self,
        expected: int,
        *,
        decide: Callable[[list[DecisionRequest]], list[Decision]],
        settle: Callable[[dict[str, Submission]], dict[str, Settlement]],
        complete: Callable[[list[Sequence[Message]]], list[str]] | None = None,
    ):
        self._decide = _Gather[DecisionRequest, Decision](expected, lambda _k, reqs: decide(reqs))
        self._settle = _Gather[Submission, Settlement](
            expected, lambda keys, subs: [out[k] for out in [settle(dict(zip(keys, subs, strict=True)))] for k in keys]
        )
        self._reflect = _Gather[Sequence[Message], str](
            expected, lambda _k, convs: complete(convs) if complete else ["" for _ in convs]
        )

    async def decide(self, agent: str, request: DecisionRequest) -> Decision:
        return await self._decide.submit(agent, request)

    async def settle(self, agent: str, submission: Submission) -> Settlement:
        return await self._settle.submit(agent, submission)

    async def reflect(self, agent: str, conversation: Sequence[Message]) -> str:
        return await self._reflect.submit(agent, conversation)

    def fail(self, exc: BaseException) -> None:
        """Release every waiting agent with ``exc`` (one agent's graph failed before reaching a rendezvous)."""
        for g in (self._decide, self._settle, self._reflect):
            g.fail(exc)
