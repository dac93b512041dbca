"""The testbeds: a config resolved into a game, agents, the durable loop and a report.

:func:`render_run` rebuilds a run folder's summary, table and plots from its ``config.json`` and ``events.jsonl``
alone (``atp report RUN_DIR``).
"""

from __future__ import annotations

from pathlib import Path

from ..config import PAPER_GRID, DiffuseConfig, ExploreConfig, ToolsConfig
from ..run import RunDir
from .common import RunResult, Testbed
from .diffuse import DIFFUSE, run_diffuse
from .explore import EXPLORE, run_explore
from .tools import TOOLS, run_tools

__all__ = [
    "PAPER_GRID",
    "DiffuseConfig",
    "ExploreConfig",
    "TESTBEDS",
    "ToolsConfig",
    "RunResult",
    "Testbed",
    "render_run",
    "run_diffuse",
    "run_explore",
    "run_tools",
]

TESTBEDS = {t.kind: t for t in (EXPLORE, DIFFUSE, TOOLS)}
"""Every testbed by command name."""


def render_run(path: str | Path) -> RunResult:
    """Re-render ``summary.json``, ``table.md`` and the plots of a run folder from its config and events."""
    p = Path(path)
    config = RunDir.read_config(p)
    kind = next(k for k in TESTBEDS if k in config)
    return TESTBEDS[kind].render(p, config)
