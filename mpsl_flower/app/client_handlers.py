"""What the ClientApp does for each message type, each a thin shell around the node's progress and the split core.

`mpsl_flower.app.client_app` registers these with Flower and imports this module on first use.

MPSL handlers (`train.forward`, `train.loss_grad`, `train.end_epoch`) drive the node's
`ClientSide` through its progress record (`node.progress`: what the node keeps between
messages, and the rules for stale and retried ones); the plain `train` handler runs the FedAvg
baseline's local epoch. At the end of each epoch the node snapshots its state, and a node that
starts a resumed run (no state of its own yet) loads the snapshot the server names. A message
that runs where the node's store is not (`state_store.check_store_here`) is refused before it
touches any state.

Every handler computes on the client's device (`models.factory.client_device`: a GPU when the
process holds one) and replies with CPU arrays.
"""

from __future__ import annotations

import time

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from mpsl_flower import wire
from mpsl_flower.config import RunConfig, parse_run_config
from mpsl_flower.logs import show_project_logs
from mpsl_flower.models.factory import DeviceUnavailable, client_device, new_full_model, task_objective
from mpsl_flower.models.trainable import load_optimizer_arrays, load_trainable, optimizer_arrays, trainable_arrays
from mpsl_flower.node import progress as node
from mpsl_flower.node.state_store import check_store_here, save_snapshot
from mpsl_flower.node.training_data import node_partition
from mpsl_flower.split.client_side import ClientSide, loss_gradient
from mpsl_flower.split.local_epoch import train_local_epoch
from mpsl_flower.split.optimizer import epoch_lr, new_optimizer
from tasks.data import SplitData

show_project_logs()


def _claim(msg: Message, context: Context, config: RunConfig) -> None:
    """`node.claim`, once this process's `client-state-dir` is known to hold the node's store (its first
    message creates one wherever it runs)."""
    record = node.progress(context)
    if wire.STATE_POSITION in record:
        check_store_here(config.client_state_dir, record[wire.STATE_STORE_KEY], tuple(record[wire.STATE_POSITION]))
    node.claim(msg, context, config)


def _resume(msg: Message, context: Context) -> tuple[RunConfig, SplitData, ClientSide, dict]:
    """Config, partition and client of this node, with its pending step finished."""
    config = parse_run_config(context.run_config)
    _claim(msg, context, config)
    data = node_partition(context.node_config, config)
    client = node.load_client(context, config)
    return config, data, client, node.finish_pending_step(msg, context, config, client, data)


def _reply(
    msg: Message,
    arrays_key: str,
    arrays: dict,
    started: float,
    metrics: dict | None = None,
    precision: str | None = None,
) -> Message:
    """A reply holding one ArrayRecord and the client's metrics, timed from `started`; activations and
    gradients are packed at `precision` (`activation-precision`), weights (None) as float32."""
    metrics = {**(metrics or {}), wire.COMPUTE_S: time.perf_counter() - started}
    record = wire.tensors_to_record(arrays) if precision is None else wire.encode_activations(arrays, precision)
    content = RecordDict({arrays_key: record, wire.CLIENT_METRICS: MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def partition_info(msg: Message, context: Context) -> Message:
    config = parse_run_config(context.run_config)
    data = node_partition(context.node_config, config)
    info = MetricRecord(
        {
            wire.PARTITION_ID: node.partition_id(context),
            wire.NUM_PARTITIONS: int(context.node_config[wire.NUM_PARTITIONS]),
            wire.NUM_EXAMPLES: len(data),
        }
    )
    try:
        device = {wire.CLIENT_DEVICE: client_device(config).type}
    except DeviceUnavailable as error:  # the server stops the run before training, with this reason
        device = {wire.DEVICE_PROBLEM: str(error)}
    return Message(RecordDict({wire.INFO: info, wire.NODE: ConfigRecord(device)}), reply_to=msg)


def forward(msg: Message, context: Context) -> Message:
    """Apply the previous step's cut-layer gradient (if any), then send this step's activations."""
    started = time.perf_counter()
    config, data, client, progress = _resume(msg, context)
    step = {key: msg.content[wire.STEP][key] for key in node.PENDING_KEYS}
    smashed = client.smashed(node.step_samples(data, config, context, step).inputs)
    node.set_progress(context, {**progress, **step})
    node.check_current(context, config)
    return _reply(msg, wire.SMASHED, smashed, started, precision=config.activation_precision)


def loss_grad(msg: Message, context: Context) -> Message:
    """Loss gradient w.r.t. the server's output for this client (logits, or features its own head scores),
    computed with labels that stay here."""
    started = time.perf_counter()
    config = parse_run_config(context.run_config)
    _claim(msg, context, config)
    data = node_partition(context.node_config, config)
    progress = node.progress(context)
    step = msg.content[wire.STEP]
    if (step[wire.EPOCH], step[wire.STEP_INDEX]) != (progress.get(wire.EPOCH), progress.get(wire.STEP_INDEX)):
        raise ValueError(f"logits for step {dict(step)} but this client's pending step is {progress}")
    labels = node.step_samples(data, config, context, progress).labels
    outputs = wire.read_activations(msg.content[wire.LOGITS], config.activation_precision)[wire.LOGITS]
    if outputs.shape[0] != len(labels):
        raise ValueError(f"got outputs for {outputs.shape[0]} samples, the pending batch has {len(labels)}")
    objective, total = task_objective(config), int(step[wire.TOTAL_BATCH])
    if config.head_on_client:  # this client's own head turns the server's features into logits
        client = node.load_client(context, config)
        lr = epoch_lr(config, progress[wire.EPOCH])
        grad, loss_sum, correct = client.head_gradient(objective, outputs, labels, total, lr)
        node.save_client(context, config, client, progress)
    else:
        grad, loss_sum, correct = loss_gradient(objective, outputs, labels, total)
    metrics = {wire.LOSS_SUM: loss_sum, wire.CORRECT: correct, wire.NUM_EXAMPLES: len(labels)}
    node.check_current(context, config)
    return _reply(msg, wire.LOGIT_GRAD, {wire.LOGIT_GRAD: grad}, started, metrics, config.activation_precision)


def end_epoch(msg: Message, context: Context) -> Message:
    """Finish the last step, snapshot the state for a resumed run, then share trainable weights for evaluation
    (the client keeps its own)."""
    started = time.perf_counter()
    config, data, client, progress = _resume(msg, context)
    node.set_progress(context, progress)
    epochs_done = int(msg.content[wire.STEP][wire.EPOCH]) + 1
    node.check_current(context, config)  # a late end_epoch must not leave a snapshot the node never had
    save_snapshot(
        config.client_state_dir,
        progress[wire.STATE_RUN_KEY],
        node.partition_id(context),
        epochs_done,
        client.state_arrays(),
    )
    return _reply(msg, wire.CLIENT_MODEL, trainable_arrays(client.model), started, {wire.NUM_EXAMPLES: len(data)})


def fedavg_local_epoch(msg: Message, context: Context) -> Message:
    """FedAvg baseline: one local epoch on the full trainable set, Adam state kept across rounds."""
    started = time.perf_counter()
    config = parse_run_config(context.run_config)
    data = node_partition(context.node_config, config)
    model = new_full_model(config).to(client_device(config))
    load_trainable(model, wire.record_to_arrays(msg.content[wire.ARRAYS]))
    optimizer = new_optimizer(model, config.learning_rate)
    if wire.STATE_FEDAVG_OPTIMIZER in context.state:
        load_optimizer_arrays(optimizer, wire.record_to_arrays(context.state[wire.STATE_FEDAVG_OPTIMIZER]))
    round_config = msg.content[wire.CONFIG]
    epoch = int(round_config[wire.SERVER_ROUND]) - 1
    batch_size = int(round_config[wire.CLIENT_BATCH_SIZE])
    stats = train_local_epoch(
        model, optimizer, data, batch_size, epoch_lr(config, epoch), config.seed, node.partition_id(context), epoch
    )
    context.state[wire.STATE_FEDAVG_OPTIMIZER] = wire.tensors_to_record(optimizer_arrays(optimizer))
    metrics = {
        wire.NUM_EXAMPLES: stats.num_examples,
        wire.LOSS_SUM: stats.loss_sum,
        wire.CORRECT: stats.correct,
        wire.LOCAL_STEPS: stats.steps,
        wire.COMPUTE_S: time.perf_counter() - started,
    }
    content = RecordDict(
        {wire.ARRAYS: wire.tensors_to_record(trainable_arrays(model)), wire.METRICS: MetricRecord(metrics)}
    )
    return Message(content, reply_to=msg)
