"""Decoding images, video frames and audio tracks into model-ready arrays.

Images are read with Pillow (installed with torchvision). Video frames and audio tracks are
read with PyAV, the Python binding of FFmpeg: its wheels bundle FFmpeg, so UCF101's
.avi (Xvid + MP3), Kinetics' and MELD's .mp4 (H.264 + AAC) decode with no system FFmpeg.
torchvision's video reader is deprecated, and torchaudio 2.9 hands decoding to TorchCodec,
which needs a system FFmpeg: both would make installs fragile. Audio is then read as the
original reads it: every channel decoded at the source rate, their plain mean, and torchaudio's
`Resample` to 16 kHz.

Every failure raises `MediaError` naming the file, so the caller can skip and count it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio
from PIL import Image, ImageFile

from tasks.audio import SAMPLE_RATE


class MediaError(Exception):
    """A file that cannot be decoded; the message starts with the file's path."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)


def _covering(image: Image.Image, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    """An RGB image scaled to just cover height x width, then the centre height x width, as uint8 [3, height, width]."""
    scale = max(height / image.height, width / image.width)
    scaled_width, scaled_height = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((scaled_width, scaled_height), resample)
    left, top = (scaled_width - width) // 2, (scaled_height - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8).transpose(2, 0, 1).copy()


@contextlib.contextmanager
def _truncated_images_allowed() -> Iterator[None]:
    """Pillow's switch for loading a truncated file, on for one load only: it is Pillow's module state, which
    the original sets for the whole process (t4sa.py) and other code here should not inherit."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")  # decodes the whole file; the new image outlives the closed file


def read_image(path: Path) -> tuple[Image.Image, bool]:
    """An image file as RGB, and whether it was truncated. A truncated file is loaded as the original loads it
    (Pillow's `LOAD_TRUNCATED_IMAGES`: the missing part filled), so the caller can count it rather than lose it."""
    try:
        return _rgb(path), False
    except OSError as strict:
        try:
            with _truncated_images_allowed():
                return _rgb(path), True
        except (OSError, ValueError) as error:
            raise MediaError(path, f"not a readable image ({error})") from strict
    except ValueError as error:
        raise MediaError(path, f"not a readable image ({error})") from error


def load_image_noting_truncation(path: Path, size: int, stretch: bool = False) -> tuple[np.ndarray, bool]:
    """An image file as uint8 [3, size, size], and whether the file was truncated (`read_image`): stretched to
    the size (bicubic, as `facebook/vit-mae-base`'s processor resizes), or shorter side to `size` and centre
    crop."""
    image, truncated = read_image(path)
    if stretch:
        resized = image.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy(), truncated
    return _covering(image, size, size, Image.Resampling.BICUBIC), truncated


def load_image(path: Path, size: int, stretch: bool = False) -> np.ndarray:
    """An image file as uint8 [3, size, size] (`load_image_noting_truncation`, without the note)."""
    return load_image_noting_truncation(path, size, stretch)[0]


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


def _frame_number(frame: av.VideoFrame, stream: av.VideoStream, fps: float) -> int:
    """A decoded frame's number from its time, as OpenCV's FFmpeg reader numbers frames (which the original
    seeks with): the time since the stream's start, in frames, rounded."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    return round((frame.time - start) * fps)


def load_frame(path: Path, at_seconds: float, height: int, width: int) -> np.ndarray:
    """Frame `int(at_seconds x fps)` of the video, the one the original reads for a moment (it seeks OpenCV to
    that frame number), scaled to cover height x width and centre-cropped, as uint8 [3, height, width] (a 4:3
    video at height 256 and width 341 keeps its whole picture). Past the last frame: the last frame."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "has no video track")
        stream = container.streams.video[0]
        if not stream.guessed_rate:
            raise MediaError(path, "has no frame rate")
        fps = float(stream.guessed_rate)
        wanted = int(at_seconds * fps)
        try:
            if wanted > 0 and stream.time_base:
                container.seek(int(wanted / fps / stream.time_base), stream=stream, backward=True)
            chosen = None
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and _frame_number(frame, stream, fps) >= wanted:
                    break
        except av.FFmpegError as error:
            raise MediaError(path, f"video cannot be decoded ({error})") from error
        if chosen is None:
            raise MediaError(path, "has no decodable video frame")
        return _covering(chosen.to_image(), height, width, Image.Resampling.BILINEAR)  # torchvision's Resize


def _channels(path: Path) -> tuple[np.ndarray, int]:
    """Every channel of the whole audio track as float32 [channels, samples], and its sample rate. Each frame is
    only converted to planar float (the rate and the channels stay), and the converter is flushed."""
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "has no audio track")
        stream, converter, chunks = container.streams.audio[0], None, []
        try:
            for frame in container.decode(stream):
                if converter is None:
                    converter = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
                    rate = frame.sample_rate
                chunks.extend(piece.to_ndarray() for piece in converter.resample(frame))
            if converter is not None:
                chunks.extend(piece.to_ndarray() for piece in converter.resample(None))
        except av.FFmpegError as error:
            raise MediaError(path, f"audio cannot be decoded ({error})") from error
    if not chunks:
        raise MediaError(path, "has no decodable audio")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate


@functools.cache
def _resampler(source_rate: int) -> torchaudio.transforms.Resample:
    """torchaudio's Resample to 16 kHz with its default filter, as the original resamples; built once per rate."""
    return torchaudio.transforms.Resample(source_rate, SAMPLE_RATE)


def load_audio(path: Path) -> torch.Tensor:
    """The whole audio track as the original reads it, as [1, samples] at 16 kHz: the plain mean of its
    channels (a stereo track is not mixed down by FFmpeg's mono layout, which keeps sqrt(2) x the mean's level)
    at the source rate, then torchaudio's `Resample`."""
    channels, rate = _channels(path)
    mono = torch.from_numpy(channels).mean(dim=0, keepdim=True)
    if rate == SAMPLE_RATE:
        return mono
    with torch.no_grad():
        return _resampler(rate)(mono)
