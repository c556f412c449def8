"""FedAvg baseline: the server's average is the weighted mean of what clients trained."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from inprocess_grid import InProcessGrid

from mpsl_flower import client_app, wire
from mpsl_flower.centralized import train_centralized
from mpsl_flower.client_data import client_partition
from mpsl_flower.config import parse_run_config
from mpsl_flower.local_training import train_local_epoch
from mpsl_flower.model_inputs import load_inputs
from mpsl_flower.models.weights import trainable_arrays
from mpsl_flower.split.build import new_full_model
from strategies import fedavg
from strategies.discovery import discover_clients
from strategies.fedavg import FederatedAveraging, select_partitions

CPU = torch.device("cpu")


def _run(run_config: dict, num_clients: int, app: ClientApp = client_app.app) -> tuple[FederatedAveraging, InProcessGrid]:
    config = parse_run_config(run_config)
    grid = InProcessGrid(app, num_clients, run_config)
    strategy = FederatedAveraging(config, discover_clients(grid, 10), load_inputs(config).test, CPU)
    strategy.run(grid)
    return strategy, grid


def test_round_average_is_the_sample_weighted_mean_of_local_training(fast_run_config):
    run_config = {**fast_run_config, "method": "fedavg", "batch-size": 300}
    strategy, _ = _run(run_config, 3)
    config = parse_run_config(run_config)
    locals_, weights = [], []
    for pid in range(3):
        data = client_partition(config, pid, 3)
        model = new_full_model(config)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
        train_local_epoch(model, optimizer, data, 100, config.learning_rate, config.seed, pid, 0)
        locals_.append(trainable_arrays(model))
        weights.append(len(data))
    for name, value in trainable_arrays(strategy.model).items():
        expected = sum(w * local[name].astype(np.float64) for w, local in zip(weights, locals_)) / sum(weights)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_one_client_one_round_equals_one_centralized_epoch(fast_run_config):
    run_config = {**fast_run_config, "method": "fedavg", "dataset-split-type": "iid"}
    strategy, _ = _run(run_config, 1)
    config = parse_run_config(run_config)
    data = client_partition(config, 0, 1)
    (centralized,) = train_centralized(config, data, load_inputs(config).test, CPU)
    reference = new_full_model(config)
    optimizer = torch.optim.Adam([p for p in reference.parameters() if p.requires_grad], lr=config.learning_rate)
    train_local_epoch(reference, optimizer, data, config.batch_size, config.learning_rate, config.seed, 0, 0)
    for name, value in trainable_arrays(reference).items():
        np.testing.assert_allclose(trainable_arrays(strategy.model)[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    (record,) = strategy.history
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "steps"):
        assert record[key] == pytest.approx(centralized[key], rel=1e-5), key


def test_only_trainable_tensors_travel_and_adam_state_persists(fast_run_config):
    run_config = {**fast_run_config, "method": "fedavg", "nr-of-epochs": 2}
    strategy, grid = _run(run_config, 2)
    trainable = {n for n, p in strategy.model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in strategy.model.named_parameters() if not p.requires_grad}
    assert frozen, "the first encoder blocks should be frozen"
    for reply in grid.replies_sent:
        if fedavg.ARRAYS in reply.content:
            assert set(reply.content[fedavg.ARRAYS]) == trainable
    config = parse_run_config(run_config)
    for pid, node in enumerate(grid.node_ids):
        steps_per_round = math.ceil(len(client_partition(config, pid, 2)) / config.client_batch_size(2))
        state = wire.record_to_arrays(grid.contexts[node].state[client_app.STATE_FEDAVG_OPTIMIZER])
        assert state["0.step"] == 2 * steps_per_round
    assert [r["epoch"] for r in strategy.history] == [1, 2]
    expected_down = 2 * sum(4 * a.size for a in trainable_arrays(strategy.model).values())
    assert strategy.history[0]["bytes_down"] == pytest.approx(expected_down, rel=0.01)


def test_a_client_with_broken_weights_is_left_out_of_the_average(fast_run_config):
    real = client_app.app
    app = ClientApp()

    @app.train()
    def broken(message: Message, context: Context) -> Message:
        reply = real(message, context)
        if context.node_config["partition-id"] == 1:
            arrays = wire.record_to_arrays(reply.content[fedavg.ARRAYS])
            arrays = {k: np.full_like(v, np.inf) for k, v in arrays.items()}
            reply.content[fedavg.ARRAYS] = wire.tensors_to_record(arrays)
        return reply

    app.query("partition_info")(real)
    strategy, _ = _run({**fast_run_config, "method": "fedavg"}, 3, app)
    (record,) = strategy.history
    assert record["clients_aggregated"] == 2 and record["dropped_client_steps"] == 1
    assert all(np.isfinite(v).all() for v in trainable_arrays(strategy.model).values())


def test_client_selection_is_seeded_and_respects_the_fraction():
    first = select_partitions(list(range(100)), 0.1, seed=2024, server_round=3)
    assert first == select_partitions(list(range(100)), 0.1, seed=2024, server_round=3)
    assert len(first) == 10 and first != select_partitions(list(range(100)), 0.1, seed=2024, server_round=4)
    assert select_partitions([5, 7], 0.01, seed=0, server_round=1) in ([5], [7])
