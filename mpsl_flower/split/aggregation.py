"""Sample-weighted averaging of model weights (FedAvg's rule), and the averaged client model MPSL evaluates."""

from __future__ import annotations

import numpy as np

from mpsl_flower.config import RunConfig
from mpsl_flower.models.factory import new_client_model
from mpsl_flower.models.tokenizers import ClientModel
from mpsl_flower.models.trainable import load_trainable


def weighted_average(states: list[dict[str, np.ndarray]], weights: list[int]) -> dict[str, np.ndarray]:
    """Average each tensor of `states` with weights proportional to `weights` (e.g. sample counts)."""
    if not states:
        raise ValueError("nothing to average: no client states were given")
    total = float(sum(weights))
    return {
        name: sum(state[name].astype(np.float64) * (w / total) for state, w in zip(states, weights)).astype(
            states[0][name].dtype
        )
        for name in states[0]
    }


def averaged_client_model(config: RunConfig, states: list[dict[str, np.ndarray]], weights: list[int]) -> ClientModel:
    """The sample-weighted average of client weights, for evaluation and saving only (clients keep their own)."""
    # every trainable weight is replaced below; a frozen tokenizer still gets its pretrained weights
    model = new_client_model(config, pretrained=False)
    load_trainable(model, weighted_average(states, weights))
    return model
