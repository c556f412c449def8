"""The model factory: the client and server halves, and the unsplit model, from a run config, identically
on every path, and the devices the run computes on: the server's, and each client's.

Seeds make the initialisation reproducible: every client starts from the same tokenizers
(as they would from one pretrained checkpoint) and the server from one encoder.
"""

from __future__ import annotations

import sys

import torch

from mpsl_flower.config import ENCODER_SIZES, RunConfig
from mpsl_flower.models import embedded_pretraining
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
        if embedded_pretraining.applies(config):
            model.weight_sources = embedded_pretraining.initialise_client(model, config, new_full_model)
        else:
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
    if embedded_pretraining.applies(config):
        model.weight_sources = embedded_pretraining.initialise_server(model, config, new_full_model)
    else:
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


class DeviceUnavailable(RuntimeError):
    """`device='cuda'` where torch sees no CUDA device."""


def resolve_device(config: RunConfig) -> torch.device:
    """The server's device: `auto` picks CUDA when present, else the CPU."""
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "device='cuda' was asked for, but torch sees no CUDA device; set device='auto' or 'cpu'"
        )
    return torch.device(config.device)


def client_device_name(device: str, cuda_available: bool, gpu_ids: list | None) -> str:
    """Where a client computes, from the `device` key, whether torch sees CUDA, and the GPUs Ray assigned to the
    client's actor (`gpu_ids`; None outside a Ray actor: a SuperNode's process, a grid in this process).

    `cpu` and `cuda` force the device. `auto` picks CUDA only for a process that holds a GPU: in simulation,
    an actor that Ray gave a GPU share (`client-resources-num-gpus` > 0); elsewhere, a machine whose GPU torch
    sees. A zero-share actor stays on the CPU even when it can see a GPU (`RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0`):
    Ray did not count it there, and its memory belongs to the server and the actors that have a share.
    """
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if cuda_available:
            return "cuda"
        if gpu_ids is not None and not gpu_ids:
            raise DeviceUnavailable(
                "device='cuda', but this client's Ray actor has no GPU: give clients a GPU share "
                "(--federation-config 'client-resources-num-gpus=0.1') or set device='auto' (clients on a GPU "
                "when they have a share, the server on CUDA when it has one)"
            )
        raise DeviceUnavailable(
            "device='cuda', but torch sees no CUDA device where this client runs; set device='auto' or 'cpu'"
        )
    has_gpu = cuda_available and (gpu_ids is None or len(gpu_ids) > 0)
    return "cuda" if has_gpu else "cpu"


def ray_gpu_ids() -> list | None:
    """The GPU ids Ray assigned to this process's actor ([] for a zero share), or None outside a Ray actor.

    Ray is never imported here: a ClientApp in a Ray actor has imported it already.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return None
    return list(ray.get_gpu_ids())


def client_device(config: RunConfig) -> torch.device:
    """The device this process's client computes on (`client_device_name`)."""
    return torch.device(client_device_name(config.device, torch.cuda.is_available(), ray_gpu_ids()))
