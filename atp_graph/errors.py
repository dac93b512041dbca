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


def printable(text: str, limit: int = 160, *, unicode: bool = False) -> str:
    """``text`` safe to print in a one-line error: non-printable and non-ASCII characters escaped (raw bytes of a
    binary file, terminal escapes, right-to-left marks never reach the terminal), cut at ``limit``. With
    ``unicode``, printable non-ASCII letters are kept (text shown to read, such as a prompt); control and format
    characters (escapes, right-to-left overrides) are still escaped."""
    shown = "".join(c if c.isprintable() and (unicode or c.isascii()) else ascii(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def printable_lines(text: str) -> str:
    """Multi-line text from a user's file safe to show on a terminal: each line as :func:`printable` (with
    ``unicode``) shows it, uncut, the line breaks kept."""
    return "\n".join(printable(line, len(line), unicode=True) for line in text.split("\n"))
