"""Tools for agents users build themselves: :func:`probe` (the individual game played by your agent) and the
:class:`TippingMonitor` (a CUSUM alarm as a callback or a graph node)."""

from .monitor import MonitorAction, TippingEvent, TippingMonitor
from .probe import PATTERNS, ProbeError, ProbeReport, ProbeRound, aprobe, load_individual, probe

__all__ = [
    "PATTERNS",
    "MonitorAction",
    "ProbeError",
    "ProbeReport",
    "ProbeRound",
    "TippingEvent",
    "TippingMonitor",
    "aprobe",
    "load_individual",
    "probe",
]
