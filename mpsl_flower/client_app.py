"""The ClientApp: one handler per message type, each a thin shell around task code.

MPSL handlers (`train.forward`, `train.loss_grad`, `train.end_epoch`) drive `ClientSide`;
the plain `train` handler runs the FedAvg baseline's local epoch.

The client's weights and Adam state live in `context.state`, so they survive between
messages wherever the ClientApp runs (a Ray actor in simulation, a fresh process per message
in deployment). A per-process cache skips the reload when this process handled the previous
message of the same node.
"""

from __future__ import annotations

import time

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from mpsl_flower import wire
from mpsl_flower.client_data import client_partition
from mpsl_flower.config import RunConfig, parse_run_config
from mpsl_flower.local_training import train_local_epoch
from mpsl_flower.models.weights import (
    load_optimizer_arrays,
    load_trainable,
    optimizer_arrays,
    trainable_arrays,
)
from mpsl_flower.split.build import new_client_side, new_full_model
from mpsl_flower.split.client_side import ClientSide, loss_gradient
from mpsl_flower.split.schedule import batch_rows, step_lr
from strategies import fedavg
from tasks.data import SplitData
from tasks.registry import TASKS

app = ClientApp()

STATE_CLIENT = "mpsl.client"  # ArrayRecord: trainable weights + optimizer state
STATE_PROGRESS = "mpsl.progress"  # ConfigRecord: revision (+ the pending step while one is open)
PENDING_KEYS = ("epoch", "step", "client-batch-size")
STATE_FEDAVG_OPTIMIZER = "fedavg.optimizer"  # ArrayRecord: this client's Adam state across rounds

_live_clients: dict[tuple[int, int], tuple[int, ClientSide]] = {}


def _partition(context: Context, config: RunConfig) -> SplitData:
    node_config = context.node_config
    for key in ("partition-id", "num-partitions"):
        if key not in node_config:
            raise ValueError(
                f"node config has no {key!r}: start the SuperNode with "
                "--node-config 'partition-id=<i> num-partitions=<n>'"
            )
    return client_partition(config, int(node_config["partition-id"]), int(node_config["num-partitions"]))


def _progress(context: Context) -> dict:
    if STATE_PROGRESS in context.state:
        return dict(context.state[STATE_PROGRESS])
    return {"revision": 0}


def _load_client(context: Context, config: RunConfig) -> ClientSide:
    """This node's `ClientSide`, from the per-process cache when it is current."""
    revision = _progress(context)["revision"]
    key = (context.run_id, context.node_id)
    cached = _live_clients.get(key)
    if cached is not None and cached[0] == revision:
        return cached[1]
    client = new_client_side(config, pretrained=not revision)  # saved weights replace the initial ones
    if revision:
        client.load_state_arrays(wire.record_to_arrays(context.state[STATE_CLIENT]))
    _live_clients[key] = (revision, client)
    return client


def _save_client(context: Context, client: ClientSide, progress: dict) -> dict:
    """Persist weights and optimizer state; returns the progress with its new revision."""
    progress = {**progress, "revision": progress["revision"] + 1}
    context.state[STATE_CLIENT] = wire.tensors_to_record(client.state_arrays())
    context.state[STATE_PROGRESS] = ConfigRecord(progress)
    _live_clients[(context.run_id, context.node_id)] = (progress["revision"], client)
    return progress


def _batch(data: SplitData, config: RunConfig, context: Context, step: dict) -> SplitData:
    """The samples of `step` (epoch, step, client-batch-size), re-derived from the seed."""
    partition_id = int(context.node_config["partition-id"])
    rows = batch_rows(len(data), step["client-batch-size"], config.seed, partition_id, step["epoch"], step["step"])
    return data.select(rows)


def _finish_pending_step(msg: Message, context: Context, config: RunConfig, client: ClientSide, data: SplitData) -> dict:
    """Apply the pending step's cut-layer gradient when the server sent one.

    Without one (the server dropped this client from that step) the step is simply
    abandoned. Returns the progress with no pending step.
    """
    progress = _progress(context)
    pending = {key: progress.pop(key) for key in PENDING_KEYS if key in progress}
    if wire.CUT_GRAD not in msg.content:
        return progress
    sent_for = dict(msg.content[wire.CUT_GRAD_STEP])
    if not pending or (sent_for["epoch"], sent_for["step"]) != (pending["epoch"], pending["step"]):
        raise ValueError(f"cut-layer gradient for step {sent_for} does not match this client's pending step {pending}")
    cut_grad = wire.record_to_tensors(msg.content[wire.CUT_GRAD])
    lr = step_lr(config.learning_rate, config.lr_step_size, config.lr_gamma, pending["epoch"])
    client.apply_cut_grad(_batch(data, config, context, pending).inputs, cut_grad, lr)
    return _save_client(context, client, progress)


def _resume(msg: Message, context: Context) -> tuple[RunConfig, SplitData, ClientSide, dict]:
    """Config, partition and client of this node, with its pending step finished."""
    config = parse_run_config(context.run_config)
    data = _partition(context, config)
    client = _load_client(context, config)
    return config, data, client, _finish_pending_step(msg, context, config, client, data)


def _reply(msg: Message, arrays_key: str, arrays: dict, started: float, metrics: dict | None = None) -> Message:
    """A reply holding one ArrayRecord and the client's metrics, timed from `started`."""
    metrics = {**(metrics or {}), "compute-s": time.perf_counter() - started}
    content = RecordDict({arrays_key: wire.tensors_to_record(arrays), wire.CLIENT_METRICS: wire.metrics_record(**metrics)})
    return Message(content, reply_to=msg)


@app.query("partition_info")
def partition_info(msg: Message, context: Context) -> Message:
    config = parse_run_config(context.run_config)
    data = _partition(context, config)
    info = wire.metrics_record(
        **{
            "partition-id": int(context.node_config["partition-id"]),
            "num-partitions": int(context.node_config["num-partitions"]),
            "num-examples": len(data),
        }
    )
    return Message(RecordDict({wire.INFO: info}), reply_to=msg)


@app.query("ping")
def ping(msg: Message, context: Context) -> Message:
    return Message(RecordDict(), reply_to=msg)


@app.train("forward")
def forward(msg: Message, context: Context) -> Message:
    """Apply the previous step's cut-layer gradient (if any), then send this step's activations."""
    started = time.perf_counter()
    config, data, client, progress = _resume(msg, context)
    step = {key: msg.content[wire.STEP][key] for key in PENDING_KEYS}
    smashed = client.smashed(_batch(data, config, context, step).inputs)
    context.state[STATE_PROGRESS] = ConfigRecord({**progress, **step})
    return _reply(msg, wire.SMASHED, smashed, started)


@app.train("loss_grad")
def loss_grad(msg: Message, context: Context) -> Message:
    """Loss gradient w.r.t. this client's logits, computed with labels that stay here."""
    started = time.perf_counter()
    config = parse_run_config(context.run_config)
    data = _partition(context, config)
    progress = _progress(context)
    step = msg.content[wire.STEP]
    if (step["epoch"], step["step"]) != (progress.get("epoch"), progress.get("step")):
        raise ValueError(f"logits for step {dict(step)} but this client's pending step is {progress}")
    labels = _batch(data, config, context, progress).labels
    logits = wire.record_to_tensors(msg.content[wire.LOGITS])["logits"]
    if logits.shape[0] != len(labels):
        raise ValueError(f"got logits for {logits.shape[0]} samples, the pending batch has {len(labels)}")
    grad, loss_sum, correct = loss_gradient(TASKS[config.dataset].objective, logits, labels, int(step["total-batch"]))
    metrics = {"loss-sum": loss_sum, "correct": correct, "num-examples": len(labels)}
    return _reply(msg, wire.LOGIT_GRAD, {"logit_grad": grad}, started, metrics)


@app.train("end_epoch")
def end_epoch(msg: Message, context: Context) -> Message:
    """Finish the last step, then share trainable weights for evaluation (the client keeps its own)."""
    started = time.perf_counter()
    _, data, client, progress = _resume(msg, context)
    context.state[STATE_PROGRESS] = ConfigRecord(progress)
    return _reply(msg, wire.CLIENT_MODEL, trainable_arrays(client.model), started, {"num-examples": len(data)})



@app.train()
def fedavg_local_epoch(msg: Message, context: Context) -> Message:
    """FedAvg baseline: one local epoch on the full trainable set, Adam state kept across rounds."""
    started = time.perf_counter()
    config = parse_run_config(context.run_config)
    data = _partition(context, config)
    model = new_full_model(config)
    load_trainable(model, wire.record_to_arrays(msg.content[fedavg.ARRAYS]))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    if STATE_FEDAVG_OPTIMIZER in context.state:
        load_optimizer_arrays(optimizer, wire.record_to_arrays(context.state[STATE_FEDAVG_OPTIMIZER]))
    server_round = int(msg.content[fedavg.CONFIG]["server-round"])
    lr = step_lr(config.learning_rate, config.lr_step_size, config.lr_gamma, server_round - 1)
    batch_size = int(msg.content[fedavg.CONFIG]["client-batch-size"])
    partition_id = int(context.node_config["partition-id"])
    stats = train_local_epoch(model, optimizer, data, batch_size, lr, config.seed, partition_id, server_round - 1)
    context.state[STATE_FEDAVG_OPTIMIZER] = wire.tensors_to_record(optimizer_arrays(optimizer))
    metrics = {key: stats[key] for key in ("num-examples", "loss-sum", "correct", "steps")}
    metrics["compute-s"] = time.perf_counter() - started
    content = RecordDict(
        {fedavg.ARRAYS: wire.tensors_to_record(trainable_arrays(model)), fedavg.METRICS: wire.metrics_record(**metrics)}
    )
    return Message(content, reply_to=msg)
