"""Audio preprocessing shared by every audio task: waveform -> normalised Kaldi fbank.

AST (and so our audio tokenizer) reads a 128-bin log-mel fbank with a 25 ms window and a
10 ms shift, padded or cut to a fixed number of frames and normalised with the AudioSet
statistics. The number of frames follows the clip length (100 per second), so a 10.24 s
clip gives 1,024 frames and 1,212 patches, and a 7.68 s clip 768 frames and 912 patches.
"""

from __future__ import annotations

import torch
import torchaudio

SAMPLE_RATE = 16_000
NUM_MEL_BINS = 128
FRAMES_PER_SECOND = 100  # 10 ms frame shift
# AudioSet fbank statistics that AST uses to normalise its input.
FBANK_MEAN, FBANK_STD = -4.2677393, 4.5689974


WINDOW_SAMPLES, SHIFT_SAMPLES = 400, 160  # Kaldi's 25 ms window and 10 ms shift at 16 kHz


def fbank_frames(clip_seconds: float) -> int:
    """Frames of the fbank of a clip: 100 per second (10.24 s -> 1,024)."""
    return round(clip_seconds * FRAMES_PER_SECOND)


def window_samples(num_frames: int) -> int:
    """The waveform length whose fbank has exactly `num_frames` frames (1,024 -> 164,080: 10.255 s)."""
    return WINDOW_SAMPLES + SHIFT_SAMPLES * (num_frames - 1)


def waveform_to_fbank(
    waveform: torch.Tensor, sample_rate: int, num_frames: int, original: bool = False
) -> torch.Tensor:
    """Fbank [num_frames, 128] of a mono or multi-channel waveform [channels, samples].

    The waveform is mixed down to mono, resampled to 16 kHz and mean-centred, as AST does.
    `original=False`: the fbank is zero-padded at the end or cut to `num_frames`, then normalised
    with AudioSet's statistics. `original=True`, as the original code: the waveform is zero-padded
    (or cut) to the length whose fbank has exactly `num_frames` frames, and the fbank is not
    normalised.
    """
    if waveform.dim() == 1:
        waveform = waveform.unsqueeze(0)
    mono = waveform.float().mean(dim=0, keepdim=True)
    if sample_rate != SAMPLE_RATE:
        mono = torchaudio.functional.resample(mono, sample_rate, SAMPLE_RATE)
    if original:
        window = window_samples(num_frames)
        mono = torch.nn.functional.pad(mono, (0, max(0, window - mono.shape[1])))
    mono = mono - mono.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        mono,
        sample_frequency=SAMPLE_RATE,
        num_mel_bins=NUM_MEL_BINS,
        frame_shift=1000 / FRAMES_PER_SECOND,
        htk_compat=True,
        window_type="hanning",
        use_energy=False,
        dither=0.0,
    )
    if fbank.shape[0] < num_frames:
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, num_frames - fbank.shape[0]))
    return fbank[:num_frames] if original else (fbank[:num_frames] - FBANK_MEAN) / (2 * FBANK_STD)
