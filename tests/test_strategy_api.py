"""Every method is a Flower strategy: `start(grid, initial_arrays, num_rounds, ...)` returns a `Result`."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, RecordDict
from support.inprocess_grid import InProcessGrid
from support.strategy_runs import CPU, epoch_records, run_strategy

from mpsl_flower import wire
from mpsl_flower.app import client_app, server_app
from mpsl_flower.config import parse_run_config
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.models.trainable import load_trainable, trainable_arrays
from mpsl_flower.node import progress as node_progress
from mpsl_flower.runs.readers import read_metrics
from mpsl_flower.split.evaluation import evaluate
from mpsl_flower.split.model_inputs import load_inputs
from strategies.global_model import initial_arrays
from strategies.mpsl import MpslStrategy

NUM_CLIENTS = 3


@pytest.mark.parametrize("method", ["mpsl", "fedavg", "fedclip", "centralized"])
def test_result_holds_each_epochs_metrics_and_the_final_global_model(fast_run_config, method):
    run_config = {**fast_run_config, "method": method, "nr-of-epochs": 2, "batch-size": 300}
    config = parse_run_config(run_config)
    grid = InProcessGrid(client_app.app, NUM_CLIENTS, run_config)
    result, results = server_app.train(config, grid)

    assert sorted(result.train_metrics_clientapp) == sorted(result.evaluate_metrics_serverapp) == [1, 2]
    assert epoch_records(result) == read_metrics(results.folder), "Result and metrics.jsonl differ"
    # The final arrays are the trainable set of the unsplit model; loaded, they score what epoch 2 recorded.
    model = new_full_model(config)
    assert set(result.arrays) == set(trainable_arrays(model))
    load_trainable(model, wire.record_to_arrays(result.arrays))
    tested = evaluate(
        model.client,
        model.server,
        load_inputs(config).test,
        config.eval_batch_size,
        accuracy_batch_size=config.batch_size,
    )
    assert tested["test_accuracy"] == pytest.approx(result.evaluate_metrics_serverapp[2]["test_accuracy"])
    assert any(
        not np.array_equal(v, initial_arrays(config)[k].numpy())
        for k, v in wire.record_to_arrays(result.arrays).items()
    )


def test_mpsl_refuses_initial_client_weights_its_clients_would_not_have(fast_config):
    arrays = wire.record_to_arrays(initial_arrays(fast_config))
    name = next(k for k in arrays if k.startswith("client."))
    arrays[name] = arrays[name] + 1.0
    grid = InProcessGrid(client_app.app, NUM_CLIENTS, {})
    with pytest.raises(ValueError, match="client half of initial_arrays differs"):
        MpslStrategy(fast_config, CPU).start(grid, wire.tensors_to_record(arrays), num_rounds=1)
    with pytest.raises(ValueError, match="no per-round config"):
        MpslStrategy(fast_config, CPU).start(grid, initial_arrays(fast_config), train_config=ConfigRecord({"x": 1}))
    assert not grid.replies_sent


def test_mpsl_starts_its_server_from_the_given_server_half(fast_config):
    arrays = wire.record_to_arrays(initial_arrays(fast_config))
    arrays["server.head.weight"] = np.zeros_like(arrays["server.head.weight"])
    strategy = MpslStrategy(dataclasses.replace(fast_config, num_epochs=1), CPU)
    strategy._load_initial_arrays(wire.tensors_to_record(arrays))
    assert not strategy.server.model.head.weight.detach().any()


@pytest.mark.parametrize("method", ["mpsl", "fedavg"])
def test_each_clients_own_model_is_validated_when_asked(fast_run_config, method):
    run_config = {**fast_run_config, "method": method, "validate-only-aggregated-model": False, "batch-size": 300}
    config = parse_run_config(run_config)
    grid = InProcessGrid(client_app.app, NUM_CLIENTS, run_config)
    _, result = run_strategy(config, grid)
    (record,) = epoch_records(result)
    assert record["client_test_partitions"] == list(range(NUM_CLIENTS))
    accuracies = record["client_test_accuracy"]
    assert len(accuracies) == NUM_CLIENTS and record["client_test_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    if method == "mpsl":  # client 1's own tokenizers in front of the final server half
        model = new_full_model(config)
        load_trainable(model, wire.record_to_arrays(result.arrays))
        state = node_progress.stored_client_state(grid.contexts[grid.node_ids[1]], config)
        load_trainable(model.client, {k: v for k, v in state.items() if not k.startswith("optimizer.")})
        tested = evaluate(
            model.client,
            model.server,
            load_inputs(config).test,
            config.eval_batch_size,
            accuracy_batch_size=config.batch_size,
        )
        assert accuracies[1] == pytest.approx(tested["test_accuracy"])


def test_saving_follows_the_originals_options(fast_run_config, tmp_path):
    run_config = {**fast_run_config, "method": "centralized", "nr-of-epochs": 2}
    for options, expected in (
        ({"save-model-after-each-epoch": True}, {"mpsl_model.pt", "mpsl_model-epoch1.pt", "mpsl_model-epoch2.pt"}),
        ({"save-final-model": False}, set()),
    ):
        config = parse_run_config({**run_config, **options, "output-dir": str(tmp_path / str(len(expected)))})
        _, results = server_app.train(config, grid=None)
        assert {path.name for path in results.folder.glob("*.pt")} == expected


def test_the_readmes_own_server_app_example_runs(fast_run_config, capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "@app.main()" in block]
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    run_config = {**fast_run_config, "batch-size": 300}  # split evenly over the 3 clients
    grid = InProcessGrid(client_app.app, NUM_CLIENTS, run_config)
    namespace["main"](grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    assert 0.0 <= float(capsys.readouterr().out.strip().splitlines()[-1]) <= 1.0
