"""Testbed rules behind the :class:`~atp_graph.contracts.Game` contract: pure payoff functions (:mod:`.rules`), the
words agents read (:mod:`.prompts`), social graphs (:mod:`.topology`), and the two games."""

from .individual import IndividualGame
from .rules import COMPLY, INVALID, VIOLATE, individual_outcome, play_threshold_game, supervision_schedule
from .threshold import GameError, Population, ThresholdGame, populations
from .topology import TOPOLOGIES, build_graph, load_graph

__all__ = [
    "COMPLY",
    "INVALID",
    "TOPOLOGIES",
    "VIOLATE",
    "GameError",
    "IndividualGame",
    "Population",
    "ThresholdGame",
    "build_graph",
    "individual_outcome",
    "load_graph",
    "play_threshold_game",
    "populations",
    "supervision_schedule",
]
