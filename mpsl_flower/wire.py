"""Everything that crosses the wire between the ServerApp and its clients, for every method.

The ClientApp and every strategy import these names; no other module spells a message type or
a record key. Weights travel as float32 numpy arrays in `ArrayRecord`s; activations, logits and
their gradients at `activation-precision` (float32, float16, bfloat16 as its 16 raw bits, or
int8 with a float32 scale per row: `split.precision` codes them). Labels never appear in any
message.

This module imports no torch: the ClientApp module registers its handlers with the message
types alone, so that a message Flower answers itself (`query.ping`) costs no torch import.
The functions that convert tensors import it (and the codec) when first called.

MPSL: one step costs two round trips per client:
  train.forward    server -> client: STEP (+ CUT_GRAD of the client's previous step,
                   piggy-backed, with CUT_GRAD_STEP); reply: SMASHED activations per stream.
                   STEP's BATCH_INDEX names which of its epoch's mini-batches the client takes:
                   the step index when every client takes part in every step, the times the
                   server drew it before in this epoch with `clients-per-step`.
  train.loss_grad  server -> client: LOGITS (the server's output: logits, retrieval embeddings,
                   or pooled features with `label-privacy='u-shaped'`) and STEP (+ TOTAL_BATCH);
                   reply: LOGIT_GRAD, dL/d(that output) of the client's weighted loss, with its
                   loss and accuracy.
  train.end_epoch  server -> client: the last pending CUT_GRAD; reply: CLIENT_MODEL, the
                   client's trainable weights (for evaluation and saving only). The client also
                   keeps a snapshot of its state on its own disk, from which a resumed run restarts.
The STEP records of train.forward and train.end_epoch name the run (RUN_KEY: where the
node's files of this run lie) and the epochs it has finished (EPOCHS_DONE): a node with no state
of its own (in a resumed run, or a device restarted mid-run) starts from its snapshot after them.
FedAvg and FedCLIP (Flower's `FedAvg` record layout):
  train            server -> client: ARRAYS (the trainable set) and CONFIG (SERVER_ROUND,
                   CLIENT_BATCH_SIZE); reply: trained ARRAYS and METRICS.
Every method:
  query.partition_info   reply: INFO (partition id, number of partitions, training samples) and
                   NODE (the device the client computes on, or why it cannot use the one asked for).
  query.ping       empty both ways: measures Flower's own round-trip floor.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

if TYPE_CHECKING:
    import torch

# ---- message types, and the ClientApp handler of each ---------------------------------------
FORWARD = "train.forward"
LOSS_GRAD = "train.loss_grad"
END_EPOCH = "train.end_epoch"
FEDAVG_TRAIN = "train"  # Flower's FedAvg sends plain `train` messages
PARTITION_INFO = "query.partition_info"
PING = "query.ping"


def action(message_type: str) -> str:
    """The ClientApp handler's name for a message type: `train.forward` -> `forward`."""
    return message_type.split(".", 1)[1]


# ---- record keys: MPSL --------------------------------------------------------------------
STEP = "step"  # ConfigRecord: EPOCH, STEP_INDEX, CLIENT_BATCH_SIZE, BATCH_INDEX (TOTAL_BATCH for LOSS_GRAD)
CUT_GRAD = "cut_grad"  # ArrayRecord: stream name -> gradient at the cut layer
CUT_GRAD_STEP = "cut_grad_step"  # ConfigRecord: EPOCH, STEP_INDEX the cut gradient belongs to
SMASHED = "smashed"  # ArrayRecord: stream name -> activations [m, tokens, width]
LOGITS = "logits"  # ArrayRecord: LOGITS -> [m, classes] (or retrieval embeddings)
LOGIT_GRAD = "logit_grad"  # ArrayRecord: LOGIT_GRAD -> [m, classes]
CLIENT_MODEL = "client_model"  # ArrayRecord: trainable client weights
CLIENT_METRICS = "client_metrics"  # MetricRecord: COMPUTE_S (+ LOSS_SUM, CORRECT, NUM_EXAMPLES)

# ---- record keys: FedAvg / FedCLIP (the names Flower's FedAvg expects) ---------------------
ARRAYS = "arrays"  # ArrayRecord: the trainable set, sent and returned
CONFIG = "config"  # ConfigRecord: SERVER_ROUND, CLIENT_BATCH_SIZE
METRICS = "metrics"  # MetricRecord: NUM_EXAMPLES, LOSS_SUM, CORRECT, LOCAL_STEPS, COMPUTE_S

# ---- record keys: every method ------------------------------------------------------------
INFO = "info"  # MetricRecord: PARTITION_ID, NUM_PARTITIONS, NUM_EXAMPLES

# ---- keys inside config and metric records ------------------------------------------------
EPOCH = "epoch"
STEP_INDEX = "step"
CLIENT_BATCH_SIZE = "client-batch-size"
BATCH_INDEX = "batch-index"  # which of the epoch's mini-batches a client takes at a step
TOTAL_BATCH = "total-batch"
RUN_KEY = "run-key"  # names the run's folder in every node's client-state store
EPOCHS_DONE = "epochs-done"  # epochs the run has finished before this message's epoch
SERVER_ROUND = "server-round"
LOSS_SUM = "loss-sum"
CORRECT = "correct"
NUM_EXAMPLES = "num-examples"  # also Flower FedAvg's `weighted_by_key`
LOCAL_STEPS = "steps"
COMPUTE_S = "compute-s"
PARTITION_ID = "partition-id"  # also the SuperNode's node-config key
NUM_PARTITIONS = "num-partitions"  # also the SuperNode's node-config key

FORWARD_METRICS = (COMPUTE_S,)
LOSS_GRAD_METRICS = (LOSS_SUM, CORRECT, NUM_EXAMPLES, COMPUTE_S)
END_EPOCH_METRICS = (NUM_EXAMPLES, COMPUTE_S)
FEDAVG_METRICS = (NUM_EXAMPLES, LOSS_SUM, CORRECT, LOCAL_STEPS, COMPUTE_S)
INFO_METRICS = (PARTITION_ID, NUM_PARTITIONS, NUM_EXAMPLES)

# ---- what a node keeps in its `context.state` (never sent) --------------------------------
STATE_PROGRESS = "mpsl.progress"  # ConfigRecord: revision, store key (+ the pending step while one is open)
STATE_REVISION = "revision"
STATE_STORE_KEY = "store-key"  # where the node's client state lies in its store (`node.state_store`)
STATE_RUN_KEY = "run-key"  # the run's RUN_KEY, kept so every handler finds the run's folder
STATE_POSITION = "position"  # (epoch, step, phase) of the last message this state handled
STATE_FEDAVG_OPTIMIZER = "fedavg.optimizer"  # ArrayRecord: this client's Adam state across rounds

# ---- query.partition_info: where the client computes ------------------------------------
NODE = "node"  # ConfigRecord: CLIENT_DEVICE, or DEVICE_PROBLEM when the client cannot use the `device` asked for
CLIENT_DEVICE = "device"  # "cpu" or "cuda"
DEVICE_PROBLEM = "device-problem"  # why not, and what to set

WIRE_DTYPE = np.float32


def tensors_to_record(tensors: dict[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    """Pack named tensors (or numpy arrays) as float32 arrays."""
    arrays = {}
    for name, value in tensors.items():
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        arrays[name] = Array(np.ascontiguousarray(array, dtype=WIRE_DTYPE))
    return ArrayRecord(arrays)


def record_to_tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Unpack an `ArrayRecord` into CPU tensors (no dtype change: validate first)."""
    import torch

    return {name: torch.from_numpy(np.array(array.numpy())) for name, array in record.items()}


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def encode_activations(tensors: dict[str, torch.Tensor], precision: str) -> ArrayRecord:
    """Activations or gradients packed at `activation-precision` (`split.precision` codes them)."""
    from mpsl_flower.split import precision as precision_codec

    return ArrayRecord({name: Array(array) for name, array in precision_codec.encode(tensors, precision).items()})


def decode_activations(
    record: ArrayRecord, expected: dict[str, tuple[int, ...]], precision: str, what: str
) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """(float32 tensors, None) from what `encode_activations` packed, or (None, why it cannot be used):
    names, coded dtypes and shapes as `expected` and `precision` say, every value finite."""
    import torch

    from mpsl_flower.split import precision as precision_codec
    from mpsl_flower.split.precision import ENCODED_DTYPES, SCALE_SUFFIX

    arrays = record_to_arrays(record)
    scaled = precision == "int8"
    names = set(expected) | ({name + SCALE_SUFFIX for name in expected} if scaled else set())
    if set(arrays) != names:
        return None, f"{what}: expected arrays {sorted(names)}, got {sorted(arrays)}"
    tensors = {}
    for name, shape in expected.items():
        array, scale = arrays[name], arrays.get(name + SCALE_SUFFIX)
        if array.dtype != ENCODED_DTYPES[precision] or tuple(array.shape) != tuple(shape):
            got, wanted = f"{array.dtype} {tuple(array.shape)}", f"{np.dtype(ENCODED_DTYPES[precision])} {tuple(shape)}"
            return None, f"{what}: array {name!r} is {got}, expected {wanted} ({precision})"
        if scaled and (scale.dtype != np.float32 or tuple(scale.shape) != (*shape[:-1], 1)):
            return None, f"{what}: {name + SCALE_SUFFIX!r} is not float32 of shape {(*shape[:-1], 1)}"
        tensors[name] = precision_codec.decoded(array, scale, precision)
        if not torch.isfinite(tensors[name]).all():
            return None, f"{what}: array {name!r} contains NaN or Inf (at {precision})"
    return tensors, None


def read_activations(record: ArrayRecord, precision: str, upcast: bool = True) -> dict[str, torch.Tensor]:
    """Float32 tensors of what `encode_activations` packed (the server's; a client trusts them);
    `upcast=False` keeps 16-bit floats as they came (`split.precision.decoded`)."""
    from mpsl_flower.split import precision as precision_codec

    return precision_codec.decode(record_to_arrays(record), precision, upcast)


def check_arrays(arrays: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], what: str) -> str | None:
    """Why `arrays` is not exactly the float32, finite arrays of shapes `expected`; None when it is."""
    if set(arrays) != set(expected):
        return f"{what}: expected arrays {sorted(expected)}, got {sorted(arrays)}"
    for name, shape in expected.items():
        array = arrays[name]
        if array.dtype != WIRE_DTYPE:
            return f"{what}: array {name!r} has dtype {array.dtype}, expected {np.dtype(WIRE_DTYPE)}"
        if tuple(array.shape) != tuple(shape):
            return f"{what}: array {name!r} has shape {tuple(array.shape)}, expected {tuple(shape)}"
        if not np.isfinite(array).all():
            return f"{what}: array {name!r} contains NaN or Inf"
    return None


def reply_problem(
    content: RecordDict,
    arrays_key: str,
    expected: dict[str, tuple[int, ...]],
    metrics_key: str,
    metric_names: tuple[str, ...],
    precision: str | None = None,
) -> str | None:
    """Why a client's reply cannot be used; None when it holds everything, well-formed.

    One check for every method: the arrays record with exactly the `expected` float32, finite
    arrays (activations: as `precision` encodes them), and the metrics record with every name of
    `metric_names`, each a finite number.
    """
    if arrays_key not in content or metrics_key not in content:
        return f"reply lacks its {arrays_key!r} or {metrics_key!r} record"
    metrics = content[metrics_key]
    missing = [name for name in metric_names if name not in metrics]
    if missing:
        return f"reply lacks metrics {missing}"
    for name in metric_names:
        value = metrics[name]
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"client reported a non-finite {name!r}: {value!r}"
    what = arrays_key.replace("_", " ")
    if precision is not None:
        return decode_activations(content[arrays_key], expected, precision, what)[1]
    return check_arrays(record_to_arrays(content[arrays_key]), expected, what)


def payload_bytes(content: RecordDict) -> int:
    """Serialized size of a message's content: what actually travels, headers included."""
    return recorddict_to_proto(content).ByteSize()
