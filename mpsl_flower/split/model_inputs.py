"""What the client tokenizers read: a task's data plus its frozen text features.

The text encoder is frozen, so each text's feature is computed once per dataset, not once
per step. With `pre-processors-cache-dir` set, the features are stored in
`<cache>/text-features/<dataset>-<key>/{train,test}.npy` and memory-mapped (MS-COCO's
5 captions x 88k images would take ~1 GB in every worker otherwise); the key hashes the
encoder's identity (model, weight file, tokenizer) and every text, so a change of any of
them computes new features instead of reusing stale ones. Within a process the result is
also kept in memory. With `rehearsal=true` the data is generated in the real dataset's layout
(`tasks.rehearsal`), and its generated texts go through the same text encoder.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from mpsl_flower.config import RunConfig
from mpsl_flower.models.pretrained import resolve_text_encoder
from mpsl_flower.models.text_encoders import FrozenTextEncoder
from tasks.atomic import atomic_folder
from tasks.data import Column, DiskColumn, TaskData
from tasks.registry import load_task_data
from tasks.rehearsal import Rehearsal

logger = logging.getLogger(__name__)
TEXT_FEATURES_DIR = "text-features"
IDENTITY_FILE = "identity.txt"
SPLITS = ("train", "test")
_in_memory: dict[tuple, TaskData] = {}


def load_inputs(config: RunConfig) -> TaskData:
    """Train and test splits of the run's task, with a `text_feature` column when it has text."""
    rehearsal = rehearsal_of(config)
    data = load_task_data(
        config.dataset,
        config.seed,
        config.resolved_path("data_dir"),
        config.resolved_path("cache_dir"),
        config.task,
        rehearsal,
        config.embedded_train_samples,
    )
    if config.task.text is None:
        return data
    encoder = resolve_text_encoder(config)
    key = (config.task, config.seed, config.data_dir, config.cache_dir, encoder.identity, rehearsal, len(data.train))
    if key not in _in_memory:
        train, test = _text_features(config, encoder, data)
        _in_memory[key] = TaskData(
            train=data.train.with_inputs(text_feature=train), test=data.test.with_inputs(text_feature=test)
        )
    return _in_memory[key]


def rehearsal_of(config: RunConfig) -> Rehearsal | None:
    """The run's rehearsal (`rehearsal`, `rehearsal-train-samples`, `rehearsal-test-samples`; checked when the
    config was parsed), None for real data."""
    if not config.rehearsal:
        return None
    return Rehearsal(config.rehearsal_train_samples, config.rehearsal_test_samples)


def text_encoder_used(config: RunConfig) -> str | None:
    """The identity of the run's frozen text encoder (for the results folder), None without text."""
    return resolve_text_encoder(config).identity if config.task.text is not None else None


def _cache_key(encoder: FrozenTextEncoder, data: TaskData) -> str:
    digest = hashlib.sha256(encoder.identity.encode())
    for split in (data.train, data.test):
        digest.update(b"\x00split")
        for texts in split.texts:
            digest.update("\x01".join(texts).encode() + b"\x00")
    return digest.hexdigest()[:20]


def _text_features(config: RunConfig, encoder: FrozenTextEncoder, data: TaskData) -> tuple[Column, Column]:
    """Train and test features: memory-mapped from the cache when it holds them, else computed (and cached)."""
    cache_dir = config.resolved_path("cache_dir")
    folder = cache_dir / TEXT_FEATURES_DIR / f"{config.dataset}-{_cache_key(encoder, data)}" if cache_dir else None
    if folder is not None and (folder / IDENTITY_FILE).is_file():
        try:
            cached = [np.load(folder / f"{split}.npy", mmap_mode="r") for split in SPLITS]
            if (folder / IDENTITY_FILE).read_text() == encoder.identity and [len(c) for c in cached] == [
                len(data.train),
                len(data.test),
            ]:
                return DiskColumn(cached[0]), DiskColumn(cached[1])
            logger.warning("text-feature cache %s does not match this data; recomputing it", folder)
        except (OSError, ValueError) as error:  # a damaged cache is rebuilt, never trusted
            logger.warning("text-feature cache %s is unreadable (%s); recomputing it", folder, error)
    logger.info("computing %s text features of %d samples", encoder.name, len(data.train) + len(data.test))
    train, test = encode_per_sample(encoder, data.train.texts), encode_per_sample(encoder, data.test.texts)
    if folder is not None:
        _save_atomically(encoder.identity, {"train": train, "test": test}, folder)
    return train, test


def encode_per_sample(encoder: FrozenTextEncoder, texts: list[tuple[str, ...]]) -> torch.Tensor:
    """Features [samples, texts per sample, width]: every text of every sample, encoded once."""
    features = encoder.encode([text for sample in texts for text in sample])
    return features.reshape(len(texts), -1, features.shape[-1])


def _save_atomically(identity: str, features: dict[str, torch.Tensor], folder: Path) -> None:
    """Write the cache (replacing a damaged one): readers never see a half-written cache."""
    with atomic_folder(folder, replace=True) as partial:
        for split, values in features.items():
            np.save(partial / f"{split}.npy", values.numpy())
        (partial / IDENTITY_FILE).write_text(identity)
