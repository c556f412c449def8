"""The unsplit model: client tokenizers feeding the server encoder and head in one module.

The baselines (centralized, FedAvg) train this; MPSL trains the same two halves apart.
"""

from __future__ import annotations

import torch
from torch import nn

from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.models.tokenizers import ClientModel


class FullModel(nn.Module):
    """`client.head(server(client(inputs)))`, with the same parameter names as the two halves (client.*,
    server.*); the client's head is the identity unless it holds the task head (`label-privacy='u-shaped'`)."""

    def __init__(self, client: ClientModel, server: ServerModel) -> None:
        super().__init__()
        self.client = client
        self.server = server

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.client.head(self.server(self.client(inputs)))
