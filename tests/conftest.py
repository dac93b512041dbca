"""Shared fixtures: the tiny random chat model, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's spinning threads make
# them 10x slower whenever another process is busy. Must be set before torch is imported; export it to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``heavy`` tests (minutes each: load sizes, randomized kills) run only under ``make test-slow``."""
    if os.environ.get("ATP_HEAVY_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="heavy tier: run with `make test-slow` (ATP_HEAVY_TESTS=1)")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama chat model + BPE tokenizer folder (``HFPolicy.from_pretrained`` / ``hf:<dir>``)."""
    from atp_graph.policies.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model with the Qwen3 architecture (q/k norms), for architecture-independence tests."""
    from atp_graph.policies.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"), arch="qwen3", seed=1)
