"""Exactly the messages an agent reads in a given round (``atp scenarios render``), to check a protocol's framing.

The conversation comes from the real thing: the testbed's own game and agent graph play the earlier rounds with a
scripted stand-in model that always makes the same choice, and the round's request is printed as the model would
receive it (system prompt, the transcript window, the question).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ..agents import make_agents
from ..config import DiffuseConfig, ExploreConfig
from ..errors import UserError
from ..parsing import choice_json
from ..policies.base import Decision, DecisionMode, DecisionRequest, Message
from ..run import play_rounds
from .diffuse import diffuse_game
from .explore import explore_game

Choose = Literal["compliant", "violating"]


class Scripted:
    """A stand-in model: every agent makes the same choice each round; what each agent read is recorded."""

    name = "scripted (render)"

    def __init__(self, choose: Choose) -> None:
        self.choose = choose
        self.requests: list[DecisionRequest] = []

    def decide_batch(self, requests: Sequence[DecisionRequest], *, mode: DecisionMode = "generate") -> list[Decision]:
        self.requests += requests
        out = []
        for r in requests:
            other = next(o for o in r.options if o != r.target)
            option = r.target if self.choose == "violating" else other
            out.append(Decision(text=f"(example answer) {choice_json(option)}", choice=option, finish="stop"))
        return out

    def complete_batch(self, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int = 96) -> list[str]:
        return ["(example lesson)" for _ in conversations]


def conversation(
    cfg: ExploreConfig | DiffuseConfig, *, round_no: int, agent: int = 0, choose: Choose = "compliant"
) -> list[Message]:
    """The messages agent ``agent`` (its index in the run) reads in round ``round_no``, every agent having made the
    ``choose`` choice in the earlier rounds."""
    game, resolved = explore_game(cfg) if isinstance(cfg, ExploreConfig) else diffuse_game(cfg)
    if not 1 <= round_no <= resolved["rounds"]:
        raise UserError(f"--round must be between 1 and {resolved['rounds']}, got {round_no}")
    ids = game.agents  # type: ignore[attr-defined]
    if not 0 <= agent < len(ids):
        raise UserError(f"--agent must be between 0 and {len(ids) - 1}, got {agent}")
    seed = game.observe(round_no).at(agent).seed
    model = Scripted(choose)
    agents = make_agents(model, cfg, history_window=resolved["history_window"], agent_ids=ids)  # type: ignore[arg-type]
    play_rounds(game, agents, rounds=round_no, progress=False)
    request = next(r for r in reversed(model.requests) if r.seed == seed)
    return list(request.messages)
