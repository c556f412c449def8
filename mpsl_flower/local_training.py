"""One epoch of ordinary (unsplit) training on one dataset: what a centralized trainer or an FL client runs."""

from __future__ import annotations

import torch

from mpsl_flower.models.full_model import FullModel
from mpsl_flower.split.schedule import batch_rows, num_batches
from tasks.data import SplitData
from tasks.objectives import loss_sum_and_correct


def train_local_epoch(
    model: FullModel,
    optimizer: torch.optim.Optimizer,
    data: SplitData,
    batch_size: int,
    lr: float,
    seed: int,
    partition_id: int,
    epoch: int,
) -> dict[str, float]:
    """Adam steps over `data` in the seeded batch order MPSL uses; returns loss sum, correct, samples, steps."""
    device = next(model.parameters()).device
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss_sum, correct, steps = 0.0, 0, num_batches(len(data), batch_size)
    for step in range(steps):
        batch = data.select(batch_rows(len(data), batch_size, seed, partition_id, epoch, step))
        labels = batch.labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        outputs = model({name: tensor.to(device) for name, tensor in batch.inputs.items()})
        batch_loss_sum, batch_correct = loss_sum_and_correct(model.server.objective, outputs, labels)
        (batch_loss_sum / len(labels)).backward()
        optimizer.step()
        loss_sum += float(batch_loss_sum.detach())
        correct += batch_correct
    return {"loss-sum": loss_sum, "correct": correct, "num-examples": len(data), "steps": steps}
