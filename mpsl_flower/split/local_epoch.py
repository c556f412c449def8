"""One epoch of ordinary (unsplit) training on one dataset: what a centralized trainer or an FL client runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mpsl_flower.models.full_model import FullModel
from mpsl_flower.split.optimizer import set_lr
from mpsl_flower.split.schedule import num_batches, step_batch
from tasks.data import SplitData
from tasks.objectives import loss_sum_and_correct


@dataclass(frozen=True)
class LocalEpochStats:
    loss_sum: float
    correct: int
    num_examples: int
    steps: int


def train_local_epoch(
    model: FullModel,
    optimizer: torch.optim.Optimizer,
    data: SplitData,
    batch_size: int,
    lr: float,
    seed: int,
    partition_id: int,
    epoch: int,
) -> LocalEpochStats:
    """Optimizer steps over `data` in the seeded batch order MPSL uses."""
    device = next(model.parameters()).device
    model.train()
    set_lr(optimizer, lr)
    loss_sum, correct, steps = 0.0, 0, num_batches(len(data), batch_size)
    for step in range(steps):
        batch = step_batch(data, batch_size, seed, partition_id, epoch, step)
        labels = batch.labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        outputs = model({name: tensor.to(device) for name, tensor in batch.inputs.items()})
        batch_loss_sum, batch_correct = loss_sum_and_correct(model.server.objective, outputs, labels)
        (batch_loss_sum / len(labels)).backward()
        optimizer.step()
        loss_sum += float(batch_loss_sum.detach())
        correct += batch_correct
    return LocalEpochStats(loss_sum, correct, len(data), steps)
