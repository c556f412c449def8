"""Drawing a sample's inputs from the cache at each step, as the original draws them from the files.

The original re-reads UCF101, Kinetics-Sounds and MELD clips at every step, in training and at
test, with random choices (`tasks.spec.RandomMoment`, `tasks.spec.RandomAudioPlacement`). The
cache holds what those choices need; a view here makes them with a `torch.Generator` that the
caller seeds from (seed, partition, epoch, step) (`input_generator`). So the in-process runner
and every Flower client draw the same inputs, and a client that re-runs its forward pass for
the cut-layer gradient sees the same ones. Without a generator a view gives the deterministic
input: the middle moment and the centre crop, or the clip's start at the start of the window.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import torch

from tasks.audio import SAMPLE_RATE, waveform_to_fbank
from tasks.data import Column, StepView, take
from tasks.spec import AudioInput, ImageInput, RandomAudioPlacement, RandomMoment

WAVEFORM, WAVEFORM_LENGTH = "waveform", "waveform_length"  # RandomAudioPlacement's cache columns
MELD_SAMPLE_RATE = 48_000  # MELD's audio, at which the original cuts its clips


def original_clip_samples(clip_seconds: float) -> int:
    """Samples at 16 kHz of a MELD clip the original's way: it cuts `ceil(Fraction(clip_seconds) x 48,000)`
    samples at 48 kHz (the float 2.56 is a hair above 2.56: 122,881), and torchaudio's Resample keeps
    `ceil(samples / 3)` of them (40,961 for 2.56 s, where 2.56 x 16,000 is 40,960)."""
    source_samples = math.ceil(Fraction(clip_seconds) * MELD_SAMPLE_RATE)
    return math.ceil(Fraction(source_samples * SAMPLE_RATE, MELD_SAMPLE_RATE))


def input_generator(*key: object) -> torch.Generator:
    """A generator for the random input choices of one batch, seeded by `key` alone.

    Hashing the whole key keeps it apart from the batch-order generator of `split.schedule`
    and from every other key.
    """
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest) >> 1)


class MomentView(StepView):
    """Frame + audio window of one of the cached moments, the frame cropped, flipped and jittered."""

    def __init__(self, augmentation: RandomMoment, image: ImageInput) -> None:
        self.augmentation = augmentation
        self.crop = image.size

    def inputs(
        self, columns: Mapping[str, Column], rows: np.ndarray, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        moments = self.augmentation.moments
        if generator is None:
            chosen = np.full(len(rows), moments // 2)
        else:
            chosen = torch.randint(moments, (len(rows),), generator=generator).numpy()
        inputs = {name: take(column, rows) for name, column in columns.items() if name not in ("image", "fbank")}
        inputs["fbank"] = take(columns["fbank"], rows, chosen)
        frames = take(columns["image"], rows, chosen)
        inputs["image"] = torch.stack([self._frame(frame, generator) for frame in frames])
        return inputs

    def _frame(self, frame: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Crop, flip and jitter as the original's torchvision transforms (uint8 in and out)."""
        from torchvision.transforms.v2 import functional as F  # torchvision is heavy: only video tasks need it

        height, width = frame.shape[-2:]
        if generator is None:
            return F.center_crop(frame, [self.crop, self.crop])
        top = int(torch.randint(height - self.crop + 1, (1,), generator=generator))
        left = int(torch.randint(width - self.crop + 1, (1,), generator=generator))
        frame = F.crop(frame, top, left, self.crop, self.crop)
        if float(torch.rand(1, generator=generator)) < 0.5:
            frame = F.horizontal_flip(frame)
        brightness, saturation = self.augmentation.brightness, self.augmentation.saturation
        factors = 1 + (torch.rand(2, generator=generator) * 2 - 1) * torch.tensor([brightness, saturation])
        adjust = [(F.adjust_brightness, float(factors[0])), (F.adjust_saturation, float(factors[1]))]
        if float(torch.rand(1, generator=generator)) < 0.5:  # ColorJitter applies its parts in random order
            adjust.reverse()
        for function, factor in adjust:
            frame = function(frame, factor)
        return frame


class PlacementView(StepView):
    """A clip of the cached waveform placed at a random offset in the window, as an fbank.

    `random_start`: the clip starts at a random point of the stored waveform (training) or at
    its start (test), as the original's clip samplers do.
    """

    def __init__(self, augmentation: RandomAudioPlacement, audio: AudioInput, random_start: bool) -> None:
        self.audio = audio
        self.random_start = random_start
        self.clip_samples = original_clip_samples(augmentation.clip_seconds)
        self.window_samples = round(augmentation.window_seconds * SAMPLE_RATE)

    def inputs(
        self, columns: Mapping[str, Column], rows: np.ndarray, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        cached = (WAVEFORM, WAVEFORM_LENGTH)
        inputs = {name: take(column, rows) for name, column in columns.items() if name not in cached}
        waveforms, lengths = take(columns[WAVEFORM], rows), take(columns[WAVEFORM_LENGTH], rows)
        inputs["fbank"] = torch.stack(
            [self._fbank(wave[: int(length)], generator) for wave, length in zip(waveforms, lengths)]
        )
        return inputs

    def _fbank(self, waveform: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        start = 0
        if self.random_start and generator is not None:
            start = int(torch.randint(max(0, len(waveform) - self.clip_samples) + 1, (1,), generator=generator))
        clip = waveform[start : start + self.clip_samples]
        offset = 0
        if generator is not None:
            offset = int(torch.randint(self.window_samples - len(clip) + 1, (1,), generator=generator))
        window = torch.zeros(1, self.window_samples)
        window[0, offset : offset + len(clip)] = clip.float()
        return waveform_to_fbank(window, SAMPLE_RATE, self.audio.num_frames, original=True)


def step_view(
    augmentation: RandomMoment | RandomAudioPlacement | None,
    image: ImageInput | None,
    audio: AudioInput | None,
    training: bool,
) -> StepView | None:
    """The view that draws a split's inputs at each step; None when they are read as cached."""
    if isinstance(augmentation, RandomMoment):
        return MomentView(augmentation, image)
    if isinstance(augmentation, RandomAudioPlacement):
        return PlacementView(augmentation, audio, random_start=training)
    return None
