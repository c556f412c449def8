"""What the client tokenizers read: fbanks sized by the clip length, cached frozen text features."""

from __future__ import annotations

import logging

import pytest
import torch

from mpsl_flower import model_inputs
from mpsl_flower.config import parse_run_config
from mpsl_flower.models.tokenizers import AudioTokenizer
from tasks.audio import fbank_frames, waveform_to_fbank
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
    return sorted((config.resolved_path("cache_dir") / model_inputs.TEXT_FEATURES_DIR).glob("*.pt"))


def test_text_features_are_cached_and_reused(cached_config):
    config = cached_config()
    first = model_inputs.load_inputs(config).train.inputs["text_feature"]
    (cache_file,) = _cache_files(config)
    model_inputs._in_memory.clear()
    stamp = cache_file.stat().st_mtime_ns
    again = model_inputs.load_inputs(config).train.inputs["text_feature"]
    torch.testing.assert_close(again, first)
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
    expected = model_inputs.load_inputs(config).train.inputs["text_feature"]
    (cache_file,) = _cache_files(config)
    cache_file.write_bytes(b"not a torch file")
    model_inputs._in_memory.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt = model_inputs.load_inputs(config).train.inputs["text_feature"]
    assert "unreadable" in caplog.text and str(cache_file) in caplog.text
    torch.testing.assert_close(rebuilt, expected)
    torch.load(cache_file, weights_only=True)  # rewritten as a valid file


def test_text_features_are_one_row_per_question_and_differ_between_questions(cached_config):
    data = model_inputs.load_inputs(cached_config()).train
    features = data.inputs["text_feature"]
    assert features.shape[0] == len(data.texts)
    by_question = {}
    for text, row in zip(data.texts, features):
        by_question.setdefault(text, row)
        torch.testing.assert_close(row, by_question[text])
    distinct = torch.stack(list(by_question.values())).flatten(1)
    assert torch.cdist(distinct, distinct).add(torch.eye(len(distinct))).min() > 0
