"""Tools for agents users build themselves: :func:`probe`/:func:`aprobe` (the individual game played by your agent)
and the :class:`TippingMonitor` (a CUSUM alarm as a callback or a graph node)."""

from .monitor import MonitorAction, TippingEvent, TippingMonitor
from .probe import PATTERNS, ProbeError, aprobe, load_individuals, probe
from .report import ProbeReport, ProbeRound
from .tool_probe import ToolProbeReport, aprobe_tools

__all__ = [
    "PATTERNS",
    "MonitorAction",
    "ProbeError",
    "ProbeReport",
    "ProbeRound",
    "TippingEvent",
    "TippingMonitor",
    "ToolProbeReport",
    "aprobe",
    "aprobe_tools",
    "load_individuals",
    "probe",
]
