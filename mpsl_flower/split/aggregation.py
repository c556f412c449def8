"""Sample-weighted averaging of model weights (FedAvg's rule)."""

from __future__ import annotations

import numpy as np


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
