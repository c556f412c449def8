"""The Flower path (real ClientApp and MPSL strategy over an in-process Grid) is the method."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from uuid import uuid4

import flwr
import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from support.inprocess_grid import InProcessGrid
from support.strategy_runs import CPU, epoch_records, run_strategy

from mpsl_flower import wire
from mpsl_flower.app import client_app as client_module
from mpsl_flower.app import server_app
from mpsl_flower.config import ENCODER_SIZES, ConfigError, parse_run_config
from mpsl_flower.models.trainable import trainable_arrays
from mpsl_flower.node import progress as node_progress
from mpsl_flower.node.partitions import client_partition
from mpsl_flower.runs.readers import read_metrics
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner
from mpsl_flower.split.schedule import num_batches
from strategies.discovery import discover_clients

NUM_CLIENTS = 4


class ForgetfulGrid(InProcessGrid):
    """Empties the ClientApp's per-process cache before every message, as a fresh process would."""

    def _handle(self, message):
        node_progress.live_clients.clear()
        return super()._handle(message)


class RetryingGrid(ForgetfulGrid):
    """Delivers every message twice from the same node state, in fresh processes, as a retry after a
    lost reply would, and answers with the second reply."""

    def _handle(self, message):
        context = self.contexts[message.metadata.dst_node_id]
        before = copy.deepcopy(context.state)
        super()._handle(message)
        context.state = before
        return super()._handle(message)


@pytest.mark.parametrize("grid_class", [InProcessGrid, ForgetfulGrid, RetryingGrid])
def test_flower_path_gives_the_same_weights_as_the_in_process_runner(fast_run_config, grid_class):
    config = parse_run_config(fast_run_config)
    grid = grid_class(client_module.app, NUM_CLIENTS, fast_run_config)
    strategy, result = run_strategy(config, grid)
    (flower_record,) = epoch_records(result)

    runner = InProcessRunner(config, load_inputs(config), NUM_CLIENTS, device=CPU)
    runner_record = runner.run_epoch(0)

    for (name, p), q in zip(strategy.server.model.state_dict().items(), runner.server.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    for node, client in zip(grid.node_ids, runner.clients):
        state = grid.contexts[node].state
        assert list(state) == [wire.STATE_PROGRESS]  # light: the weights are in the node's store, not the state
        stored = node_progress.stored_client_state(grid.contexts[node], config)
        for name, value in trainable_arrays(client.model).items():
            np.testing.assert_allclose(stored[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    for key in ("train_loss", "train_accuracy", "test_accuracy", "steps"):
        assert flower_record[key] == pytest.approx(runner_record[key], rel=1e-5)


def _all_values(content: RecordDict):
    for record in content.values():
        if isinstance(record, ArrayRecord):
            for name, array in record.items():
                yield name, array.numpy()
        else:
            for name, value in record.items():
                yield name, value


def test_labels_never_leave_a_client(fast_run_config):
    config = parse_run_config(fast_run_config)
    grid = InProcessGrid(client_module.app, NUM_CLIENTS, fast_run_config)
    run_strategy(config, grid)
    label_sets = {pid: client_partition(config, pid, NUM_CLIENTS).labels.numpy() for pid in range(NUM_CLIENTS)}
    assert grid.replies_sent, "no client replied"
    for reply in grid.replies_sent:
        labels = label_sets[grid.node_ids.index(reply.metadata.src_node_id)]
        for name, value in _all_values(reply.content):
            assert "label" not in name.lower()
            if isinstance(value, np.ndarray):
                assert value.dtype == np.float32, f"{name} has dtype {value.dtype}"
                flat = value.reshape(len(value), -1) if value.ndim else value.reshape(1, 1)
                one_hot_rows = np.isin(flat, (0.0, 1.0)).all(axis=1) & (flat.sum(axis=1) == 1)
                assert not one_hot_rows.any(), f"{name} holds one-hot rows"
                is_integral = np.array_equal(value, np.round(value)) and value.ndim == 1
                assert not (is_integral and len(value) > 1 and np.isin(value, labels).all()), name
        metrics = reply.content.get(wire.CLIENT_METRICS)
        if metrics is not None:
            assert set(metrics) <= {wire.LOSS_SUM, wire.CORRECT, wire.NUM_EXAMPLES, wire.COMPUTE_S}


def _faulty_client_app() -> ClientApp:
    """The real ClientApp, except that some partitions misbehave in one way each."""
    app = ClientApp()
    real = client_module.app

    def faulty(message: Message, context: Context) -> Message:
        pid, step = context.node_config[wire.PARTITION_ID], dict(message.content.get(wire.STEP, {}))
        reply = real(message, context)
        msg_type = message.metadata.message_type
        if pid == 1 and msg_type == wire.FORWARD and step.get(wire.STEP_INDEX) == 2:
            raise RuntimeError("simulated client crash")
        if pid == 2 and msg_type == wire.FORWARD:
            smashed = wire.record_to_arrays(reply.content[wire.SMASHED])
            reply.content[wire.SMASHED] = wire.tensors_to_record({k: v[:, :-1] for k, v in smashed.items()})
        if pid == 3 and msg_type == wire.LOSS_GRAD and step.get(wire.STEP_INDEX) == 1:
            grad = wire.record_to_arrays(reply.content[wire.LOGIT_GRAD])[wire.LOGIT_GRAD]
            reply.content[wire.LOGIT_GRAD] = wire.tensors_to_record({wire.LOGIT_GRAD: np.full_like(grad, np.nan)})
        return reply

    for message_type in (wire.FORWARD, wire.LOSS_GRAD, wire.END_EPOCH):
        app.train(wire.action(message_type))(faulty)
    app.query(wire.action(wire.PARTITION_INFO))(real)
    return app


def test_failing_clients_are_dropped_from_the_step_and_the_run_finishes(fast_run_config, caplog):
    run_config = {**fast_run_config, "step-timeout-s": 1.0}
    config = parse_run_config({**run_config, "batch-size": 600})
    grid = InProcessGrid(_faulty_client_app(), 6, {**run_config, "batch-size": 600}, silent_partitions=[4])
    with caplog.at_level("WARNING", logger="flwr"):
        (record,) = epoch_records(run_strategy(config, grid)[1])
    steps = [num_batches(len(client_partition(config, pid, 6)), 100) for pid in range(6)]
    assert min(steps[1], steps[3]) > 2
    # partition 1 once, 2 at every step, 3 once, 4 (silent) at every step
    assert record["dropped_client_steps"] == 1 + steps[2] + 1 + steps[4]
    assert record["clients_aggregated"] == 5  # the silent client cannot return its weights
    assert np.isfinite(record["test_loss"])
    log = caplog.text
    assert "simulated client crash" in log
    assert "expected float32 (" in log and "NaN or Inf" in log and "no reply within 1 s" in log


def _crashing_client_app() -> ClientApp:
    """The real ClientApp, except that every forward fails."""
    app = ClientApp()

    def crash(message: Message, context: Context) -> Message:
        raise RuntimeError("simulated client crash")

    app.train(wire.action(wire.FORWARD))(crash)
    app.query(wire.action(wire.PARTITION_INFO))(client_module.app)
    return app


def test_a_run_whose_every_client_drops_out_of_every_step_stops_instead_of_reporting_an_untrained_model(
    fast_run_config,
):
    grid = InProcessGrid(_crashing_client_app(), 2, {**fast_run_config, "batch-size": 200})
    with pytest.raises(RuntimeError, match="epoch 1: no step ran, every client dropped out"):
        run_strategy(parse_run_config({**fast_run_config, "batch-size": 200}), grid)


def _refusing_client_app() -> ClientApp:
    """A ClientApp whose every node fails to say which partition it holds."""
    app = ClientApp()

    @app.query(wire.action(wire.PARTITION_INFO))
    def refuse(message: Message, context: Context) -> Message:
        raise RuntimeError("simulated partition failure")

    return app


def test_discovery_where_every_node_refuses_alike_stops_at_once_with_the_reason(fast_run_config):
    grid = InProcessGrid(_refusing_client_app(), 2, fast_run_config)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="all 2 nodes answered with the same error: .*simulated partition failure"):
        discover_clients(grid, timeout_s=2, wait_s=600)
    assert time.monotonic() - started < 60  # not the 600 s it would wait for nodes still starting


def test_invalid_config_stops_the_run_before_any_training_message(fast_run_config):
    grid = InProcessGrid(client_module.app, NUM_CLIENTS, {**fast_run_config, "dataset": "mnist"})
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=grid.contexts[1000].run_config
    )
    with pytest.raises(ConfigError, match="dataset='mnist'"):
        server_app.main(grid, context)
    assert grid.replies_sent == []


def test_batch_smaller_than_the_federation_stops_before_training(fast_run_config):
    run_config = {**fast_run_config, "batch-size": 3}
    grid = InProcessGrid(client_module.app, NUM_CLIENTS, run_config)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    with pytest.raises(ConfigError, match="batch-size=3 is below the number of clients"):
        server_app.main(grid, context)
    assert all(not r.metadata.message_type.startswith("train") for r in grid.replies_sent)


def test_a_run_leaves_config_metrics_and_model_in_its_results_folder(fast_run_config, tmp_path):
    run_config = {**fast_run_config, "nr-of-epochs": 2}
    grid = InProcessGrid(client_module.app, NUM_CLIENTS, run_config)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    server_app.main(grid, context)
    (folder,) = (tmp_path / "results").iterdir()
    assert json.loads((folder / "config.json").read_text())["nr-of-epochs"] == 2
    info = json.loads((folder / "run_info.json").read_text())
    assert info["num_clients"] == NUM_CLIENTS
    assert info["train_samples"] == sum(info["partition_sizes"].values())
    assert info["test_samples"] == len(load_inputs(parse_run_config(run_config)).test) == 1500
    preprocessing = info["preprocessing"]
    assert preprocessing["image"].startswith("32 px (crop), clip mean") and "retrieval_scoring" not in preprocessing
    versions = info["versions"]
    assert (versions["torch"], versions["flwr"]) == (torch.__version__, flwr.__version__)
    assert versions["timm"] and versions["mpsl-flower"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", versions["git_commit"]), versions  # the tests run in a checkout
    label_counts = info["partition_label_counts"]
    assert {int(p): sum(c.values()) for p, c in label_counts.items()} == {
        int(p): n for p, n in info["partition_sizes"].items()
    }
    saved = torch.load(folder / "mpsl_model.pt")
    # Exact counts: every client tensor trains; the server's frozen blocks are the frozen ones.
    assert info["client_trainable_parameters"] == sum(t.numel() for t in saved["client"].values())
    assert info["server_trainable_parameters"] + info["frozen_parameters"] == sum(
        t.numel() for t in saved["server"].values()
    )
    size = ENCODER_SIZES["tiny-default"]
    block = sum(t.numel() for k, t in saved["server"].items() if k.startswith("encoder.blocks.0."))
    assert info["frozen_parameters"] == block * (size.depth - parse_run_config(run_config).finetune_blocks)
    assert info["weights"]["encoder"] == "random init" and info["weights"]["text encoder"].startswith("bag-of-words")
    records = read_metrics(folder)
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_accuracy", "test_accuracy", "bytes_up", "bytes_down", "train_wall_s"):
        assert all(key in r for r in records)
    assert records[0]["bytes_up"] > 0 and records[0]["bytes_down"] > 0
    assert saved["epoch"] == 2 and "head.weight" in saved["server"] and saved["client"]


def test_a_node_whose_partition_info_is_malformed_is_left_out(fast_run_config, caplog):
    real = client_module.app
    app = ClientApp()

    @app.query(wire.action(wire.PARTITION_INFO))
    def partial_info(message: Message, context: Context) -> Message:
        reply = real(message, context)
        if context.node_config[wire.PARTITION_ID] == 2:
            reply.content = RecordDict({wire.INFO: MetricRecord({wire.PARTITION_ID: 2})})
        return reply

    grid = InProcessGrid(app, 3, fast_run_config)
    with caplog.at_level("WARNING", logger="flwr"):
        clients = discover_clients(grid, timeout_s=1.0)
    assert [c.partition_id for c in clients] == [0, 1]
    assert f"lacks {[wire.NUM_PARTITIONS, wire.NUM_EXAMPLES]}" in caplog.text


LATE_PARTITION, LATE_STEP, LATE_ANSWERED_AT = 1, 2, 5


class LosingGrid(InProcessGrid):
    """Partition 1's step-2 `train.forward` never reaches its ClientApp (the server drops it at the timeout)."""

    def _late(self, message) -> bool:
        step = message.content.config_records.get(wire.STEP)
        return (
            message.metadata.message_type == wire.FORWARD
            and message.metadata.dst_node_id == self.node_ids[LATE_PARTITION]
            and step[wire.STEP_INDEX] == LATE_STEP
        )

    def push_messages(self, messages):
        messages = list(messages)
        return super().push_messages([m for m in messages if not self._late(m)]) + [
            _accepted(m) for m in messages if self._late(m)
        ]


class LateGrid(LosingGrid):
    """That message does reach it, but its ClientApp answers only at step 5, long after the server gave up,
    with the node's state as it was when the message came: as a ClientApp that hung past the timeout does
    in Flower's simulation, while the node's next messages run elsewhere. Flower keeps the state of a
    handler that returns; `late_outcomes` records what the late one did."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.held: list[tuple] = []
        self.late_outcomes: list[str] = []

    def push_messages(self, messages):
        messages = list(messages)
        for message in messages:
            node = message.metadata.dst_node_id
            if self._late(message):
                self.held.append((_over_the_wire_copy(message), copy.deepcopy(self.contexts[node])))
            step = message.content.config_records.get(wire.STEP)
            if self.held and node == self.node_ids[LATE_PARTITION] and step[wire.STEP_INDEX] == LATE_ANSWERED_AT:
                late_message, late_context = self.held.pop()
                try:
                    self.client_app(late_message, late_context)
                    self.contexts[node].state = late_context.state  # Flower writes back a returning handler's state
                    self.late_outcomes.append("returned")
                except Exception as error:
                    self.late_outcomes.append(f"{type(error).__name__}: {error}")
        return super().push_messages(messages)


def _accepted(message) -> str:
    """Accept `message` as a SuperLink would (an id for it), without ever delivering it."""
    message.metadata.__dict__["_message_id"] = str(uuid4())
    return message.metadata.message_id


def _over_the_wire_copy(message):
    from flwr.common.serde import message_from_proto, message_to_proto

    message.metadata.__dict__["_message_id"] = str(uuid4())
    return message_from_proto(message_to_proto(message))


def test_a_message_answered_after_the_nodes_later_ones_is_refused_and_changes_nothing(fast_run_config, tmp_path):
    run_config = {**fast_run_config, "step-timeout-s": 0.5, "client-state-dir": str(tmp_path / "state")}
    config = parse_run_config(run_config)
    states = []
    for grid_class in (LosingGrid, LateGrid):
        grid = grid_class(client_module.app, NUM_CLIENTS, run_config)
        (record,) = epoch_records(run_strategy(config, grid)[1])
        assert record["dropped_client_steps"] == 1, grid_class  # the late step only, no knock-on drop
        states.append([node_progress.stored_client_state(grid.contexts[n], config) for n in grid.node_ids])
    (outcome,) = grid.late_outcomes
    assert outcome.startswith("StaleMessage: message at (epoch, step, phase) (0, 2, 0) arrived after"), outcome
    for lost, late in zip(*states):  # as if the late message had never come
        for name, value in lost.items():
            np.testing.assert_array_equal(late[name], value, err_msg=name)


class SlowStartGrid(InProcessGrid):
    """Node 2 answers nothing for its first two partition queries: a device still building its cache."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.unanswered = 2

    def push_messages(self, messages):
        messages = list(messages)
        late = [m for m in messages if m.metadata.dst_node_id == self.node_ids[2] and self.unanswered]
        if late:
            self.unanswered -= 1
        kept = [m for m in messages if m not in late]
        return list(super().push_messages(kept)) + [_accepted(m) for m in late]


def test_discovery_waits_for_a_device_that_is_still_starting(fast_run_config, caplog):
    with caplog.at_level("INFO", logger="flwr"):
        clients = discover_clients(SlowStartGrid(client_module.app, 3, fast_run_config), timeout_s=0.3, wait_s=30)
    assert [c.partition_id for c in clients] == [0, 1, 2]
    assert "waiting for clients: 2 answered, 1 still starting" in caplog.text and "left out" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="flwr"):  # without the wait, it would have trained without it
        clients = discover_clients(SlowStartGrid(client_module.app, 3, fast_run_config), timeout_s=0.3)
    assert [c.partition_id for c in clients] == [0, 1] and "only 2 of 3 clients connected" in caplog.text


class RestartingGrid(InProcessGrid):
    """Partition 1's device is off from epoch 2, step 2, to the end of that epoch (its messages are lost), and
    restarted before epoch 3: a new SuperNode process, whose `context.state` is empty."""

    restarted = False

    def push_messages(self, messages):
        messages = list(messages)
        node = self.node_ids[1]
        off = [m for m in messages if m.metadata.dst_node_id == node and self._while_off(m)]
        for message in messages:
            step = message.content.config_records.get(wire.STEP)
            if message.metadata.dst_node_id == node and step and step[wire.EPOCH] == 2 and not self.restarted:
                self.contexts[node].state = RecordDict()  # restarted: the node's context is new
                node_progress.live_clients.clear()
                self.restarted = True
        return list(super().push_messages([m for m in messages if m not in off])) + [_accepted(m) for m in off]

    @staticmethod
    def _while_off(message) -> bool:
        step = message.content.config_records.get(wire.STEP)
        return bool(step) and step[wire.EPOCH] == 1 and step.get(wire.STEP_INDEX, 1 << 30) >= 2


def test_a_device_off_for_part_of_an_epoch_rejoins_from_its_snapshot(fast_run_config, tmp_path, caplog):
    run_config = {**fast_run_config, "nr-of-epochs": 3, "step-timeout-s": 0.3, "client-state-dir": str(tmp_path)}
    config = parse_run_config(run_config)
    with caplog.at_level("WARNING", logger="flwr"):
        records = epoch_records(run_strategy(config, RestartingGrid(client_module.app, NUM_CLIENTS, run_config))[1])
    steps = num_batches(len(client_partition(config, 1, NUM_CLIENTS)), config.client_batch_size(NUM_CLIENTS))
    assert [r["clients_aggregated"] for r in records] == [4, 3, 4]  # left out of epoch 2's average only
    assert [r["dropped_client_steps"] for r in records] == [0, steps - 2, 0]
    assert "partition 1 rejoins from its snapshot after epoch 1 of 2" in caplog.text


def test_the_client_app_module_imports_nothing_heavy():
    """In deployment every message starts a fresh ClientApp process: Flower's floor (`query.ping`) must not
    pay for torch, and a `query.ping` is answered without it."""
    code = (
        "import sys\n"
        "from flwr.app import Context, Message, RecordDict\n"
        "from mpsl_flower.app import client_app\n"
        "assert 'torch' not in sys.modules, 'torch imported by the ClientApp module'\n"
        "print(sorted(m for m in sys.modules if m.startswith(('mpsl_flower', 'strategies', 'tasks'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == "['mpsl_flower', 'mpsl_flower.app', 'mpsl_flower.app.client_app', 'mpsl_flower.wire']"
    )
