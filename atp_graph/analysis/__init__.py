"""Reading results: rates with Wilson intervals, CUSUM, per-testbed summaries, tables and plots."""

from .cusum import CusumConfig, CusumDetector
from .diffusion import plot_diffusion, summarize_diffusion
from .individual import plot_explore, summarize_explore
from .metrics import Rate, bootstrap_mean, intervals_overlap, mean_by_round, rate_by_round, tipping_round, wilson

__all__ = [
    "CusumConfig",
    "CusumDetector",
    "Rate",
    "bootstrap_mean",
    "intervals_overlap",
    "mean_by_round",
    "plot_diffusion",
    "plot_explore",
    "rate_by_round",
    "summarize_diffusion",
    "summarize_explore",
    "tipping_round",
    "wilson",
]
