"""Server-side model: shared encoder over each stream, readout, optional post-LN, task head."""

from __future__ import annotations

import torch
from torch import nn

from mpsl_flower.models.encoder import Encoder, EncoderSize
from tasks.spec import TaskSpec


class ServerModel(nn.Module):
    """Runs the encoder on every token stream and maps the readout tokens to logits.

    Late fusion runs the same encoder separately on each stream; the readout averages the
    encoder outputs at the task's (stream, position) pairs.
    """

    def __init__(self, task: TaskSpec, size: EncoderSize, finetune_blocks: int, post_layer_norm: bool) -> None:
        super().__init__()
        self.readout = task.readout
        self.encoder = Encoder(size, finetune_blocks)
        self.post_norm = nn.LayerNorm(size.dim, eps=1e-5) if post_layer_norm else nn.Identity()
        self.head = nn.Linear(size.dim, task.num_classes)

    def forward(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        encoded = {name: self.encoder(tokens) for name, tokens in streams.items()}
        pooled = torch.stack([encoded[name][:, position] for name, position in self.readout]).mean(dim=0)
        return self.head(self.post_norm(pooled))
