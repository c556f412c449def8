"""Pretrained weights for the embedded tasks' small encoder, made locally: what CLIP's weights are to a paper run.

Why: the paper fine-tunes a pretrained encoder from pretrained tokenizers at a small learning rate. From random
weights on a few thousand generated samples, MPSL's per-client tokenizers learn *which client* a token comes from
faster than the encoder learns the task; under non-IID labels the server then reads each client's label skew off
its tokenizer, which the averaged tokenizer used at test time does not carry (train accuracy 0.75, test 0.41).
From pretrained weights the content is there from the first step, and MPSL tracks centralized training as in the
paper. Nothing can be downloaded here, so the weights are made here: the task's own unsplit model trained
centrally on samples drawn from a stream of the seed that no run trains or tests on
(`tasks.embedded.pretraining_split`), then cached.

What is pretrained: the tokenizers, the pre-LN, every encoder block and the post-LN. The task head is not: it
starts from its random init, as a fine-tuning run's head does, so a run starts at chance. A client and the
server read the same cached file; a process that finds none trains it (deterministic for a seed), so on the
Deployment Engine each device trains it once into its own cache. `models.factory` calls it with itself as the
model builder (`build`), so that this module does not import the factory that imports it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mpsl_flower.config import ENCODER_SIZES, RunConfig
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.models.pretrained import resolve_text_encoder
from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.models.text_encoders import FrozenTextEncoder
from mpsl_flower.models.tokenizers import ClientModel
from mpsl_flower.split.local_epoch import train_local_epoch
from mpsl_flower.split.model_inputs import encode_per_sample
from mpsl_flower.split.optimizer import new_optimizer
from tasks.atomic import atomic_file
from tasks.embedded import pretraining_split
from tasks.registry import EMBEDDED

logger = logging.getLogger(__name__)

ModelBuilder = Callable[[RunConfig], FullModel]  # `models.factory.new_full_model`
PRETRAINED_ENCODER = "tiny-default"  # the one size a CPU pretrains in seconds
SAMPLES, EPOCHS, BATCH_SIZE, LR = 6000, 10, 500, 1e-3  # the recipe: 120 Adam steps, about 40 s on 2 cores
CACHE_FOLDER = "embedded-pretraining"
CLIENT, SERVER = "client.", "server."  # key prefixes of the two halves in the cached file
SERVER_PARTS = ("encoder.", "post_norm.")  # the server's pretrained parts; its head (and any adapter) are not
SOURCE = "embedded pretraining (`models.embedded_pretraining`: trained on generated samples no run sees)"


def applies(config: RunConfig) -> bool:
    """Whether the run starts from the embedded pretraining: an embedded task with the encoder it is made for."""
    return config.embedded_pretraining and config.dataset in EMBEDDED and config.encoder_size == PRETRAINED_ENCODER


def initialise_client(model: ClientModel, config: RunConfig, build: ModelBuilder) -> dict[str, str]:
    """Load the pretrained tokenizers and pre-LN into `model` (its head, if it has one, stays); the sources."""
    state, source = pretrained_state(config, build)
    model.load_state_dict(_part(state, CLIENT), strict=False)
    parts = [f"{m} tokenizer" for m in ("image", "audio") if getattr(config.task, m) is not None]
    parts += ["pre-LayerNorm"] if config.pre_layer_norm else []
    return {part: f"{SOURCE}: {source}" for part in parts}


def initialise_server(model: ServerModel, config: RunConfig, build: ModelBuilder) -> dict[str, str]:
    """Load the pretrained encoder blocks (and post-LN, when on) into `model`; its head stays. The sources."""
    state, source = pretrained_state(config, build)
    parts = {"encoder": (SERVER + "encoder.", model.encoder)}
    if config.post_layer_norm:
        parts["post-LayerNorm"] = (SERVER + "post_norm.", model.post_norm)
    for prefix, module in parts.values():
        module.load_state_dict(_part(state, prefix))
    return {part: f"{SOURCE}: {source}" for part in parts}


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix`, in the names of the module they belong to."""
    return {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}


def _pretraining_config(config: RunConfig) -> RunConfig:
    """The run's model, unsplit and plain: every block trained, no adapters, the head with the server."""
    depth = ENCODER_SIZES[config.encoder_size].depth
    return dataclasses.replace(
        config,
        method="centralized",
        finetune_blocks=depth,
        freeze_encoder=False,
        adapter_approach=False,
        label_privacy="none",
        trainable_params_key="default",
        embedded_pretraining=False,
    )


def _identity(config: RunConfig, text_identity: str) -> dict:
    """Everything the weights depend on: the task's model and inputs, the seed, the recipe."""
    return {
        "task": config.task.name,
        "fusion": config.task.fusion,
        "seed": config.seed,
        "encoder": config.encoder_size,
        "pre_layer_norm": config.pre_layer_norm,
        "post_layer_norm": config.post_layer_norm,
        "audio_tokenizer": config.audio_tokenizer,
        "text_encoder": text_identity,
        "recipe": [SAMPLES, EPOCHS, BATCH_SIZE, LR],
        "torch": torch.__version__.split("+")[0],
    }


def _cache_path(config: RunConfig, identity: dict) -> Path | None:
    cache_dir = config.resolved_path("cache_dir")
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / CACHE_FOLDER / f"{config.task.name}-seed{config.seed}-{digest}.safetensors"


@functools.lru_cache(maxsize=4)
def pretrained_state(config: RunConfig, build: ModelBuilder) -> tuple[dict[str, torch.Tensor], str]:
    """The pretrained weights of the run's model (`client.*`, `server.*` keys) and where they are cached."""
    plain = _pretraining_config(config)
    text_encoder = resolve_text_encoder(plain) if plain.task.text is not None else None
    identity = _identity(plain, text_encoder.identity if text_encoder else "")
    path = _cache_path(plain, identity)
    if path is not None and path.is_file():
        try:
            return load_file(str(path)), str(path)
        except Exception as error:  # a damaged cache is rebuilt, never trusted
            logger.warning("embedded pretraining cache %s is unreadable (%s); training it again", path, error)
    state = _pretrain(plain, text_encoder, build)
    if path is None:
        return state, "not cached (pre-processors-cache-dir is empty): trained in this process"
    with atomic_file(path, keep_suffix=True) as partial:
        save_file(state, str(partial), metadata={"identity": json.dumps(identity, sort_keys=True)})
    return state, str(path)


def _pretrain(
    config: RunConfig, text_encoder: FrozenTextEncoder | None, build: ModelBuilder
) -> dict[str, torch.Tensor]:
    """Train the unsplit model on the pretraining samples, centrally, as `run_centralized` trains; its weights."""
    logger.info(
        "pretraining the %s encoder of %s on %d generated samples (%d epochs, once per seed; then cached)",
        config.encoder_size,
        config.dataset,
        SAMPLES,
        EPOCHS,
    )
    data = pretraining_split(config.dataset, config.seed, SAMPLES)
    if text_encoder is not None:
        data = data.with_inputs(text_feature=encode_per_sample(text_encoder, data.texts))
    model = build(config)
    optimizer = new_optimizer(model, LR)
    for epoch in range(EPOCHS):
        stats = train_local_epoch(model, optimizer, data, BATCH_SIZE, LR, config.seed, 0, epoch)
        accuracy = stats.correct / stats.num_examples
        logger.info("embedded pretraining epoch %d/%d: train accuracy %.3f", epoch + 1, EPOCHS, accuracy)
    client = {CLIENT + key: value for key, value in model.client.state_dict().items() if not key.startswith("head.")}
    server = {SERVER + key: value for key, value in model.server.state_dict().items() if key.startswith(SERVER_PARTS)}
    return {key: value.detach().clone().contiguous() for key, value in {**client, **server}.items()}
