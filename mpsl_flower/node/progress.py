"""An MPSL node's progress between messages: which message it handled last, and its client's current state.

Flower hands each message a node's `context.state`; here it holds one small progress record
(`wire.STATE_PROGRESS`): the revision of the client's state in the node's store
(`node.state_store`), the store key, the run key, the epochs the run had finished, the
position (epoch, step, phase) of the last message handled and, between a step's forward and
its cut gradient, the pending step. The weights and Adam state themselves stay in the store, so
messages stay light wherever the ClientApp runs (a Ray actor in simulation, a fresh process per
message in deployment). A per-process cache skips the reload when this process handled the
node's previous message.

The rules, in the order a message meets them:
1. `claim`: the message takes its position in the node's store, refused when the node already
   handled a later one (a late reply's out-of-date state must not be written back);
2. `load_client`: the state the progress names, else (a resumed run, a device restarted mid-run)
   the node's latest snapshot after the run's finished epochs, else the initial model;
3. `finish_pending_step`: the cut gradient of the pending step is applied when the server sent it;
4. `save_client`: a new revision, after `check_current` confirmed no later message ran meanwhile.
"""

from __future__ import annotations

from logging import WARNING

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.common import log

from mpsl_flower import wire
from mpsl_flower.config import RunConfig
from mpsl_flower.node.state_store import (
    check_position,
    claim_position,
    latest_snapshot,
    load_state,
    new_store_key,
    save_state,
)
from mpsl_flower.split.client_side import ClientSide, new_client_side
from mpsl_flower.split.optimizer import epoch_lr
from mpsl_flower.split.schedule import step_batch
from tasks.data import SplitData

PENDING_KEYS = (wire.EPOCH, wire.STEP_INDEX, wire.CLIENT_BATCH_SIZE, wire.BATCH_INDEX)
PHASES = {wire.FORWARD: 0, wire.LOSS_GRAD: 1, wire.END_EPOCH: 2}  # a step's messages, in order
END_OF_EPOCH = 1 << 30  # the step index of end_epoch: after every step of its epoch

live_clients: dict[tuple[int, int], tuple[int, ClientSide]] = {}  # (run, node) -> (revision, client)


def partition_id(context: Context) -> int:
    return int(context.node_config[wire.PARTITION_ID])


def progress(context: Context) -> dict:
    """The node's progress record (revision 0 before its first step)."""
    if wire.STATE_PROGRESS in context.state:
        return dict(context.state[wire.STATE_PROGRESS])
    return {wire.STATE_REVISION: 0}


def set_progress(context: Context, record: dict) -> None:
    context.state[wire.STATE_PROGRESS] = ConfigRecord(record)


def claim(msg: Message, context: Context, config: RunConfig) -> None:
    """Start handling `msg`: keep the run key and resume point it carries (forward and end_epoch messages),
    and claim its position in the node's store, refusing it if a later message was handled already
    (`state_store.claim_position`)."""
    step = msg.content[wire.STEP]
    record = progress(context)
    if wire.RUN_KEY in step:
        record[wire.STATE_RUN_KEY] = str(step[wire.RUN_KEY])
        record[wire.EPOCHS_DONE] = int(step[wire.EPOCHS_DONE])
        record.setdefault(wire.STATE_STORE_KEY, new_store_key(record[wire.STATE_RUN_KEY]))
    if wire.STATE_STORE_KEY not in record:
        raise ValueError(f"{msg.metadata.message_type} before any train.forward: this node has no step to answer for")
    index = int(step[wire.STEP_INDEX]) if wire.STEP_INDEX in step else END_OF_EPOCH
    position = (int(step[wire.EPOCH]), index, PHASES[msg.metadata.message_type])
    claim_position(config.client_state_dir, record[wire.STATE_STORE_KEY], position)
    record[wire.STATE_POSITION] = list(position)
    set_progress(context, record)


def check_current(context: Context, config: RunConfig) -> None:
    """Raise `StaleMessage` if, while this message was handled, the node handled a later one: before writing
    to the store, and before a handler returns (Flower keeps the `context.state` of handlers that return)."""
    record = progress(context)
    check_position(config.client_state_dir, record[wire.STATE_STORE_KEY], tuple(record[wire.STATE_POSITION]))


def load_client(context: Context, config: RunConfig) -> ClientSide:
    """This node's `ClientSide`, from the per-process cache when it is current.

    With no revision of its own yet, the client starts from its latest snapshot of this run when the
    run has finished epochs (a resumed run; a device restarted mid-run, which lost its `context.state`),
    or else from the initial model.
    """
    record = progress(context)
    revision = record[wire.STATE_REVISION]
    key = (context.run_id, context.node_id)
    cached = live_clients.get(key)
    if cached is not None and cached[0] == revision:
        return cached[1]
    snapshot = None
    if not revision and record.get(wire.EPOCHS_DONE, 0):
        snapshot = _latest_snapshot(context, config, record)
    client = new_client_side(config, pretrained=not (revision or snapshot))  # saved weights replace these
    if revision:
        client.load_state_arrays(stored_client_state(context, config))
    elif snapshot:
        client.load_state_arrays(snapshot)
    live_clients[key] = (revision, client)
    return client


def _latest_snapshot(context: Context, config: RunConfig, record: dict) -> dict[str, np.ndarray] | None:
    """The node's snapshot after the run's finished epochs, or its newest older one (a device that was away at
    the end of an epoch), or None (it never finished one: it starts from the initial model)."""
    run_key, partition, epochs_done = record[wire.STATE_RUN_KEY], partition_id(context), record[wire.EPOCHS_DONE]
    found = latest_snapshot(config.client_state_dir, run_key, partition, epochs_done)
    if found is None:
        log(WARNING, "partition %d has no snapshot of this run: it starts from the initial model", partition)
        return None
    if found[0] != epochs_done:
        log(WARNING, "partition %d rejoins from its snapshot after epoch %d of %d", partition, found[0], epochs_done)
    return found[1]


def stored_client_state(context: Context, config: RunConfig) -> dict[str, np.ndarray]:
    """The weights and optimizer state the node's `context.state` names (empty before its first step)."""
    record = progress(context)
    if not record[wire.STATE_REVISION]:
        return {}
    return load_state(config.client_state_dir, record[wire.STATE_STORE_KEY], record[wire.STATE_REVISION])


def save_client(context: Context, config: RunConfig, client: ClientSide, record: dict) -> dict:
    """Persist weights and optimizer state in the node's store; returns the progress with its new revision."""
    check_current(context, config)
    record = {**record, wire.STATE_REVISION: record[wire.STATE_REVISION] + 1}
    save_state(
        config.client_state_dir, record[wire.STATE_STORE_KEY], record[wire.STATE_REVISION], client.state_arrays()
    )
    set_progress(context, record)
    live_clients[(context.run_id, context.node_id)] = (record[wire.STATE_REVISION], client)
    return record


def step_samples(data: SplitData, config: RunConfig, context: Context, step: dict) -> SplitData:
    """The samples of `step` (epoch, step, client-batch-size, batch index), re-derived from the seed."""
    return step_batch(
        data,
        step[wire.CLIENT_BATCH_SIZE],
        config.seed,
        partition_id(context),
        step[wire.EPOCH],
        step[wire.STEP_INDEX],
        step[wire.BATCH_INDEX],
    )


def finish_pending_step(msg: Message, context: Context, config: RunConfig, client: ClientSide, data: SplitData) -> dict:
    """Apply the pending step's cut-layer gradient when the server sent one.

    Without one (the server dropped this client from that step) the step is simply
    abandoned. Returns the progress with no pending step.
    """
    record = progress(context)
    pending = {key: record.pop(key) for key in PENDING_KEYS if key in record}
    if wire.CUT_GRAD not in msg.content:
        return record
    sent_for = dict(msg.content[wire.CUT_GRAD_STEP])
    if not pending or (sent_for[wire.EPOCH], sent_for[wire.STEP_INDEX]) != (
        pending[wire.EPOCH],
        pending[wire.STEP_INDEX],
    ):
        raise ValueError(f"cut-layer gradient for step {sent_for} does not match this client's pending step {pending}")
    cut_grad = wire.read_activations(msg.content[wire.CUT_GRAD], config.activation_precision)
    client.apply_cut_grad(
        step_samples(data, config, context, pending).inputs, cut_grad, epoch_lr(config, pending[wire.EPOCH])
    )
    return save_client(context, config, client, record)
