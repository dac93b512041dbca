"""The one durable round loop: observe -> agents act -> settle -> record -> commit -> next round.

Every testbed (explore, diffuse, the probe, compare's runs) plays its rounds here. A completed round's events and
checkpoint are on disk before the next round starts; the first Ctrl-C lets the current round finish and be saved,
then stops (a second one stops at once), and the run resumes from its last saved round.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..contracts import Agents, Game
from ..events import Event
from . import faults
from .rundir import RunDir


async def aplay_rounds(
    game: Game,
    agents: Agents,
    *,
    rounds: int,
    rundir: RunDir | None = None,
    completed: int = 0,
    saved: Mapping[str, Any] | None = None,
    progress: bool = True,
    desc: str = "rounds",
    postfix: Callable[[Sequence[Event]], str] | None = None,
    into: list[Event] | None = None,
    keep: bool = True,
) -> list[Event]:
    """Play rounds ``completed+1..rounds`` of ``game`` with ``agents``; return the new events.

    Args:
        game: The rules.
        agents: Who answers.
        rounds: The last round to play.
        rundir: Where each round is committed (``None``: nothing is written).
        completed: Rounds already played (resume); ``saved`` is the checkpoint written after that round.
        progress: Show a progress bar.
        desc: The bar's label.
        postfix: Text shown after the bar for the latest round's events.
        into: The list the new events are appended to, round by round (the return value): a caller that passes
            one keeps the completed rounds when a later round raises.
        keep: Keep the events in memory and return them; ``False`` (a run folder holds them) returns ``[]``, so a
            long run's memory does not grow with its rounds.
    """
    from tqdm.auto import tqdm

    if saved is not None:
        game.load_state_dict(saved["game"])
    agents.load_state_dict(saved["agents"] if saved else {}, completed=completed)
    new: list[Event] = into if into is not None else []
    bar = tqdm(total=rounds, initial=completed, desc=desc, unit="round", disable=not progress, leave=True)
    with _graceful_interrupt() as stop, rundir.locked() if rundir else contextlib.nullcontext():
        try:
            for r in range(completed + 1, rounds + 1):
                observations = game.observe(r)
                actions = await agents.act(r, observations, lambda subs, r=r: game.settle(r, subs))
                faults.checkpoint("act", r)
                events = game.record(r, observations, actions)
                if rundir is not None:
                    rundir.commit_round(r, events, {"game": game.state_dict(), "agents": agents.state_dict()})
                if keep:
                    new.extend(events)
                bar.update(1)
                if postfix:
                    bar.set_postfix_str(postfix(events))
                if stop.is_set() and r < rounds:
                    raise KeyboardInterrupt
        finally:
            bar.close()
            await agents.aclose()
    return new


def play_rounds(game: Game, agents: Agents, **kwargs: Any) -> list[Event]:
    """:func:`aplay_rounds` from synchronous code (one event loop for the whole run)."""
    return asyncio.run(aplay_rounds(game, agents, **kwargs))


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
