"""Centralized baseline: same model, same records, runs with and without Flower."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys

import torch
from flwr.app import Context, RecordDict
from support.inprocess_grid import InProcessGrid
from support.strategy_runs import CPU, epoch_records, run_strategy

from mpsl_flower.app import client_app, server_app
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.runs.readers import read_metrics
from mpsl_flower.split.local_epoch import train_local_epoch
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.optimizer import new_optimizer
from mpsl_flower.split.runner import InProcessRunner
from mpsl_flower.split.schedule import batch_rows


def test_centralized_writes_the_same_record_format_as_mpsl(fast_config):
    config = dataclasses.replace(fast_config, method="centralized")
    data = load_inputs(config)
    _, result = run_strategy(config, grid=None)
    (record,) = epoch_records(result)
    mpsl_record = InProcessRunner(fast_config, data, num_clients=4, device=CPU).run_epoch(0)
    assert set(record) == set(mpsl_record)
    assert record["steps"] == -(-len(data.train) // fast_config.batch_size)
    assert record["train_loss"] > 0 and 0 <= record["test_accuracy"] <= 1


def test_centralized_equals_a_hand_written_training_loop(fast_config):
    """Adam on the mean cross-entropy of each seeded batch, nothing more."""
    train = load_inputs(fast_config).train.select(range(300))
    model = new_full_model(fast_config)
    reference = copy.deepcopy(model)
    train_local_epoch(model, new_optimizer(model, 1e-3), train, 100, 1e-3, fast_config.seed, 0, 0)
    ref_optimizer = torch.optim.Adam([p for p in reference.parameters() if p.requires_grad], lr=1e-3)
    for step in range(3):
        batch = train.select(batch_rows(300, 100, fast_config.seed, 0, 0, step))
        ref_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(reference(batch.inputs), batch.labels).backward()
        ref_optimizer.step()
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)


def test_centralized_under_flower_leaves_the_clients_idle(fast_run_config, tmp_path):
    run_config = {**fast_run_config, "method": "centralized"}
    grid = InProcessGrid(client_app.app, 4, run_config)
    server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    assert grid.replies_sent == []
    (folder,) = (tmp_path / "results").iterdir()
    assert [r["epoch"] for r in read_metrics(folder)] == [1]


def _command_line(run_config: str, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mpsl_flower.app.run_centralized", "--run-config", run_config]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_centralized_runs_without_flower_from_the_command_line_and_shows_its_epochs(tmp_path):
    output = tmp_path / "results"
    run = _command_line(f"nr-of-epochs=1 batch-size=1000 output-dir='{output}'")
    assert run.returncode == 0, run.stderr[-3000:]
    (folder,) = output.iterdir()
    assert json.loads((folder / "config.json").read_text())["method"] == "centralized"
    assert read_metrics(folder)[0]["steps"] == 6
    assert "[centralized] epoch 1/1: train loss" in run.stderr, run.stderr[-3000:]
    quiet = _command_line(f"nr-of-epochs=1 batch-size=1000 output-dir='{output}'", FLWR_LOG_LEVEL="WARNING")
    assert quiet.returncode == 0 and "epoch 1/1" not in quiet.stderr + quiet.stdout, quiet.stderr[-3000:]


def test_a_bad_value_on_the_command_line_is_one_line_without_traceback(tmp_path):
    run = _command_line(f"dataset='mnist' output-dir='{tmp_path}'")
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("Invalid run config: dataset='mnist' is not supported; allowed values: shapes-qa, "), line
