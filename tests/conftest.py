"""Shared fixtures: a fast run config on the embedded task."""

from __future__ import annotations

import pytest
import torch

from mpsl_flower.config import RunConfig, parse_run_config

# Four clients with 100 samples each per step: ~16 steps per epoch, seconds on a CPU.
# From random weights at the lr the suite was tuned at: the embedded pretraining (~30 s) has tests of its own.
FAST_RUN_CONFIG = {
    "batch-size": 400,
    "nr-of-epochs": 1,
    "device": "cpu",
    "embedded-pretraining": False,
    "start-lr": 1e-3,
}


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(1)


@pytest.fixture
def fast_run_config(tmp_path) -> dict:
    """The fast run config's keys, with the test's own results and cache folders."""
    return {
        **FAST_RUN_CONFIG,
        "output-dir": str(tmp_path / "results"),
        "pre-processors-cache-dir": str(tmp_path / "cache"),
    }


@pytest.fixture
def fast_config(fast_run_config) -> RunConfig:
    return parse_run_config(fast_run_config)
