"""`clients-per-step`: a seeded draw of K clients per MPSL step, the same on the Flower path as in the runner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support.inprocess_grid import InProcessGrid
from support.strategy_runs import CPU, epoch_records, run_strategy

from mpsl_flower import wire
from mpsl_flower.app import client_app as client_module
from mpsl_flower.config import ConfigError, parse_run_config
from mpsl_flower.models.trainable import trainable_arrays
from mpsl_flower.node import progress as node_progress
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner
from mpsl_flower.split.schedule import StepSchedule, batch_length, num_batches, step_batch
from tasks.data import TaskData

NUM_CLIENTS, K, BATCH = 6, 3, 600  # 200 samples from each of 3 of the 6 clients per step
TIMING = {"train_wall_s", "client_compute_s", "server_compute_s", "eval_s"}


class RecordingGrid(InProcessGrid):
    """Keeps (partition, step, batch index) of every `train.forward` it delivers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.forwards: list[tuple[int, int, int]] = []

    def _handle(self, message):
        if message.metadata.message_type == wire.FORWARD:
            step = message.content[wire.STEP]
            partition = self.node_ids.index(message.metadata.dst_node_id)
            self.forwards.append((partition, int(step[wire.STEP_INDEX]), int(step[wire.BATCH_INDEX])))
        return super()._handle(message)


@pytest.fixture(scope="module")
def sampled_run_config(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("clients_per_step")
    return {
        "batch-size": BATCH,
        "clients-per-step": K,
        "nr-of-epochs": 1,
        "device": "cpu",
        "output-dir": str(folder / "results"),
        "pre-processors-cache-dir": str(folder / "cache"),
    }


@pytest.fixture(scope="module")
def sampled_runner(sampled_run_config) -> tuple[InProcessRunner, dict]:
    torch.set_num_threads(1)
    config = parse_run_config(sampled_run_config)
    runner = InProcessRunner(config, load_inputs(config), NUM_CLIENTS, device=CPU)
    return runner, runner.run_epoch(0)


def _small(data: TaskData) -> TaskData:
    """A fifth of the task: the runner-only tests train on it, in seconds."""
    return TaskData(data.train.subset(range(len(data.train) // 5)), data.test.subset(range(len(data.test) // 5)))


def _draws(schedule: StepSchedule, epoch: int) -> list[dict[int, int]]:
    return [schedule.takes(epoch, step) for step in range(schedule.num_steps)]


def _without_timing(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in TIMING}


def test_an_epoch_is_a_fixed_number_of_steps_of_k_clients_each_taking_its_next_batch(sampled_runner):
    runner, record = sampled_runner
    schedule, m = runner.schedule, runner.client_batch_size
    sizes = [len(p) for p in runner.partitions]
    assert m == BATCH // K
    assert schedule.num_steps == math.ceil(sum(sizes) / BATCH) == record["steps"]
    assert schedule.num_steps != max(num_batches(n, m) for n in sizes)  # not the every-client epoch
    drawn_before = dict.fromkeys(range(NUM_CLIENTS), 0)
    for takes in _draws(schedule, 0):
        assert len(takes) == K and list(takes) == sorted(takes)
        assert takes == {p: drawn_before[p] for p in takes}  # each drawn client's next mini-batch
        for p in takes:
            drawn_before[p] += 1
    assert sum(drawn_before.values()) == K * schedule.num_steps
    assert any(drawn_before[p] > num_batches(sizes[p], m) for p in drawn_before), "no client cycles: pick another case"


def test_a_client_drawn_more_often_than_it_has_batches_cycles_through_its_partition(sampled_runner):
    runner, _ = sampled_runner
    data, m, seed = runner.partitions[2], runner.client_batch_size, runner.config.seed
    batches = num_batches(len(data), m)
    first_pass = [step_batch(data, m, seed, 2, 0, step=b, batch=b) for b in range(batches)]
    assert sum(len(b) for b in first_pass) == len(data)
    assert sorted(torch.cat([b.labels for b in first_pass]).tolist()) == sorted(data.labels.tolist())
    again = step_batch(data, m, seed, 2, 0, step=batches + 3, batch=batches + 1)
    assert torch.equal(again.labels, first_pass[1].labels)
    assert len(again) == batch_length(len(data), m, batches + 1)
    assert batch_length(len(data), m, batches - 1) == len(data) - (batches - 1) * m


def test_the_flower_path_with_clients_per_step_gives_the_runner_weights(sampled_run_config, sampled_runner):
    runner, runner_record = sampled_runner
    config = parse_run_config(sampled_run_config)
    grid = RecordingGrid(client_module.app, NUM_CLIENTS, sampled_run_config)
    strategy, result = run_strategy(config, grid)
    (flower_record,) = epoch_records(result)

    expected = [(p, step, b) for step, takes in enumerate(_draws(runner.schedule, 0)) for p, b in takes.items()]
    assert grid.forwards == expected  # only the drawn clients, each told its batch index
    for (name, p), q in zip(strategy.server.model.state_dict().items(), runner.server.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    for node, client in zip(grid.node_ids, runner.clients):
        stored = node_progress.stored_client_state(grid.contexts[node], config)
        for name, value in trainable_arrays(client.model).items():
            np.testing.assert_allclose(stored[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    for key in ("train_loss", "train_accuracy", "test_accuracy", "steps", "clients_aggregated", "bytes_analytic"):
        assert flower_record[key] == pytest.approx(runner_record[key], rel=1e-5), key


def test_the_same_seed_draws_and_trains_the_same_and_another_seed_draws_otherwise(sampled_run_config, sampled_runner):
    runner, _ = sampled_runner
    config = parse_run_config({**sampled_run_config, "batch-size": 120})
    data = _small(load_inputs(config))
    runs = [InProcessRunner(config, data, NUM_CLIENTS, device=CPU) for _ in range(2)]
    assert runs[0].schedule.sampled and runs[0].schedule.num_steps == math.ceil(len(data.train) / 120)
    assert _without_timing(runs[0].run_epoch(0)) == _without_timing(runs[1].run_epoch(0))
    for p, q in zip(*(run.server.model.state_dict().values() for run in runs)):
        assert torch.equal(p, q)
    config = parse_run_config(sampled_run_config)
    sizes = dict(runner.schedule.partition_sizes)
    assert _draws(StepSchedule(config, sizes), 0) == _draws(runner.schedule, 0)
    assert _draws(StepSchedule(config, sizes), 1) != _draws(runner.schedule, 0)  # each epoch draws anew
    other_seed = parse_run_config({**sampled_run_config, "random-seed": config.seed + 1})
    assert _draws(StepSchedule(other_seed, sizes), 0) != _draws(runner.schedule, 0)


def test_k_equal_to_the_number_of_clients_is_the_every_client_path_exactly(fast_run_config):
    every = parse_run_config({**fast_run_config, "batch-size": 80})
    all_drawn = parse_run_config({**fast_run_config, "batch-size": 80, "clients-per-step": 4})
    data = _small(load_inputs(every))
    runners = [InProcessRunner(config, data, 4, device=CPU) for config in (every, all_drawn)]
    assert _draws(runners[0].schedule, 0) == _draws(runners[1].schedule, 0)
    records = [_without_timing(runner.run_epoch(0)) for runner in runners]
    assert records[0] == records[1]
    for p, q in zip(*(runner.server.model.state_dict().values() for runner in runners)):
        assert torch.equal(p, q)
    for a, b in zip(*(runner.clients for runner in runners)):
        for (name, p), q in zip(trainable_arrays(a.model).items(), trainable_arrays(b.model).values()):
            np.testing.assert_array_equal(p, q, err_msg=name)


@pytest.mark.parametrize(
    ("overrides", "clients", "message"),
    [
        ({"clients-per-step": 7}, 6, r"clients-per-step=7 exceeds the 6 connected clients: set it to at most 6, or"),
        (
            {"clients-per-step": 7, "batch-size": 500},
            10,
            r"batch-size=500 does not split evenly over the clients-per-step=7 clients.* 497 or 504, "
            r"or clients-per-step to a divisor of 500",
        ),
        ({"clients-per-step": 8, "batch-size": 5}, 10, r"batch-size=5 is below clients-per-step=8"),
    ],
)
def test_a_clients_per_step_the_federation_cannot_serve_is_refused(overrides, clients, message):
    config = parse_run_config(overrides)
    with pytest.raises(ConfigError, match=message):
        config.check_num_clients(clients)


def test_clients_per_step_with_another_method_is_refused_when_the_config_is_read():
    with pytest.raises(ConfigError, match=r"clients-per-step=2 .*method='fedavg'.*leave clients-per-step at 0"):
        parse_run_config({"clients-per-step": 2, "method": "fedavg"})


def test_a_batch_that_k_clients_share_evenly_is_accepted_whatever_the_federation_size():
    config = parse_run_config({"clients-per-step": 100, "batch-size": 500})
    config.check_num_clients(10_000)  # 500 does not split over 10,000 clients, but over 100 of them
    assert config.client_batch_size(10_000) == 5
