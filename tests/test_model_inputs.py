"""What the client tokenizers read: fbanks sized by the clip length, cached frozen text features."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mpsl_flower.config import parse_run_config
from mpsl_flower.models.tokenizers import AudioTokenizer
from mpsl_flower.split import model_inputs
from tasks.audio import fbank_frames, waveform_to_fbank
from tasks.data import DiskColumn
from tasks.spec import AudioInput


@pytest.mark.parametrize(
    ("seconds", "sample_rate", "channels", "patches"),
    [(10.24, 16_000, 1, 1212), (7.68, 16_000, 1, 912), (1.0, 44_100, 2, 108)],
)
def test_fbank_patches_follow_the_clip_length(seconds, sample_rate, channels, patches):
    waveform = torch.randn(channels, int(seconds * sample_rate)) * 0.1
    frames = fbank_frames(seconds)
    fbank = waveform_to_fbank(waveform, sample_rate, frames)
    assert tuple(fbank.shape) == (frames, 128)
    tokens = AudioTokenizer(AudioInput(num_frames=frames), dim=32)(fbank.unsqueeze(0))
    assert tokens.shape[1] == patches + 1  # + CLS


def test_a_short_clip_is_zero_padded_before_normalisation():
    fbank = waveform_to_fbank(torch.randn(1, 16_000) * 0.1, 16_000, fbank_frames(2.0))
    assert tuple(fbank.shape) == (200, 128)
    padded = fbank[150:]
    torch.testing.assert_close(padded, torch.full_like(padded, padded[0, 0].item()))


@pytest.fixture
def cached_config(tmp_path):
    model_inputs._in_memory.clear()
    yield lambda **extra: parse_run_config(
        {"output-dir": str(tmp_path / "results"), "pre-processors-cache-dir": str(tmp_path / "cache"), **extra}
    )
    model_inputs._in_memory.clear()


def _cache_files(config):
    """The identity file of each text-feature cache folder."""
    return sorted(
        (config.resolved_path("cache_dir") / model_inputs.TEXT_FEATURES_DIR).glob(f"*/{model_inputs.IDENTITY_FILE}")
    )


def _features(data, split="train"):
    """A split's text features as a tensor (they may be memory-mapped from the cache)."""
    column = getattr(data, split).inputs["text_feature"]
    return column.take(range(len(column))) if isinstance(column, DiskColumn) else column


def test_text_features_are_cached_and_reused(cached_config):
    config = cached_config()
    first = _features(model_inputs.load_inputs(config))  # computed, and written to the cache
    (cache_file,) = _cache_files(config)
    model_inputs._in_memory.clear()
    stamp = cache_file.stat().st_mtime_ns
    again = model_inputs.load_inputs(config)
    assert isinstance(again.train.inputs["text_feature"], DiskColumn)  # memory-mapped from the cache
    torch.testing.assert_close(_features(again), first)
    assert cache_file.stat().st_mtime_ns == stamp  # read, not rewritten


def test_another_text_encoder_never_reuses_the_cache(cached_config):
    """Same texts, two encoders: two cache files, each with its own encoder's features."""
    bag = cached_config(**{"encoder-size": "vit-s16", "text-encoder": "bag-of-words"})
    minilm = cached_config(**{"encoder-size": "vit-s16", "text-encoder": "minilm"})
    assert model_inputs.load_inputs(bag).test.inputs["text_feature"].shape[-1] == 64
    model_inputs._in_memory.clear()
    assert model_inputs.load_inputs(minilm).test.inputs["text_feature"].shape[-1] == 384
    assert len(_cache_files(minilm)) == 2


def test_a_damaged_cache_is_rebuilt_with_a_warning(cached_config, caplog):
    config = cached_config()
    expected = _features(model_inputs.load_inputs(config))
    (cache_file,) = _cache_files(config)
    damaged = cache_file.parent / "train.npy"
    damaged.write_bytes(b"not a numpy file")
    model_inputs._in_memory.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt = _features(model_inputs.load_inputs(config))
    assert "unreadable" in caplog.text and str(cache_file.parent) in caplog.text
    torch.testing.assert_close(rebuilt, expected)
    assert np.load(damaged).shape == tuple(expected.shape)  # rewritten as a valid file


def test_text_features_are_one_row_per_question_and_differ_between_questions(cached_config):
    data = model_inputs.load_inputs(cached_config()).train
    features = _features(model_inputs.load_inputs(cached_config()))
    assert features.shape[0] == len(data.texts)
    by_question = {}
    for text, row in zip(data.texts, features):
        by_question.setdefault(text, row)
        torch.testing.assert_close(row, by_question[text])
    distinct = torch.stack(list(by_question.values())).flatten(1)
    assert torch.cdist(distinct, distinct).add(torch.eye(len(distinct))).min() > 0
