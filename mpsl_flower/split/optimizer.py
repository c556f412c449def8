"""The one optimizer and learning-rate schedule of every method and both halves: Adam, StepLR by epoch.

The schedule is a function of the epoch rather than a torch scheduler object, because a client
process may be new at every message (deployment) and must still know its rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # annotations only: the GPU bench imports this module without the run config's dependencies
    from mpsl_flower.config import RunConfig


def new_optimizer(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam over the trainable parameters of `model` (the original trains every method with Adam)."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


def epoch_lr(config: RunConfig, epoch: int) -> float:
    """StepLR: `start-lr` times `lr-gamma` for every `lr-step-size` epochs completed (epoch counts from 0)."""
    return config.learning_rate * config.lr_gamma ** (epoch // config.lr_step_size)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
