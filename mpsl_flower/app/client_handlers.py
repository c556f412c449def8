"""What the ClientApp does for each message type, each a thin shell around task code.

`mpsl_flower.client_app` registers these with Flower and imports this module on first use.

MPSL handlers (`train.forward`, `train.loss_grad`, `train.end_epoch`) drive `ClientSide`;
the plain `train` handler runs the FedAvg baseline's local epoch.

An MPSL client's weights and Adam state live in the node's own store (`client_store`), and
`context.state` names the revision, so they survive between messages wherever the ClientApp
runs (a Ray actor in simulation, a fresh process per message in deployment) without riding
along with every message. A per-process cache skips the reload when this process handled the
previous message of the same node. At the end of each epoch the node snapshots its state, and
a node that starts a resumed run (no state of its own yet) loads the snapshot the server names.
"""

from __future__ import annotations

import sys
import time
from logging import WARNING

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import log

from mpsl_flower import wire
from mpsl_flower.client_store import (
    check_position,
    claim_position,
    latest_snapshot,
    load_state,
    new_store_key,
    save_snapshot,
    save_state,
)
from mpsl_flower.config import RunConfig, parse_run_config
from mpsl_flower.device_data import NODE_DATA_DIR, device_partition
from mpsl_flower.local_training import train_local_epoch
from mpsl_flower.logs import show_project_logs
from mpsl_flower.models.weights import (
    load_optimizer_arrays,
    load_trainable,
    optimizer_arrays,
    trainable_arrays,
)
from mpsl_flower.split.build import new_client_side, new_full_model, task_objective
from mpsl_flower.split.client_side import ClientSide, loss_gradient
from mpsl_flower.split.optimizer import epoch_lr, new_optimizer
from mpsl_flower.split.schedule import step_batch
from tasks.data import SplitData
from tasks.preprocess import user_path

show_project_logs()

PENDING_KEYS = (wire.EPOCH, wire.STEP_INDEX, wire.CLIENT_BATCH_SIZE)
PHASES = {wire.FORWARD: 0, wire.LOSS_GRAD: 1, wire.END_EPOCH: 2}  # a step's messages, in order
END_OF_EPOCH = 1 << 30  # the step index of end_epoch: after every step of its epoch

_live_clients: dict[tuple[int, int], tuple[int, ClientSide]] = {}


def _partition(context: Context, config: RunConfig) -> SplitData:
    """This node's training samples: taken from the machine-wide data in Flower's simulation, whose virtual
    clients share a process; on a SuperNode, its own partition only (`device_data`)."""
    node_config = context.node_config
    for key in (wire.PARTITION_ID, wire.NUM_PARTITIONS):
        if key not in node_config:
            raise ValueError(
                f"node config has no {key!r}: start the SuperNode with "
                f"--node-config '{wire.PARTITION_ID}=<i> {wire.NUM_PARTITIONS}=<n>'"
            )
    partition, num_partitions = _partition_id(context), int(node_config[wire.NUM_PARTITIONS])
    if _simulated():
        from mpsl_flower.client_data import client_partition  # the partitioner and decoders, once per Ray worker

        return client_partition(config, partition, num_partitions)
    own_data_dir = node_config.get(NODE_DATA_DIR)
    return device_partition(config, partition, num_partitions, user_path(own_data_dir) if own_data_dir else None)


def _simulated() -> bool:
    """Whether Flower's simulation runs this client: its virtual clients live in Ray actors (a SuperNode's
    ClientApp process never imports Ray)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _partition_id(context: Context) -> int:
    return int(context.node_config[wire.PARTITION_ID])


def _progress(context: Context) -> dict:
    if wire.STATE_PROGRESS in context.state:
        return dict(context.state[wire.STATE_PROGRESS])
    return {wire.STATE_REVISION: 0}


def _claim(msg: Message, context: Context, config: RunConfig) -> None:
    """Start handling `msg`: keep the run key and resume point it carries (forward and end_epoch messages),
    and claim its position in the node's store, refusing it if a later message was handled already
    (`client_store.claim_position`)."""
    step = msg.content[wire.STEP]
    progress = _progress(context)
    if wire.RUN_KEY in step:
        progress[wire.STATE_RUN_KEY] = str(step[wire.RUN_KEY])
        progress[wire.EPOCHS_DONE] = int(step[wire.EPOCHS_DONE])
        progress.setdefault(wire.STATE_STORE_KEY, new_store_key(progress[wire.STATE_RUN_KEY]))
    if wire.STATE_STORE_KEY not in progress:
        raise ValueError(f"{msg.metadata.message_type} before any train.forward: this node has no step to answer for")
    index = int(step[wire.STEP_INDEX]) if wire.STEP_INDEX in step else END_OF_EPOCH
    position = (int(step[wire.EPOCH]), index, PHASES[msg.metadata.message_type])
    claim_position(config.client_state_dir, progress[wire.STATE_STORE_KEY], position)
    progress[wire.STATE_POSITION] = list(position)
    context.state[wire.STATE_PROGRESS] = ConfigRecord(progress)


def _check_current(context: Context, config: RunConfig) -> None:
    """Raise `StaleMessage` if, while this message was handled, the node handled a later one: before writing
    to the store, and before a handler returns (Flower keeps the `context.state` of handlers that return)."""
    progress = _progress(context)
    check_position(config.client_state_dir, progress[wire.STATE_STORE_KEY], tuple(progress[wire.STATE_POSITION]))


def _load_client(context: Context, config: RunConfig) -> ClientSide:
    """This node's `ClientSide`, from the per-process cache when it is current.

    With no revision of its own yet, the client starts from its latest snapshot of this run when the
    run has finished epochs (a resumed run; a device restarted mid-run, which lost its `context.state`),
    or else from the initial model.
    """
    progress = _progress(context)
    revision = progress[wire.STATE_REVISION]
    key = (context.run_id, context.node_id)
    cached = _live_clients.get(key)
    if cached is not None and cached[0] == revision:
        return cached[1]
    snapshot = None
    if not revision and progress.get(wire.EPOCHS_DONE, 0):
        snapshot = _latest_snapshot(context, config, progress)
    client = new_client_side(config, pretrained=not (revision or snapshot))  # saved weights replace these
    if revision:
        client.load_state_arrays(stored_client_state(context, config))
    elif snapshot:
        client.load_state_arrays(snapshot)
    _live_clients[key] = (revision, client)
    return client


def _latest_snapshot(context: Context, config: RunConfig, progress: dict) -> dict[str, np.ndarray] | None:
    """The node's snapshot after the run's finished epochs, or its newest older one (a device that was away at
    the end of an epoch), or None (it never finished one: it starts from the initial model)."""
    run_key, partition, epochs_done = progress[wire.STATE_RUN_KEY], _partition_id(context), progress[wire.EPOCHS_DONE]
    found = latest_snapshot(config.client_state_dir, run_key, partition, epochs_done)
    if found is None:
        log(WARNING, "partition %d has no snapshot of this run: it starts from the initial model", partition)
        return None
    if found[0] != epochs_done:
        log(WARNING, "partition %d rejoins from its snapshot after epoch %d of %d", partition, found[0], epochs_done)
    return found[1]


def stored_client_state(context: Context, config: RunConfig) -> dict[str, np.ndarray]:
    """The weights and optimizer state the node's `context.state` names (empty before its first step)."""
    progress = _progress(context)
    if not progress[wire.STATE_REVISION]:
        return {}
    return load_state(config.client_state_dir, progress[wire.STATE_STORE_KEY], progress[wire.STATE_REVISION])


def _save_client(context: Context, config: RunConfig, client: ClientSide, progress: dict) -> dict:
    """Persist weights and optimizer state in the node's store; returns the progress with its new revision."""
    _check_current(context, config)
    progress = {**progress, wire.STATE_REVISION: progress[wire.STATE_REVISION] + 1}
    save_state(
        config.client_state_dir, progress[wire.STATE_STORE_KEY], progress[wire.STATE_REVISION], client.state_arrays()
    )
    context.state[wire.STATE_PROGRESS] = ConfigRecord(progress)
    _live_clients[(context.run_id, context.node_id)] = (progress[wire.STATE_REVISION], client)
    return progress


def _batch(data: SplitData, config: RunConfig, context: Context, step: dict) -> SplitData:
    """The samples of `step` (epoch, step, client-batch-size), re-derived from the seed."""
    return step_batch(
        data,
        step[wire.CLIENT_BATCH_SIZE],
        config.seed,
        _partition_id(context),
        step[wire.EPOCH],
        step[wire.STEP_INDEX],
    )


def _finish_pending_step(
    msg: Message, context: Context, config: RunConfig, client: ClientSide, data: SplitData
) -> dict:
    """Apply the pending step's cut-layer gradient when the server sent one.

    Without one (the server dropped this client from that step) the step is simply
    abandoned. Returns the progress with no pending step.
    """
    progress = _progress(context)
    pending = {key: progress.pop(key) for key in PENDING_KEYS if key in progress}
    if wire.CUT_GRAD not in msg.content:
        return progress
    sent_for = dict(msg.content[wire.CUT_GRAD_STEP])
    if not pending or (sent_for[wire.EPOCH], sent_for[wire.STEP_INDEX]) != (
        pending[wire.EPOCH],
        pending[wire.STEP_INDEX],
    ):
        raise ValueError(f"cut-layer gradient for step {sent_for} does not match this client's pending step {pending}")
    cut_grad = wire.read_activations(msg.content[wire.CUT_GRAD], config.activation_precision)
    client.apply_cut_grad(
        _batch(data, config, context, pending).inputs, cut_grad, epoch_lr(config, pending[wire.EPOCH])
    )
    return _save_client(context, config, client, progress)


def _resume(msg: Message, context: Context) -> tuple[RunConfig, SplitData, ClientSide, dict]:
    """Config, partition and client of this node, with its pending step finished."""
    config = parse_run_config(context.run_config)
    _claim(msg, context, config)
    data = _partition(context, config)
    client = _load_client(context, config)
    return config, data, client, _finish_pending_step(msg, context, config, client, data)


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
    data = _partition(context, config)
    info = MetricRecord(
        {
            wire.PARTITION_ID: _partition_id(context),
            wire.NUM_PARTITIONS: int(context.node_config[wire.NUM_PARTITIONS]),
            wire.NUM_EXAMPLES: len(data),
        }
    )
    return Message(RecordDict({wire.INFO: info}), reply_to=msg)


def forward(msg: Message, context: Context) -> Message:
    """Apply the previous step's cut-layer gradient (if any), then send this step's activations."""
    started = time.perf_counter()
    config, data, client, progress = _resume(msg, context)
    step = {key: msg.content[wire.STEP][key] for key in PENDING_KEYS}
    smashed = client.smashed(_batch(data, config, context, step).inputs)
    context.state[wire.STATE_PROGRESS] = ConfigRecord({**progress, **step})
    _check_current(context, config)
    return _reply(msg, wire.SMASHED, smashed, started, precision=config.activation_precision)


def loss_grad(msg: Message, context: Context) -> Message:
    """Loss gradient w.r.t. the server's output for this client (logits, or features its own head scores),
    computed with labels that stay here."""
    started = time.perf_counter()
    config = parse_run_config(context.run_config)
    _claim(msg, context, config)
    data = _partition(context, config)
    progress = _progress(context)
    step = msg.content[wire.STEP]
    if (step[wire.EPOCH], step[wire.STEP_INDEX]) != (progress.get(wire.EPOCH), progress.get(wire.STEP_INDEX)):
        raise ValueError(f"logits for step {dict(step)} but this client's pending step is {progress}")
    labels = _batch(data, config, context, progress).labels
    outputs = wire.read_activations(msg.content[wire.LOGITS], config.activation_precision)[wire.LOGITS]
    if outputs.shape[0] != len(labels):
        raise ValueError(f"got outputs for {outputs.shape[0]} samples, the pending batch has {len(labels)}")
    objective, total = task_objective(config), int(step[wire.TOTAL_BATCH])
    if config.label_privacy == "u-shaped":  # this client's own head turns the server's features into logits
        client = _load_client(context, config)
        lr = epoch_lr(config, progress[wire.EPOCH])
        grad, loss_sum, correct = client.head_gradient(objective, outputs, labels, total, lr)
        _save_client(context, config, client, progress)
    else:
        grad, loss_sum, correct = loss_gradient(objective, outputs, labels, total)
    metrics = {wire.LOSS_SUM: loss_sum, wire.CORRECT: correct, wire.NUM_EXAMPLES: len(labels)}
    _check_current(context, config)
    return _reply(msg, wire.LOGIT_GRAD, {wire.LOGIT_GRAD: grad}, started, metrics, config.activation_precision)


def end_epoch(msg: Message, context: Context) -> Message:
    """Finish the last step, snapshot the state for a resumed run, then share trainable weights for evaluation
    (the client keeps its own)."""
    started = time.perf_counter()
    config, data, client, progress = _resume(msg, context)
    context.state[wire.STATE_PROGRESS] = ConfigRecord(progress)
    epochs_done = int(msg.content[wire.STEP][wire.EPOCH]) + 1
    _check_current(context, config)  # a late end_epoch must not leave a snapshot the node never had
    save_snapshot(
        config.client_state_dir,
        progress[wire.STATE_RUN_KEY],
        _partition_id(context),
        epochs_done,
        client.state_arrays(),
    )
    return _reply(msg, wire.CLIENT_MODEL, trainable_arrays(client.model), started, {wire.NUM_EXAMPLES: len(data)})


def fedavg_local_epoch(msg: Message, context: Context) -> Message:
    """FedAvg baseline: one local epoch on the full trainable set, Adam state kept across rounds."""
    started = time.perf_counter()
    config = parse_run_config(context.run_config)
    data = _partition(context, config)
    model = new_full_model(config)
    load_trainable(model, wire.record_to_arrays(msg.content[wire.ARRAYS]))
    optimizer = new_optimizer(model, config.learning_rate)
    if wire.STATE_FEDAVG_OPTIMIZER in context.state:
        load_optimizer_arrays(optimizer, wire.record_to_arrays(context.state[wire.STATE_FEDAVG_OPTIMIZER]))
    round_config = msg.content[wire.CONFIG]
    epoch = int(round_config[wire.SERVER_ROUND]) - 1
    batch_size = int(round_config[wire.CLIENT_BATCH_SIZE])
    stats = train_local_epoch(
        model, optimizer, data, batch_size, epoch_lr(config, epoch), config.seed, _partition_id(context), epoch
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
