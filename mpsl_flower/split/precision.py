"""How activations and their gradients are coded at `activation-precision`, as numpy arrays.

The codec is Flower-free so that the in-process runner quantizes exactly as the messages do
(`transmitted`); `mpsl_flower.wire` packs its arrays into the messages and checks what arrives.
float16 halves the bytes, bfloat16 too with float32's range (Flower arrays cannot hold bfloat16,
so its bits travel as int16), int8 quarters them, with a float32 scale per row (the last axis)
as a second array `<name>.scale`.
"""

from __future__ import annotations

import numpy as np
import torch

from mpsl_flower.config import ACTIVATION_PRECISIONS

ENCODED_DTYPES = dict(zip(ACTIVATION_PRECISIONS, (np.float32, np.float16, np.int16, np.int8), strict=True))
SCALE_SUFFIX = ".scale"
INT8_LEVELS = 127


def encode(tensors: dict[str, torch.Tensor], precision: str) -> dict[str, np.ndarray]:
    """The arrays that carry `tensors` at `precision`."""
    arrays = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().float()
        if precision == "int8":
            peak = tensor.abs().amax(dim=-1, keepdim=True)
            scale = torch.where(peak > 0, peak / INT8_LEVELS, torch.ones_like(peak))
            arrays[name] = (tensor / scale).round().clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8).numpy()
            arrays[name + SCALE_SUFFIX] = scale.numpy()
        elif precision == "bfloat16":
            arrays[name] = tensor.to(torch.bfloat16).view(torch.int16).numpy()
        else:
            arrays[name] = tensor.numpy().astype(ENCODED_DTYPES[precision], copy=False)
    return {name: np.ascontiguousarray(array) for name, array in arrays.items()}


def decoded(array: np.ndarray, scale: np.ndarray | None, precision: str, upcast: bool = True) -> torch.Tensor:
    """The float32 tensor that `array` (and, for int8, its `scale`) carries. `upcast=False` leaves float16
    and bfloat16 values in their dtype (exact to upcast later): the server moves half the bytes to its
    GPU and upcasts there."""
    values = torch.from_numpy(np.array(array))
    if precision == "int8":
        return values.float() * torch.from_numpy(np.array(scale))
    if precision == "bfloat16":
        values = values.view(torch.bfloat16)
    return values.float() if upcast else values


def decode(arrays: dict[str, np.ndarray], precision: str, upcast: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor of what `encode` made (see `decoded` for `upcast`)."""
    return {
        name: decoded(array, arrays.get(name + SCALE_SUFFIX), precision, upcast)
        for name, array in arrays.items()
        if not name.endswith(SCALE_SUFFIX)
    }


def transmitted(tensors: dict[str, torch.Tensor], precision: str) -> tuple[dict[str, torch.Tensor], int]:
    """`tensors` as they arrive at `precision`, and the bytes of their arrays: what the in-process
    runner uses in place of a message."""
    if precision == "float32":  # travels as it is: no copy
        return tensors, sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    arrays = encode(tensors, precision)
    return decode(arrays, precision), sum(array.nbytes for array in arrays.values())
