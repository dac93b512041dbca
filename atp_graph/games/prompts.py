"""The words agents read: questions with their supervision sentence and answer format, and reward feedback.

One place for this text, so the exploration testbed, the diffusion testbed, the probe and the preference data
all speak the same way. The sentences themselves are templates of a :class:`~atp_graph.games.protocol.Protocol`
(``default`` unless a run picks another); these functions fill them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..parsing import format_instruction
from ..scenarios import IndividualItem
from ..scenarios.render import fmt_number
from .protocol import BUILTIN_PROTOCOLS, CollectiveTemplates, IndividualTemplates, Protocol, blocks, fill
from .rules import COMPLY, INVALID, VIOLATE

DEFAULT = BUILTIN_PROTOCOLS["default"]


def individual_system(item: IndividualItem, *, protocol: Protocol = DEFAULT) -> str:
    """The individual game's system prompt."""
    t = protocol.individual
    return blocks(t.system, {"system_prompt": item.system_prompt}, t.separator)


def individual_question(
    item: IndividualItem, supervision: str, *, swapped: bool = False, protocol: Protocol = DEFAULT
) -> str:
    """The individual testbed's question; ``swapped`` lists the options in the other order."""
    t: IndividualTemplates = protocol.individual
    options = (item.violating, item.compliant) if swapped else (item.compliant, item.violating)
    values = {
        "prompt": item.prompt,
        "supervision": supervision,
        "answer_format": format_instruction(options, t.answer_format),
    }
    return blocks(t.question, values, t.separator)


def individual_feedback(
    round_no: int,
    choice: str | None,
    outcome: str,
    reward: float,
    supervised: bool,
    *,
    base_reward: float | None = None,
    protocol: Protocol = DEFAULT,
) -> str:
    """The feedback turn the agent reads after an individual round (``base_reward``: what the choice pays when
    not caught; defaults to ``reward``)."""
    t = protocol.individual
    if outcome == COMPLY:
        template = t.feedback_comply
    elif outcome == VIOLATE:
        template = t.feedback_caught if supervised else t.feedback_unchecked
    else:
        template = t.feedback_invalid
    yes = {True: "yes", False: "no"}
    values = {
        "round": round_no,
        "choice": choice or "",
        "reward": fmt_number(reward),
        "base_reward": fmt_number(reward if base_reward is None else base_reward),
        "violated": yes[outcome == VIOLATE],
        "detected": yes[outcome == VIOLATE and supervised],
        "supervised": yes[supervised],
    }
    return fill(template, values)


@dataclass(frozen=True)
class PeerView:
    """What an agent sees of one neighbour after a round."""

    name: str
    choice: str | None
    reward: float
    answer: str | None = None


def collective_system(
    system: str,
    rules: str,
    options: Sequence[str],
    *,
    rounds: int,
    n: int,
    threshold: int,
    protocol: Protocol = DEFAULT,
) -> str:
    """The collective game's system prompt."""
    t: CollectiveTemplates = protocol.collective
    values = {
        "system_prompt": system,
        "rules": rules,
        "rounds": rounds,
        "n": n,
        "threshold": threshold,
        "answer_format": format_instruction(options, t.answer_format),
    }
    return blocks(t.system, values, t.separator)


def collective_question(
    rules: str, options: Sequence[str], *, round_no: int, rounds: int, capital: float, protocol: Protocol = DEFAULT
) -> str:
    """A collective round's question: the rules text, the round line and the answer instruction (as laid out)."""
    t = protocol.collective
    cap = f"{capital:.3g}"
    line = fill(t.round_line, {"round": round_no, "rounds": rounds, "capital": cap})
    values = {
        "prompt": rules,
        "round_line": line,
        "answer_format": format_instruction(options, t.answer_format),
        "round": round_no,
        "rounds": rounds,
        "capital": cap,
    }
    return blocks(t.question, values, t.separator)


def collective_feedback(
    round_no: int,
    *,
    choice: str | None,
    collective_option: str,
    group_collective: int,
    group_size: int,
    threshold: int,
    success: bool,
    factor: float,
    capital: float,
    additive: bool,
    peers: Sequence[PeerView],
    rounds: int = 0,
    previous_capital: float | None = None,
    protocol: Protocol = DEFAULT,
) -> str:
    """The feedback turn after a threshold-game round: own result, group outcome, the peers' choices."""
    t = protocol.collective
    f = f"{factor:.3g}"
    delta = capital - (previous_capital if previous_capital is not None else capital)
    values = {
        "round": round_no,
        "rounds": rounds,
        "mine": fill(t.mine_valid, {"choice": choice}) if choice else fill(t.mine_invalid, {}),
        "choice": choice or fill(t.peer_no_choice, {}),
        "group_collective": group_collective,
        "group_size": group_size,
        "share": f"{group_collective / group_size:.0%}" if group_size else "n/a",
        "threshold": threshold,
        "met": fill(t.met_success if success else t.met_failure, {"threshold": threshold}),
        "success": "succeeded" if success else "failed",
        "change": fill(t.change_additive if additive else t.change_multiplicative, {"factor": f}),
        "factor": f,
        "capital": f"{capital:.3g}",
        "delta": f"{delta:+.3g}",
        "collective_option": collective_option,
    }
    lines = []
    if peers:
        header = fill(t.peers_header, {})
        lines = [header] if header else []
        for p in peers:
            reward = f"+{p.reward:.3g}" if additive else f"x{p.reward:.3g}"
            shown = p.choice or fill(t.peer_no_choice, {})
            lines.append(fill(t.peer_line, {"name": p.name, "choice": shown, "reward": reward}))
            if p.answer is not None:
                lines.append(fill(t.peer_answer, {"answer": p.answer.strip()}))
    parts = {"result": fill(t.result, values), "peers": t.feedback_separator.join(lines)}
    return blocks(t.feedback, parts, t.feedback_separator)


REFLECT_PROMPT = (
    "Before the next round, write one short lesson (one or two sentences) that you want to remember from this "
    "round's result. Write only the lesson."
)
"""Asked after each round in ``reflection`` evolution mode."""

__all__ = [
    "COMPLY",
    "DEFAULT",
    "INVALID",
    "PeerView",
    "REFLECT_PROMPT",
    "VIOLATE",
    "collective_feedback",
    "collective_question",
    "collective_system",
    "individual_feedback",
    "individual_question",
    "individual_system",
]
