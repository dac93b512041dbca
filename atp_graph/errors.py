"""The base of every error caused by the user's input (a file, a spec, an option), not by a bug."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the command line shows it as one ``error: ...`` line and exits 2, never as a traceback."""
