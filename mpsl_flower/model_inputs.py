"""What the client tokenizers read: a task's data plus its frozen text features.

The text encoder is frozen, so each text's feature is computed once per dataset, not once
per step. With `pre-processors-cache-dir` set, the features are stored in
`<cache>/text-features/<dataset>-<key>.pt`; the key hashes the encoder's identity (model,
weight file, tokenizer) and every text, so a change of any of them computes new features
instead of reusing stale ones. Within a process the result is also kept in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from mpsl_flower.config import RunConfig
from mpsl_flower.models.pretrained import resolve_text_encoder
from mpsl_flower.models.text_encoders import FrozenTextEncoder
from tasks.data import TaskData
from tasks.registry import TASKS, load_task_data

logger = logging.getLogger(__name__)
TEXT_FEATURES_DIR = "text-features"
_in_memory: dict[tuple, TaskData] = {}


def load_inputs(config: RunConfig) -> TaskData:
    """Train and test splits of the run's task, with a `text_feature` column when it has text."""
    data = load_task_data(config.dataset, config.seed, config.resolved_path("data_dir"), config.resolved_path("cache_dir"))
    if TASKS[config.dataset].text is None:
        return data
    encoder = resolve_text_encoder(config)
    key = (config.dataset, config.seed, encoder.identity, config.cache_dir)
    if key not in _in_memory:
        train, test = _text_features(config, encoder, data)
        _in_memory[key] = TaskData(
            train=data.train.with_inputs(text_feature=train), test=data.test.with_inputs(text_feature=test)
        )
    return _in_memory[key]


def text_encoder_used(config: RunConfig) -> str | None:
    """The identity of the run's frozen text encoder (for the results folder), None without text."""
    return resolve_text_encoder(config).identity if TASKS[config.dataset].text is not None else None


def _cache_key(encoder: FrozenTextEncoder, data: TaskData) -> str:
    digest = hashlib.sha256(encoder.identity.encode())
    for split in (data.train, data.test):
        digest.update(b"\x00split")
        for texts in split.texts:
            digest.update("\x01".join(texts).encode() + b"\x00")
    return digest.hexdigest()[:20]


def _text_features(config: RunConfig, encoder: FrozenTextEncoder, data: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
    cache_dir = config.resolved_path("cache_dir")
    path = cache_dir / TEXT_FEATURES_DIR / f"{config.dataset}-{_cache_key(encoder, data)}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if (
                cached["identity"] == encoder.identity
                and len(cached["train"]) == len(data.train)
                and len(cached["test"]) == len(data.test)
            ):
                return cached["train"], cached["test"]
            logger.warning("text-feature cache %s does not match this data; recomputing it", path)
        except Exception as error:  # a damaged cache file is rebuilt, never trusted
            logger.warning("text-feature cache %s is unreadable (%s); recomputing it", path, error)
    logger.info("computing %s text features of %d samples", encoder.name, len(data.train) + len(data.test))
    train, test = _encode_per_sample(encoder, data.train.texts), _encode_per_sample(encoder, data.test.texts)
    if path is not None:
        _save_atomically({"identity": encoder.identity, "train": train, "test": test}, path)
    return train, test


def _encode_per_sample(encoder: FrozenTextEncoder, texts: list[tuple[str, ...]]) -> torch.Tensor:
    """Features [samples, texts per sample, width]: every text of every sample, encoded once."""
    features = encoder.encode([text for sample in texts for text in sample])
    return features.reshape(len(texts), -1, features.shape[-1])


def _save_atomically(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    torch.save(payload, partial)
    os.replace(partial, path)
