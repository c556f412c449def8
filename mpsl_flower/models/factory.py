"""The model factory: the client and server halves, and the unsplit model, from a run config, identically
on every path, and the device the run computes on.

Seeds make the initialisation reproducible: every client starts from the same tokenizers
(as they would from one pretrained checkpoint) and the server from one encoder.
"""

from __future__ import annotations

import torch

from mpsl_flower.config import ENCODER_SIZES, RunConfig
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.models.pretrained import (
    initialise_client_model,
    initialise_server_model,
)
from mpsl_flower.models.server_model import UNIFIED_ADAPTER, ServerModel
from mpsl_flower.models.tokenizers import ClientModel
from tasks.objectives import RETRIEVAL_COSINE
from tasks.spec import RETRIEVAL


def new_client_model(config: RunConfig, pretrained: bool = True) -> ClientModel:
    """The initial client-side model (same weights for every client): pretrained where files exist.

    `pretrained=False` skips reading the weight files, for a model whose trainable weights are
    about to be replaced by saved ones (a client resuming from its node state, the averaged model).
    A tokenizer frozen by `trainable-params-key` is never saved or averaged, so the files are read
    all the same when the model has one: it must keep its pretrained weights there too.
    """
    size = ENCODER_SIZES[config.encoder_size]
    torch.manual_seed(config.seed)
    model = ClientModel(
        config.task,
        size.dim,
        size.patch,
        config.pre_layer_norm,
        config.audio_tokenizer == "ast",
        head_on_client=config.head_on_client,
    )
    frozen = [getattr(model, m) for m in ("image", "audio") if m not in config.trainable_tokenizers()]
    frozen = [tokenizer for tokenizer in frozen if tokenizer is not None]
    if pretrained or frozen:
        model.weight_sources = initialise_client_model(model, config)
    for tokenizer in frozen:
        tokenizer.requires_grad_(False)  # `trainable-params-key`: it keeps its initial (pretrained) weights
    return model


def new_server_model(config: RunConfig) -> ServerModel:
    """The initial server-side model: encoder, readout, post-LN and head.

    The adapter approach (FedCLIP, or `use-adapter-approach`) freezes the whole encoder and adds an
    adapter per chosen modality of the task, or one shared by all (`include-unified-adapter`).
    """
    torch.manual_seed(config.seed + 1)
    task = config.task
    finetune_blocks, adapters = config.finetune_blocks, ()
    if config.uses_adapters:
        finetune_blocks = 0
        adapters = tuple(m for m in task.modalities if config.adapter_modalities.get(m, False))
        if config.unified_adapter:
            adapters = (UNIFIED_ADAPTER,)
    size = ENCODER_SIZES[config.encoder_size]
    model = ServerModel(
        task,
        size,
        finetune_blocks,
        config.post_layer_norm,
        adapters,
        task_objective(config),
        head_on_client=config.head_on_client,
    )
    model.weight_sources = initialise_server_model(model.encoder, model.post_norm, config)
    return model


def task_objective(config: RunConfig) -> str:
    """The task's objective, with retrieval scored as `retrieval-scoring` says."""
    task = config.task
    if task.objective == RETRIEVAL and config.retrieval_scoring == "cosine":
        return RETRIEVAL_COSINE
    return task.objective


def new_full_model(config: RunConfig) -> FullModel:
    """The unsplit model (client half feeding server half) that the baselines train."""
    return FullModel(new_client_model(config), new_server_model(config))


def resolve_device(config: RunConfig) -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for, but torch sees no CUDA device; set device='auto' or 'cpu'")
    return torch.device(config.device)
