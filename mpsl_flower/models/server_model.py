"""Server-side model: shared encoder over each stream, readout, optional post-LN, task head."""

from __future__ import annotations

import torch
from torch import nn

from mpsl_flower.config import EncoderSize
from mpsl_flower.models.encoder import Encoder
from tasks.spec import LATE_FUSION, RETRIEVAL, TaskSpec

UNIFIED_ADAPTER = "unified"  # one adapter that every modality shares


class FeatureAdapter(nn.Module):
    """FedCLIP's adapter: Linear, Tanh, Linear, Softmax; its output scales the feature elementwise.

    As in the original, the softmax runs over axis 1: for a pooled feature [B, D] that is the
    feature axis; for retrieval's caption outputs [B, k, D] it is the axis of the k captions; for
    a one-token output kept as [B, 1, D] it is that one token: the softmax is 1, the adapter the
    identity, and its weights get zero gradients.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim), nn.Softmax(dim=1))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return feature * self.attention(feature)


class ServerModel(nn.Module):
    """Runs the encoder on every token stream and maps the readout tokens to logits.

    Late fusion runs the same encoder separately on each stream; the readout averages the
    encoder outputs at the task's (stream, position) pairs, each first scaled by the adapter
    of its modality when `adapter_modalities` names it (FedCLIP). As in the original's image-text
    classification (COCO-QA, B-T4SA) with late fusion, the text output is adapted as the whole
    one-token sequence [B, 1, D], so there the text's adapter (or the unified one) has no effect.

    Retrieval has no head: the output is [B, 1 + k, D], the image CLS output followed by the
    outputs of the k caption tokens, which go through the encoder together as one k-token
    sequence, as in the original. `objective` says how the outputs are scored (see
    `tasks.objectives`); it defaults to the task's.

    `head_on_client` (`label-privacy='u-shaped'`): no head here; the output is the pooled
    (post-LN) feature [B, D], and each client's own head (`ClientModel.head`) makes the logits.
    """

    def __init__(
        self,
        task: TaskSpec,
        size: EncoderSize,
        finetune_blocks: int,
        post_layer_norm: bool,
        adapter_modalities: tuple[str, ...] = (),
        objective: str | None = None,
        head_on_client: bool = False,
    ) -> None:
        super().__init__()
        self.readout = task.readout
        self.retrieval = task.objective == RETRIEVAL
        self.objective = objective or task.objective
        image_text_late = task.fusion == LATE_FUSION and task.modalities == ("image", "text")
        self.sequence_adapted = ("text",) if image_text_late and not self.retrieval else ()
        head_here = not self.retrieval and not head_on_client
        if self.retrieval:
            self.output_shape: tuple[int, ...] = (1 + task.text.per_sample, size.dim)
        else:
            self.output_shape = (task.num_classes,) if head_here else (size.dim,)
        self.encoder = Encoder(size, finetune_blocks)
        self.adapters = nn.ModuleDict({modality: FeatureAdapter(size.dim) for modality in adapter_modalities})
        self.post_norm = nn.LayerNorm(size.dim, eps=1e-5) if post_layer_norm else nn.Identity()
        self.head = nn.Linear(size.dim, task.num_classes) if head_here else nn.Identity()
        self.weight_sources: dict[str, str] = {}  # part -> file that initialised it (set by models.factory)

    def forward(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.retrieval:
            return self._embeddings(streams)
        encoded = {name: self.encoder(tokens) for name, tokens in streams.items()}
        features = []
        for name, position, modality in self.readout:
            if modality in self.sequence_adapted:  # the original adapts [B, 1, D]: softmax over one token
                features.append(self._adapted(modality, encoded[name][:, position : position + 1])[:, 0])
            else:
                features.append(self._adapted(modality, encoded[name][:, position]))
        return self.head(self.post_norm(torch.stack(features).mean(dim=0)))

    def _embeddings(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        image = self._adapted("image", self.encoder(streams["image"])[:, 0])
        text = self._adapted("text", self.encoder(streams["text"]))  # [B, k, D]: the k captions as one sequence
        return self.post_norm(torch.cat([image.unsqueeze(1), text], dim=1))

    def _adapted(self, modality: str, feature: torch.Tensor) -> torch.Tensor:
        if UNIFIED_ADAPTER in self.adapters:
            return self.adapters[UNIFIED_ADAPTER](feature)
        return self.adapters[modality](feature) if modality in self.adapters else feature
