"""Decoding images, video frames and audio tracks into model-ready arrays.

Images are read with Pillow (installed with torchvision). Video frames and audio tracks are
read with PyAV, the Python binding of FFmpeg: its wheels bundle FFmpeg, so UCF101's
.avi (Xvid + MP3), Kinetics' and MELD's .mp4 (H.264 + AAC) decode with no system FFmpeg.
torchvision's video reader is deprecated, and torchaudio 2.9 hands decoding to TorchCodec,
which needs a system FFmpeg: both would make installs fragile.

Every failure raises `MediaError` naming the file, so the caller can skip and count it.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from tasks.audio import SAMPLE_RATE


class MediaError(Exception):
    """A file that cannot be decoded; the message starts with the file's path."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)


def _covering(image: Image.Image, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    """Scaled to just cover height x width, then the centre height x width, as uint8 [3, height, width]."""
    image = image.convert("RGB")
    scale = max(height / image.height, width / image.width)
    scaled_width, scaled_height = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((scaled_width, scaled_height), resample)
    left, top = (scaled_width - width) // 2, (scaled_height - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8).transpose(2, 0, 1).copy()


def load_image(path: Path, size: int, stretch: bool = False) -> np.ndarray:
    """An image file as uint8 [3, size, size]: stretched to it (bicubic, as `facebook/vit-mae-base`'s
    processor resizes), or shorter side to `size` and centre crop."""
    try:
        with Image.open(path) as image:
            if stretch:
                resized = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
                return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy()
            return _covering(image, size, size, Image.Resampling.BICUBIC)
    except (OSError, ValueError) as error:
        raise MediaError(path, f"not a readable image ({error})") from error


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (OSError, av.FFmpegError) as error:
        raise MediaError(path, f"cannot be opened ({error})") from error


def media_duration(path: Path) -> float:
    """Length of a video or audio file in seconds."""
    with _open(path) as container:
        if container.duration is None:
            raise MediaError(path, "has no duration")
        return container.duration / av.time_base


def has_audio(path: Path) -> bool:
    """Whether the file has an audio track (UCF101: 51 of its 101 classes do)."""
    with _open(path) as container:
        return bool(container.streams.audio)


def load_frame(path: Path, at_seconds: float, height: int, width: int) -> np.ndarray:
    """The video frame shown at `at_seconds`, scaled to cover height x width and centre-cropped, as
    uint8 [3, height, width] (a 4:3 video at height 256 and width 341 keeps its whole picture)."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "has no video track")
        stream = container.streams.video[0]
        try:
            if at_seconds > 0 and stream.time_base:
                container.seek(int(at_seconds / stream.time_base), stream=stream, backward=True)
            chosen = None
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= at_seconds:
                    break
        except av.FFmpegError as error:
            raise MediaError(path, f"video cannot be decoded ({error})") from error
        if chosen is None:
            raise MediaError(path, "has no decodable video frame")
        return _covering(chosen.to_image(), height, width, Image.Resampling.BILINEAR)  # torchvision's Resize


def load_audio(path: Path, start_seconds: float, seconds: float) -> torch.Tensor:
    """`seconds` of the audio track from `start_seconds`, mono at 16 kHz, as [1, samples].

    A track shorter than asked gives fewer samples; the fbank pads to the task's length.
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "has no audio track")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        first, wanted = round(max(start_seconds, 0.0) * SAMPLE_RATE), round(seconds * SAMPLE_RATE)
        chunks, decoded = [], 0
        try:
            for frame in container.decode(stream):
                for mono in resampler.resample(frame):
                    chunks.append(mono.to_ndarray().reshape(-1))
                    decoded += chunks[-1].size
                if decoded >= first + wanted:
                    break
        except av.FFmpegError as error:
            raise MediaError(path, f"audio cannot be decoded ({error})") from error
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    clip = samples[first : first + wanted]
    if clip.size == 0:
        raise MediaError(path, f"has no audio between {start_seconds:.2f} s and {start_seconds + seconds:.2f} s")
    return torch.from_numpy(clip.astype(np.float32)).unsqueeze(0)
