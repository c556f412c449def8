"""FedAvg baseline: the server's average is the weighted mean of what clients trained."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import Result
from support.inprocess_grid import InProcessGrid
from support.strategy_runs import epoch_records, run_strategy

from mpsl_flower import wire
from mpsl_flower.app import client_app
from mpsl_flower.config import parse_run_config
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.models.trainable import trainable_arrays
from mpsl_flower.node.partitions import client_partition
from mpsl_flower.split.evaluation import evaluate
from mpsl_flower.split.local_epoch import train_local_epoch
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.optimizer import new_optimizer
from strategies.fedavg import select_partitions


def _run(run_config: dict, num_clients: int, app: ClientApp = client_app.app) -> tuple[Result, InProcessGrid]:
    grid = InProcessGrid(app, num_clients, run_config)
    return run_strategy(parse_run_config(run_config), grid)[1], grid


def _averaged(result: Result) -> dict[str, np.ndarray]:
    return wire.record_to_arrays(result.arrays)


def test_round_average_is_the_sample_weighted_mean_of_local_training(fast_run_config):
    run_config = {**fast_run_config, "method": "fedavg", "batch-size": 300}
    result, _ = _run(run_config, 3)
    config = parse_run_config(run_config)
    locals_, weights = [], []
    for pid in range(3):
        data = client_partition(config, pid, 3)
        model = new_full_model(config)
        train_local_epoch(
            model, new_optimizer(model, config.learning_rate), data, 100, config.learning_rate, config.seed, pid, 0
        )
        locals_.append(trainable_arrays(model))
        weights.append(len(data))
    for name, value in _averaged(result).items():
        expected = sum(w * local[name].astype(np.float64) for w, local in zip(weights, locals_)) / sum(weights)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_one_client_one_round_equals_one_epoch_of_ordinary_training_on_its_data(fast_run_config):
    run_config = {**fast_run_config, "method": "fedavg", "dataset-split-type": "iid"}
    result, _ = _run(run_config, 1)
    config = parse_run_config(run_config)
    data = client_partition(config, 0, 1)
    reference = new_full_model(config)
    optimizer = new_optimizer(reference, config.learning_rate)
    stats = train_local_epoch(reference, optimizer, data, config.batch_size, config.learning_rate, config.seed, 0, 0)
    for name, value in trainable_arrays(reference).items():
        np.testing.assert_allclose(_averaged(result)[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    (record,) = epoch_records(result)
    test = load_inputs(config).test
    tested = evaluate(
        reference.client, reference.server, test, config.eval_batch_size, accuracy_batch_size=config.batch_size
    )
    expected = {
        "train_loss": stats.loss_sum / stats.num_examples,
        "train_accuracy": stats.correct / stats.num_examples,
        "steps": stats.steps,
        **tested,
    }
    for key, value in expected.items():
        assert record[key] == pytest.approx(value, rel=1e-5), key


def test_only_trainable_tensors_travel_and_adam_state_persists(fast_run_config):
    run_config = {**fast_run_config, "method": "fedavg", "nr-of-epochs": 2}
    result, grid = _run(run_config, 2)
    model = new_full_model(parse_run_config(run_config))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen, "the first encoder blocks should be frozen"
    assert set(result.arrays) == trainable
    for reply in grid.replies_sent:
        if wire.ARRAYS in reply.content:
            assert set(reply.content[wire.ARRAYS]) == trainable
    config = parse_run_config(run_config)
    for pid, node in enumerate(grid.node_ids):
        steps_per_round = math.ceil(len(client_partition(config, pid, 2)) / config.client_batch_size(2))
        state = wire.record_to_arrays(grid.contexts[node].state[wire.STATE_FEDAVG_OPTIMIZER])
        assert state["0.step"] == 2 * steps_per_round
    records = epoch_records(result)
    assert [r["epoch"] for r in records] == [1, 2]
    expected_down = 2 * sum(4 * a.size for a in _averaged(result).values())
    assert records[0]["bytes_down"] == pytest.approx(expected_down, rel=0.01)


def test_a_client_with_broken_weights_is_left_out_of_the_average(fast_run_config):
    real = client_app.app
    app = ClientApp()

    @app.train()
    def broken(message: Message, context: Context) -> Message:
        reply = real(message, context)
        if context.node_config[wire.PARTITION_ID] == 1:
            arrays = wire.record_to_arrays(reply.content[wire.ARRAYS])
            arrays = {k: np.full_like(v, np.inf) for k, v in arrays.items()}
            reply.content[wire.ARRAYS] = wire.tensors_to_record(arrays)
        return reply

    app.query(wire.action(wire.PARTITION_INFO))(real)
    result, _ = _run({**fast_run_config, "method": "fedavg", "batch-size": 300}, 3, app)
    (record,) = epoch_records(result)
    assert record["clients_aggregated"] == 2 and record["dropped_client_steps"] == 1
    assert all(np.isfinite(v).all() for v in _averaged(result).values())


def test_client_selection_is_seeded_and_respects_the_fraction():
    first = select_partitions(list(range(100)), 0.1, seed=2024, server_round=3)
    assert first == select_partitions(list(range(100)), 0.1, seed=2024, server_round=3)
    assert len(first) == 10 and first != select_partitions(list(range(100)), 0.1, seed=2024, server_round=4)
    assert select_partitions([5, 7], 0.01, seed=0, server_round=1) in ([5], [7])
