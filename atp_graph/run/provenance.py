"""What a result depends on beyond its config: the versions of the packages that shape it."""

from __future__ import annotations

import importlib.metadata as md

VERSIONED = (
    "atp-graph",
    "torch",
    "transformers",
    "langgraph",
    "langchain-core",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "networkx",
)
"""Packages whose versions shape results; recorded in every run config, dataset and variant manifest."""


def versions() -> dict[str, str]:
    """Versions of the packages that shape results, for the resolved config."""
    out = {}
    for pkg in VERSIONED:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
