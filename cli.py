"""``python cli.py ...``: a thin shim over :mod:`atp_graph.cli` (installed as the ``atp`` command)."""

from atp_graph.cli import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":
    cli()
