"""Deterministic fault injection for the reliability suite (``tests/reliability``).

``ATP_FAULT=<phase>`` (or ``<phase>@<round>``) kills the process with SIGKILL, as a power cut or the OOM killer would,
the moment it reaches that phase: no ``finally`` runs, no buffer is flushed. Unset (always, outside the tests), a
checkpoint costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

PHASES = ("act", "events", "state", "summary", "table", "plots")
"""Where a run can be killed: after the agents acted (nothing of the round saved), after the round's events were
appended, after its checkpoint was written, and after each output of the report."""

DEMO_PHASES = ("demo-data", "demo-dpo", "demo-grpo", "demo-compare")
"""Where ``defend demo`` can be killed: right after each stage's output is committed (on disk, marked done), before
the next stage starts. Inside a stage, the phases above still apply to the comparison's runs."""


def checkpoint(phase: str, round_no: int | None = None) -> None:
    """Die here if ``ATP_FAULT`` names this phase (and this round, when it names one)."""
    spec = os.environ.get("ATP_FAULT")
    if not spec:
        return
    name, _, at = spec.partition("@")
    if name == phase and (not at or at == str(round_no)):
        os.kill(os.getpid(), signal.SIGKILL)
