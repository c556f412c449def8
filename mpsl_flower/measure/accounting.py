"""What each method costs a client and the server: multiply-accumulates per sample, bytes on the wire.

A model is a list of `Part`s in compute order, each with its forward MACs for one sample. MACs
are counted with fvcore's `FlopCountAnalysis`, as the original's `calculate_computation_overhead.py`
does (one multiply-accumulate per matmul/conv step, LayerNorm as 5 per element, softmax, GELU and
other element-wise ops skipped), with one difference: we count attention's two matmuls (q k^T and
attn v). The original runs timm's fused `scaled_dot_product_attention`, an op fvcore 0.1.5 counts
as zero; `as_the_original_tool_counts` gives its figures (each part's `attention` taken off).
FLOPs are 2 x MACs (the original's tool says to divide by 2: that would be MACs / 2, wrong).
`mpsl_flower.tools.overhead` measures the parts with fvcore; `analytic_parts` computes the same
numbers from the shapes alone, fast enough for every encoder size (a test holds the two equal).

Training = forward + backward. A part's backward costs one forward for the gradient of its
weights when it trains, and one more for the gradient of its input when anything upstream of it
trains (MPSL's frozen blocks still pass the cut-layer gradient back to the clients). Tokenizers
read data: they never need an input gradient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mpsl_flower.config import ENCODER_SIZES, RunConfig
from tasks.spec import RETRIEVAL, TaskSpec

LAYER_NORM_MACS_PER_ELEMENT = 5  # fvcore's count for aten::layer_norm
FLOAT32_BYTES = 4
CLIENT, SERVER = "client", "server"


@dataclass(frozen=True)
class Part:
    """One stage of the model, in compute order: its forward MACs for one sample, whether it trains,
    whether it reads data (a tokenizer) rather than another part's output, and how much of `forward`
    is attention's two matmuls (what the original's tool counts as zero)."""

    name: str
    side: str
    forward: float
    trained: bool
    reads_data: bool = False
    attention: float = 0.0


def as_the_original_tool_counts(parts: list[Part]) -> list[Part]:
    """`parts` as the original's tool counts them: timm 1.0.7 fuses attention into
    `scaled_dot_product_attention`, which fvcore 0.1.5 does not count, so its matmuls drop out."""
    return [dataclasses.replace(part, forward=part.forward - part.attention, attention=0.0) for part in parts]


@dataclass(frozen=True)
class SideCost:
    """MACs per sample on one side for one method: forward alone, and a training step's forward + backward."""

    forward: float = 0.0
    training: float = 0.0


def training_macs(parts: list[Part]) -> list[float]:
    """Forward + backward MACs of each part (see the module docstring)."""
    costs, upstream_trains = [], False
    for part in parts:
        backward = part.forward * (part.trained + (upstream_trains and not part.reads_data))
        costs.append(part.forward + backward)
        upstream_trains = upstream_trains or part.trained
    return costs


def method_costs(method: str, parts: list[Part]) -> dict[str, SideCost]:
    """Client and server cost per sample of `method` over its model's parts.

    MPSL: tokenizers and pre-LN on the client, the rest on the server. FedAvg and FedCLIP: the
    whole model on the client (averaging is not counted). Centralized: everything on the server.
    """
    training = training_macs(parts)
    if method == "mpsl":
        sides = [part.side for part in parts]
    else:
        sides = [CLIENT if method in ("fedavg", "fedclip") else SERVER] * len(parts)
    costs = {}
    for side in (CLIENT, SERVER):
        chosen = [i for i, s in enumerate(sides) if s == side]
        costs[side] = SideCost(sum(parts[i].forward for i in chosen), sum(training[i] for i in chosen))
    return costs


def attention_macs(tokens: int, dim: int) -> float:
    """Attention's two matmuls on `tokens` tokens of width `dim`: q k^T and attn v, n^2 d each (all heads)."""
    return 2 * tokens * tokens * dim


def _block_macs(tokens: int, dim: int) -> float:
    """One pre-norm transformer block on `tokens` tokens: qkv, projection and MLP (12 d^2 per token),
    the two attention matmuls and its two LayerNorms."""
    return 12 * dim * dim * tokens + attention_macs(tokens, dim) + 2 * LAYER_NORM_MACS_PER_ELEMENT * tokens * dim


def stream_tokens(task: TaskSpec, image_tokens: int) -> dict[str, int]:
    """Tokens per sample of each stream the client sends (`image_tokens`: 1 + patches of the image)."""
    lengths = {
        "image": image_tokens if task.image else 0,
        "audio": 1 + task.audio.num_patches if task.audio else 0,
        "text": task.text.per_sample if task.text else 0,
    }
    if task.streams == ("fused",):
        return {"fused": sum(lengths.values())}
    return {name: lengths[name] for name in task.streams}


def analytic_parts(config: RunConfig) -> list[Part]:
    """The parts of `config`'s model, with MACs computed from shapes alone (equal to fvcore's count)."""
    task, size = config.task, ENCODER_SIZES[config.encoder_size]
    dim = size.dim
    tokenizers = config.trainable_tokenizers()
    parts = []
    image_tokens = 0
    if task.image is not None:
        patches = (task.image.size // size.patch) ** 2
        image_tokens = 1 + patches
        parts.append(Part("client.image", CLIENT, patches * dim * 3 * size.patch**2, "image" in tokenizers, True))
    if task.audio is not None:
        parts.append(Part("client.audio", CLIENT, task.audio.num_patches * dim * 256, "audio" in tokenizers, True))
    streams = stream_tokens(task, image_tokens)
    if config.pre_layer_norm:
        pre_norm = LAYER_NORM_MACS_PER_ELEMENT * sum(streams.values()) * dim
        parts.append(Part("client.pre_norm", CLIENT, pre_norm, True))
    finetune = 0 if config.uses_adapters else config.finetune_blocks
    for index in range(size.depth):
        macs = sum(_block_macs(tokens, dim) for tokens in streams.values())
        attention = sum(attention_macs(tokens, dim) for tokens in streams.values())
        trained = index >= size.depth - finetune
        parts.append(Part(f"server.encoder.blocks.{index}", SERVER, macs, trained, attention=attention))
    features = {name: (task.text.per_sample if name == "text" else 1) for _, _, name in task.readout}
    if config.uses_adapters:
        adapted = [m for m in features if config.adapter_modalities.get(m, False)]
        if config.unified_adapter:
            adapted = list(features)
        parts.append(Part("server.adapters", SERVER, sum(2 * dim * dim * features[m] for m in adapted), True))
    pooled = sum(features.values()) if task.objective == RETRIEVAL else 1
    if config.post_layer_norm:
        parts.append(Part("server.post_norm", SERVER, LAYER_NORM_MACS_PER_ELEMENT * pooled * dim, True))
    if task.objective != RETRIEVAL:  # `label-privacy='u-shaped'` moves the head to the clients
        side = CLIENT if config.head_on_client else SERVER
        parts.append(Part(f"{side}.head", side, dim * task.num_classes, True))
    return parts


def wire_itemsize(precision: str) -> float:
    """Bytes per value of an activation or gradient in MPSL messages (int8 adds a float32 scale per row)."""
    return {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}[precision]


def mpsl_bytes_per_sample(
    stream_shapes: dict[str, tuple[int, int]], output_shape: tuple[int, ...], precision: str
) -> float:
    """Bytes one training sample puts on the wire in MPSL: its activations up and their gradient
    down (tokens x width per stream), its output down and the output's gradient up."""
    itemsize = wire_itemsize(precision)
    row_scale = FLOAT32_BYTES if precision == "int8" else 0
    activations = sum(tokens * (width * itemsize + row_scale) for tokens, width in stream_shapes.values())
    rows = int(np.prod(output_shape[:-1])) if len(output_shape) > 1 else 1
    output = rows * (output_shape[-1] * itemsize + row_scale)
    return 2 * activations + 2 * output


def fedavg_bytes_per_client(trainable_parameters: int) -> int:
    """Bytes a selected client exchanges in a FedAvg or FedCLIP round: the trained set down and back up."""
    return 2 * trainable_parameters * FLOAT32_BYTES


@dataclass(frozen=True)
class OriginalBytes:
    """Bytes the original's MPSL trainers charge one client (`get_communication_size`: `sys.getsizeof`
    of each sent tensor's storage), up to the server and down from it."""

    up: float
    down: float


def _storage_bytes(elements: int, storage_overhead: int) -> int:
    """What `sys.getsizeof(tensor.untyped_storage())` gives for a float32 tensor owning `elements` values."""
    return elements * FLOAT32_BYTES + storage_overhead


def original_mpsl_bytes_per_batch(
    stream_elements: list[int],
    output_elements: list[int],
    mini_batch: int,
    clients: int,
    client_trains: bool,
    storage_overhead: int,
) -> OriginalBytes:
    """One client's bytes in one step of the original's MPSL trainers, each of `clients` sending `mini_batch`.

    Up: its activations (one tensor per stream, `stream_elements` values per sample) and its scalar
    loss. Down: its slice of the server's outputs, which is a view, so the whole batch's storage is
    charged (`clients x mini_batch` samples of `output_elements` per output tensor), and, when the
    client trains, the cut-layer gradient (a clone: its own slice only).
    """
    activations = sum(_storage_bytes(mini_batch * e, storage_overhead) for e in stream_elements)
    loss = _storage_bytes(1, storage_overhead)
    outputs = sum(_storage_bytes(clients * mini_batch * e, storage_overhead) for e in output_elements)
    return OriginalBytes(up=activations + loss, down=outputs + (activations if client_trains else 0))


def original_mpsl_bytes_per_client_epoch(samples: int, mini_batch: int, clients: int, **per_batch) -> OriginalBytes:
    """One client's bytes over an epoch of `samples` samples in mini-batches of `mini_batch`, every client
    holding as many (the last, shorter step too); `per_batch`: the rest of `original_mpsl_bytes_per_batch`."""
    if samples < 1 or mini_batch < 1 or clients < 1:
        raise ValueError(f"samples={samples}, mini_batch={mini_batch} and clients={clients} must all be at least 1")
    steps = [mini_batch] * (samples // mini_batch) + ([samples % mini_batch] if samples % mini_batch else [])
    counted = [original_mpsl_bytes_per_batch(mini_batch=m, clients=clients, **per_batch) for m in steps]
    return OriginalBytes(up=sum(b.up for b in counted), down=sum(b.down for b in counted))


def original_output_elements(task: TaskSpec, dim: int, image_tokens: int, post_layer_norm: bool) -> list[int]:
    """Values per sample in the storage of each server output the original sends down. Classification:
    the logits. Retrieval: the image feature is `image[:, 0]` of the encoder's output, a view of all
    its image tokens unless the post-LayerNorm makes a new tensor, and the texts' encoder output."""
    if task.objective != RETRIEVAL:
        return [task.num_classes]
    image = dim if post_layer_norm else image_tokens * dim
    return [image, task.text.per_sample * dim]
