"""`app.simulation.simulate`, which reaches into Flower 1.42's internals: a real run on Ray in this process."""

from __future__ import annotations

import pytest

from mpsl_flower.app.simulation import simulate
from mpsl_flower.runs import record
from mpsl_flower.runs.readers import complete_runs, read_metrics


def test_simulate_runs_the_app_with_its_overrides_on_every_node(fast_run_config, tmp_path):
    """The overrides reach the ServerApp and every ClientApp: two SuperNodes train one epoch of the fast config
    into the given results folder, and both are aggregated."""
    simulate(2, {**fast_run_config, "batch-size": 200})
    (folder,) = complete_runs(tmp_path / "results")
    (epoch,) = read_metrics(folder)
    assert epoch[record.EPOCH] == 1 and epoch[record.CLIENTS_AGGREGATED] == 2
    assert epoch[record.DROPPED_CLIENT_STEPS] == 0 and record.TEST_ACCURACY in epoch


def test_simulate_refuses_an_unknown_key_as_flwr_run_does():
    with pytest.raises(ValueError, match="nr-of-epoch"):
        simulate(2, {"nr-of-epoch": 1})
