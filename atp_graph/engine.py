"""Running rounds: many agent graphs per round with batched model calls, and the durable round loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata as md
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langgraph.store.base import BaseStore

from .agent import AgentContext, AgentState, Evolution, build_agent_graph
from .coordinator import Coordinator, Settlement, Submission
from .policies.base import DecisionMode, Policy
from .rundir import RunDir

CARRIED = ("memory", "guard")
"""Agent-state keys that persist from one round to the next."""


class GraphEngine:
    """Plays one round for many agents: each agent's graph runs, and every rendezvous is one batched call."""

    def __init__(
        self,
        policy: Policy,
        *,
        mode: DecisionMode = "generate",
        evolution: Evolution = "transcript",
        history_window: int = 5,
        store: BaseStore | None = None,
        memory_hygiene: bool = False,
        reanchor_every: int = 0,
        reflection_tokens: int = 64,
        monitor_fallback: bool = False,
    ):
        self.policy, self.mode, self.store = policy, mode, store
        self.settings = dict(
            evolution=evolution,
            history_window=history_window,
            memory_hygiene=memory_hygiene,
            reanchor_every=reanchor_every,
            monitor_fallback=monitor_fallback,
        )
        self.reflection_tokens = reflection_tokens
        self.graph = build_agent_graph(store=store)
        self.carry: dict[str, dict[str, Any]] = {}
        """What each agent carries into its next round (transcript memory, monitor state), keyed by agent."""

    @classmethod
    def for_run(cls, policy: Policy, cfg: Any, *, history_window: int, store: BaseStore | None) -> GraphEngine:
        """The engine a testbed config asks for (its decision mode, evolution mode and runtime defenses)."""
        return cls(
            policy,
            mode=cfg.decision,
            evolution=cfg.evolution,
            history_window=history_window,
            store=store,
            memory_hygiene=cfg.memory_hygiene,
            reanchor_every=cfg.reanchor_every,
            monitor_fallback=cfg.monitor_fallback,
        )

    def play(
        self, inputs: Sequence[AgentState], settle: Callable[[dict[str, Submission]], dict[str, Settlement]]
    ) -> list[AgentState]:
        """Run every agent's graph for one round; ``settle`` pays all of them once every choice is in."""
        coord = Coordinator(
            len(inputs),
            decide=lambda reqs: self.policy.decide_batch(reqs, mode=self.mode),
            settle=settle,
            complete=lambda convs: self.policy.complete_batch(convs, max_new_tokens=self.reflection_tokens),
        )
        ctx = AgentContext(coordinator=coord, **self.settings)  # type: ignore[arg-type]

        async def go() -> list[AgentState]:
            full = [{**i, **self.carry.get(i["agent"], {})} for i in inputs]
            tasks = [asyncio.ensure_future(self.graph.ainvoke(x, context=ctx)) for x in full]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException as e:
                coord.fail(e)
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

        states = asyncio.run(go())
        for st in states:
            self.carry[st["agent"]] = {k: st[k] for k in CARRIED if st.get(k) is not None}
        return states

    def state_dict(self) -> dict[str, Any]:
        """JSON-able carry of every agent, for checkpoints."""
        return {"carry": self.carry}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.carry = dict(state["carry"])


def messages_hash(messages: Sequence[dict]) -> str:
    """Short stable hash of a conversation, recorded in events instead of the whole prompt."""
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()[:16]


VERSIONED = (
    "atp-graph",
    "torch",
    "transformers",
    "langgraph",
    "langchain-core",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "networkx",
)
"""Packages whose versions shape results; recorded in every run config, dataset and variant manifest."""


def versions() -> dict[str, str]:
    """Versions of the packages that shape results, for the resolved config."""
    out = {}
    for pkg in VERSIONED:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_rounds(
    *,
    rundir: RunDir | None,
    start: int,
    rounds: int,
    play: Callable[[int], list[dict[str, Any]]],
    state: Callable[[], dict[str, Any]],
    progress: bool = True,
    desc: str = "rounds",
    postfix: Callable[[list[dict[str, Any]]], str] | None = None,
) -> list[dict[str, Any]]:
    """Play rounds ``start+1..rounds``; each round's events and state are on disk before the next starts.

    The first Ctrl-C lets the current round finish and be saved, then raises ``KeyboardInterrupt``; a second one
    stops at once (the run then resumes from the last saved round).
    """
    from tqdm.auto import tqdm

    new: list[dict[str, Any]] = []
    bar = tqdm(total=rounds, initial=start, desc=desc, unit="round", disable=not progress, leave=True)
    with _graceful_interrupt() as stop, rundir.locked() if rundir else contextlib.nullcontext():
        try:
            for r in range(start + 1, rounds + 1):
                events = play(r)
                if rundir is not None:
                    rundir.commit_round(r, events, state())
                new.extend(events)
                bar.update(1)
                if postfix:
                    bar.set_postfix_str(postfix(events))
                if stop.is_set() and r < rounds:
                    raise KeyboardInterrupt
        finally:
            bar.close()
    return new


@contextlib.contextmanager
def _graceful_interrupt() -> Iterator[threading.Event]:
    """Turn the first SIGINT into a request to stop after the current round (main thread only)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nCtrl-C: stopping once this round is saved (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
