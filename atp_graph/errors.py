"""The base of every error caused by the user's input (a file, a spec, an option), not by a bug."""

from __future__ import annotations

from typing import Any


class UserError(ValueError):
    """Bad input: the command line shows it as one ``error: ...`` line and exits 2, never as a traceback."""


def validation_message(err: Any) -> str:
    """The words of one pydantic validation error (an item of ``ValidationError.errors()``) as our one-line
    errors show them: ``unknown key`` for a field the model does not have, else pydantic's message without its
    ``Value error, `` prefix."""
    if err["type"] == "extra_forbidden":
        return "unknown key"
    return str(err["msg"]).removeprefix("Value error, ")


def printable(text: str, limit: int = 160) -> str:
    """``text`` safe to print in a one-line error: non-printable and non-ASCII characters escaped (raw bytes of a
    binary file, terminal escapes, right-to-left marks never reach the terminal), cut at ``limit``."""
    shown = "".join(c if c.isprintable() and c.isascii() else ascii(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")
