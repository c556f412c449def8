"""What crosses the wire between the MPSL server and its clients, in one place.

Both the ClientApp and the MPSL strategy import these names; nothing else builds or reads
MPSL message content. Tensors travel as float32 numpy arrays in `ArrayRecord`s (Flower
cannot carry bfloat16); labels never appear in any message.

One step costs two round trips per client:
  train.forward    server -> client: step to compute (+ cut-layer gradient of the client's
                   previous step, piggy-backed); reply: smashed activations per stream.
  train.loss_grad  server -> client: the client's logits and the global batch size;
                   reply: dL/dlogits of the client's weighted loss, loss sum, correct count.
  train.end_epoch  server -> client: last pending cut-layer gradient; reply: the client's
                   trainable weights (for evaluation and saving only) and its sample count.
  query.partition_info   reply: partition id, number of partitions, training samples.
  query.ping       empty both ways: measures Flower's own round-trip floor.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

FORWARD = "train.forward"
LOSS_GRAD = "train.loss_grad"
END_EPOCH = "train.end_epoch"
PARTITION_INFO = "query.partition_info"
PING = "query.ping"

# Record keys.
STEP = "step"  # ConfigRecord: epoch, step, client-batch-size (+ total-batch for LOSS_GRAD)
CUT_GRAD = "cut_grad"  # ArrayRecord: stream name -> gradient at the cut layer
CUT_GRAD_STEP = "cut_grad_step"  # ConfigRecord: epoch, step the cut gradient belongs to
SMASHED = "smashed"  # ArrayRecord: stream name -> activations [m, tokens, width]
LOGITS = "logits"  # ArrayRecord: "logits" -> [m, classes]
LOGIT_GRAD = "logit_grad"  # ArrayRecord: "logit_grad" -> [m, classes]
CLIENT_MODEL = "client_model"  # ArrayRecord: trainable client weights
INFO = "info"  # MetricRecord: partition-id, num-partitions, num-examples
CLIENT_METRICS = "client_metrics"  # MetricRecord: loss-sum, correct, num-examples, compute-s

WIRE_DTYPE = np.float32


def tensors_to_record(tensors: dict[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    """Pack named tensors as float32 arrays."""
    arrays = {}
    for name, value in tensors.items():
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        arrays[name] = Array(np.ascontiguousarray(array, dtype=WIRE_DTYPE))
    return ArrayRecord(arrays)


def record_to_tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Unpack an `ArrayRecord` into CPU tensors (no dtype change: validate first)."""
    return {name: torch.from_numpy(np.array(array.numpy())) for name, array in record.items()}


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


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


def step_record(**values: int) -> ConfigRecord:
    return ConfigRecord(dict(values))


def metrics_record(**values: int | float) -> MetricRecord:
    return MetricRecord(dict(values))


def payload_bytes(content: RecordDict) -> int:
    """Serialized size of a message's content: what actually travels, headers included."""
    return recorddict_to_proto(content).ByteSize()
