"""Test-set evaluation: aggregated client tokenizers feeding the server model."""

from __future__ import annotations

import torch
from torch import nn

from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.models.tokenizers import ClientModel
from tasks.data import SplitData


@torch.no_grad()
def evaluate(client_model: ClientModel, server_model: ServerModel, split: SplitData, batch_size: int) -> dict[str, float]:
    """Mean cross-entropy and accuracy of the split model on `split`."""
    device = next(server_model.parameters()).device
    client_model.eval()
    server_model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        batch = split.select(range(start, min(start + batch_size, len(split))))
        streams = {name: tokens.to(device) for name, tokens in client_model(batch.inputs).items()}
        logits = server_model(streams).cpu()
        loss_sum += float(nn.functional.cross_entropy(logits, batch.labels, reduction="sum"))
        correct += int((logits.argmax(dim=1) == batch.labels).sum())
    return {"test_loss": loss_sum / len(split), "test_accuracy": correct / len(split)}
