"""Server-side model: shared encoder over each stream, readout, optional post-LN, task head."""

from __future__ import annotations

import torch
from torch import nn

from mpsl_flower.models.encoder import Encoder, EncoderSize
from tasks.spec import RETRIEVAL, TaskSpec


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

    Retrieval has no head: the output is [B, 1 + k, D], the image CLS output followed by the
    output of each caption token, every caption encoded as its own one-token sequence.
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
        self.objective = task.objective
        self.output_shape = (1 + task.text.per_sample, size.dim) if task.objective == RETRIEVAL else (task.num_classes,)
        self.encoder = Encoder(size, finetune_blocks)
        self.adapters = nn.ModuleDict({modality: FeatureAdapter(size.dim) for modality in adapter_modalities})
        self.post_norm = nn.LayerNorm(size.dim, eps=1e-5) if post_layer_norm else nn.Identity()
        self.head = nn.Linear(size.dim, task.num_classes) if task.objective != RETRIEVAL else nn.Identity()
        self.weight_sources: dict[str, str] = {}  # part -> file that initialised it (set by split.build)

    def forward(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.objective == RETRIEVAL:
            return self._embeddings(streams)
        encoded = {name: self.encoder(tokens) for name, tokens in streams.items()}
        features = []
        for name, position, modality in self.readout:
            features.append(self._adapted(modality, encoded[name][:, position]))
        return self.head(self.post_norm(torch.stack(features).mean(dim=0)))

    def _embeddings(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        image = self._adapted("image", self.encoder(streams["image"])[:, 0])
        captions = streams["text"]
        batch, per_sample, dim = captions.shape
        text = self.encoder(captions.reshape(batch * per_sample, 1, dim)).reshape(batch, per_sample, dim)
        return self.post_norm(torch.cat([image.unsqueeze(1), self._adapted("text", text)], dim=1))

    def _adapted(self, modality: str, feature: torch.Tensor) -> torch.Tensor:
        return self.adapters[modality](feature) if modality in self.adapters else feature
