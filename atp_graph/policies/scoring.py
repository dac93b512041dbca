"""Score mode's last step, shared by every backend: option log-likelihoods to a :class:`Decision`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..parsing import ANSWER_PREFIX, choice_json
from .base import Decision, DecisionRequest

__all__ = ["ANSWER_PREFIX", "score_choice", "score_decision"]


def score_decision(request: DecisionRequest, pairs: Sequence[tuple[float, float]]) -> Decision:
    """The decision for one request from ``(logp(options[0]), logp(options[1]))`` per option order: p(target)
    averaged over the orders, and a choice drawn from it with the request's seed."""
    choice, p_target, extra = score_choice(request.options, request.target, request.seed, pairs)
    return Decision(text=choice_json(choice), choice=choice, p_target=p_target, extra=extra)


def score_choice(
    options: Sequence[str], target: str, seed: int, pairs: Sequence[tuple[float, float]]
) -> tuple[str, float, dict[str, float]]:
    """``(choice, p(target), extra)`` from ``(logp(options[0]), logp(options[1]))`` per order: p(target) is the
    softmax averaged over the orders; the choice is drawn from it with ``seed``."""
    t = list(options).index(target)
    ps = [float(torch.softmax(torch.tensor(pair, dtype=torch.float64), 0)[t]) for pair in pairs]
    p_target = sum(ps) / len(ps)
    draw = torch.rand((), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    choice = target if float(draw) < p_target else options[1 - t]
    extra = {"p_target_original": ps[0], "argmax_is_target": float(p_target > 0.5)}
    if len(ps) > 1:
        extra["p_target_swapped"] = ps[1]
    return choice, p_target, extra
