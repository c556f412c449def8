"""Server-side model: shared encoder over each stream, readout, optional post-LN, task head."""

from __future__ import annotations

import torch
from torch import nn

from mpsl_flower.models.encoder import Encoder, EncoderSize
from tasks.spec import TaskSpec


class FeatureAdapter(nn.Module):
    """FedCLIP's adapter: Linear, Tanh, Linear, Softmax; its output scales the feature elementwise.

    The softmax runs over the feature axis. (The original applies it over the sequence axis,
    which turns an adapter on a one-token text sequence into a no-op.)
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim), nn.Softmax(dim=-1))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return feature * self.attention(feature)


class ServerModel(nn.Module):
    """Runs the encoder on every token stream and maps the readout tokens to logits.

    Late fusion runs the same encoder separately on each stream; the readout averages the
    encoder outputs at the task's (stream, position) pairs, each first scaled by the adapter
    of its modality when `adapter_modalities` names it (FedCLIP).
    """

    def __init__(
        self,
        task: TaskSpec,
        size: EncoderSize,
        finetune_blocks: int,
        post_layer_norm: bool,
        adapter_modalities: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.readout = task.readout
        self.encoder = Encoder(size, finetune_blocks)
        self.adapters = nn.ModuleDict({modality: FeatureAdapter(size.dim) for modality in adapter_modalities})
        self.post_norm = nn.LayerNorm(size.dim, eps=1e-5) if post_layer_norm else nn.Identity()
        self.head = nn.Linear(size.dim, task.num_classes)
        self.weight_sources: dict[str, str] = {}  # part -> file that initialised it (set by split.build)

    def forward(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        encoded = {name: self.encoder(tokens) for name, tokens in streams.items()}
        features = []
        for name, position, modality in self.readout:
            feature = encoded[name][:, position]
            features.append(self.adapters[modality](feature) if modality in self.adapters else feature)
        return self.head(self.post_norm(torch.stack(features).mean(dim=0)))
