"""One epoch of ordinary (unsplit) training on one dataset: what a centralized trainer or an FL client runs."""

from __future__ import annotations

import torch
from torch import nn

from mpsl_flower.split.schedule import batch_rows, num_batches
from tasks.data import SplitData


def train_local_epoch(
    model: nn.Module,
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
        logits = model({name: tensor.to(device) for name, tensor in batch.inputs.items()})
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(labels)
        correct += int((logits.argmax(dim=1) == labels).sum())
    return {"loss-sum": loss_sum, "correct": correct, "num-examples": len(data), "steps": steps}
