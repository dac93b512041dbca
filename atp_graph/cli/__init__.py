"""The command line: ``atp`` (or ``python cli.py``). Every option can also be set from the environment as
``ATP_<COMMAND>_<OPTION>``, e.g. ``ATP_DIFFUSE_MODEL=sim``."""

from .main import cli, main

__all__ = ["cli", "main"]
