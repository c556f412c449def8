"""Which weights train and travel: the trainable parameters of a model, as numpy arrays."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def trainable_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The trainable weights of `model`; frozen parts (e.g. the text encoder) never travel."""
    return {name: p.detach().cpu().numpy() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Load exactly the trainable weights of `model`; any missing or extra name is an error."""
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(arrays) != expected:
        missing, unexpected = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise ValueError(f"trainable weights do not match the model: missing {missing}, unexpected {unexpected}")
    tensors = {name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}
    model.load_state_dict(tensors, strict=False)


def optimizer_arrays(optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """Per-parameter optimizer state (Adam's moments and step) as `{index}.{name}` arrays."""
    return {
        f"{index}.{key}": tensor.detach().cpu().numpy()
        for index, state in optimizer.state_dict()["state"].items()
        for key, tensor in state.items()
    }


def load_optimizer_arrays(optimizer: torch.optim.Optimizer, arrays: dict[str, np.ndarray]) -> None:
    """Restore what `optimizer_arrays` saved; the hyper-parameters stay those of `optimizer`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = torch.from_numpy(np.array(value))
    state_dict = optimizer.state_dict()
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)
