"""Decode a dataset split once into the preprocessing cache; later runs map it from disk.

A loader describes each sample as a `Sample` (its files, texts and label). `build_split`
decodes them into memory-mapped .npy files under `<pre-processors-cache-dir>/<dataset>/<split>-<key>/`:
images to uint8 224 x 224; a clip to what the task's augmentation draws from at each step
(`tasks.spec.RandomMoment`: frames and fbanks at a few moments; `RandomAudioPlacement`:
the start of the waveform),
with a progress bar. The key hashes the settings and every sample's files (path, size,
modification time), so changed data or settings build a new cache, never reuse a stale one.
A sample whose file is missing or corrupt is skipped, named in a warning and in
`skipped.txt`, and counted; it never stops the run. A truncated image is loaded, as the original
loads it, and named in `truncated.txt` (`truncated_images` counts them for `run_info.json`).
The build writes to a temporary folder and renames it when complete, so an interrupted build is
never mistaken for a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks.atomic import atomic_folder
from tasks.audio import SAMPLE_RATE, waveform_to_fbank, window_samples
from tasks.augment import WAVEFORM, WAVEFORM_LENGTH, step_view
from tasks.data import DiskColumn, SplitData
from tasks.media import MediaError, load_audio, load_frame, load_image_noting_truncation, media_duration
from tasks.spec import RandomAudioPlacement, RandomMoment, TaskSpec

logger = logging.getLogger(__name__)
CACHE_VERSION = "3"  # bump when decoding changes, to invalidate every cache (3: float32 fbanks, the original's audio)
DONE_FILE = "complete.json"
SKIPPED_FILE = "skipped.txt"
TRUNCATED_FILE = "truncated.txt"
LISTED_SKIPS = 5


@dataclass(frozen=True)
class Sample:
    """One sample as its files describe it.

    `image`: an image file. `clip`: a video or audio file; which frames and which audio the
    task reads from it is the task's `augmentation`.
    """

    label: int
    texts: tuple[str, ...] = ()
    image: str | None = None
    clip: str | None = None

    def files(self) -> list[str]:
        return [f for f in (self.image, self.clip) if f]


def user_path(value: str) -> Path:
    """A folder given on a command line, with `~` expanded (as `--data-dir=~/data` leaves it)."""
    return Path(value).expanduser()


class DatasetError(ValueError):
    """A dataset folder that cannot be read; the message says what is missing and how to get it."""


def _cache_key(spec: TaskSpec, samples: list[Sample]) -> str:
    digest = hashlib.sha256(f"{CACHE_VERSION}|{spec.name}|{spec.image}|{spec.audio}|{spec.augmentation}".encode())
    stats: dict[str, str] = {}
    for sample in samples:
        for path in sample.files():
            if path not in stats:
                try:
                    stat = os.stat(path)
                    stats[path] = f"{stat.st_size}:{stat.st_mtime_ns}"
                except OSError:
                    stats[path] = "missing"
        digest.update(repr((sample, [stats[p] for p in sample.files()])).encode())
    return digest.hexdigest()[:20]


def cached_columns(spec: TaskSpec, count: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The cache's input columns for `count` samples: name -> (shape, dtype); a rehearsal generates the same."""
    augmentation, columns = spec.augmentation, {}
    if isinstance(augmentation, RandomMoment):
        moments, height, width = augmentation.moments, augmentation.stored_height, augmentation.stored_width
        columns["image"] = ((count, moments, 3, height, width), np.uint8)
        columns["fbank"] = ((count, moments, spec.audio.num_frames, spec.audio.num_mel_bins), np.float32)
        return columns
    if spec.image is not None:
        columns["image"] = ((count, 3, spec.image.size, spec.image.size), np.uint8)
    if isinstance(augmentation, RandomAudioPlacement):
        columns[WAVEFORM] = ((count, round(augmentation.stored_seconds * SAMPLE_RATE)), np.float32)
        columns[WAVEFORM_LENGTH] = ((count,), np.int64)
    elif spec.audio is not None:
        raise ValueError(f"task {spec.name}: audio is decoded for an augmentation, and it names none")
    return columns


def _window(waveform: torch.Tensor, start_seconds: float, end_seconds: float) -> torch.Tensor:
    """The samples from `int(start x 16,000)` to `int(end x 16,000)`, cut as the original cuts its windows."""
    return waveform[:, int(start_seconds * SAMPLE_RATE) : int(end_seconds * SAMPLE_RATE)]


def _moments(spec: TaskSpec, moments: RandomMoment, clip: Path) -> dict[str, np.ndarray]:
    """Frame and fbank at each stratified moment of the video: the fbank of the audio window centred
    on the moment, cut at the video's ends and zero-padded at its end, as the original's. The whole track
    is resampled once and windows are cut from it, as the original does."""
    duration = media_duration(clip)
    waveform = load_audio(clip)
    window_seconds = window_samples(spec.audio.num_frames) / SAMPLE_RATE
    frames, fbanks = [], []
    for k in range(moments.moments):
        moment = (k + 0.5) / moments.moments * duration
        frames.append(load_frame(clip, moment, moments.stored_height, moments.stored_width))
        start, end = max(0.0, moment - window_seconds / 2), min(duration, moment + window_seconds / 2)
        window = _window(waveform, start, end)
        fbanks.append(waveform_to_fbank(window, SAMPLE_RATE, spec.audio.num_frames, original=True).numpy())
    return {"image": np.stack(frames), "fbank": np.stack(fbanks)}


def _stored_waveform(placement: RandomAudioPlacement, clip: Path) -> dict[str, np.ndarray]:
    """The first `stored_seconds` of the clip's audio, zero-padded, and how many samples are real."""
    waveform = load_audio(clip)[0].numpy()
    stored = np.zeros(round(placement.stored_seconds * SAMPLE_RATE), dtype=np.float32)
    stored[: len(waveform)] = waveform[: len(stored)]
    return {WAVEFORM: stored, WAVEFORM_LENGTH: np.int64(min(len(waveform), len(stored)))}


def _decode(spec: TaskSpec, sample: Sample) -> tuple[dict[str, np.ndarray], bool]:
    """The sample's cached values, and whether its image file was truncated (loaded all the same)."""
    augmentation, values, truncated = spec.augmentation, {}, False
    if sample.image is not None:
        stretch = spec.image.resize == "stretch"
        values["image"], truncated = load_image_noting_truncation(Path(sample.image), spec.image.size, stretch)
    if isinstance(augmentation, RandomMoment):
        values |= _moments(spec, augmentation, Path(sample.clip))
    elif isinstance(augmentation, RandomAudioPlacement):
        values |= _stored_waveform(augmentation, Path(sample.clip))
    return values, truncated


def truncated_images(split: SplitData) -> int | None:
    """How many of a cached split's image files were truncated and loaded all the same (`truncated.txt` of
    its cache folder); None for a split that is not read from the cache."""
    folders = {
        Path(column.array.filename).parent
        for column in split.inputs.values()
        if isinstance(column, DiskColumn) and getattr(column.array, "filename", None)
    }
    caches = [folder for folder in folders if (folder / DONE_FILE).is_file()]  # not the text-feature cache
    if not caches:
        return None
    return sum(
        len((folder / TRUNCATED_FILE).read_text().splitlines())
        for folder in caches
        if (folder / TRUNCATED_FILE).is_file()
    )


def build_split(spec: TaskSpec, samples: list[Sample], cache_root: Path, split: str) -> SplitData:
    """The split's columns from the cache, decoding the samples first when the cache lacks them."""
    folder = Path(cache_root) / spec.name / f"{split}-{_cache_key(spec, samples)}"
    if not (folder / DONE_FILE).is_file():
        _build(spec, samples, folder, split)
    done = json.loads((folder / DONE_FILE).read_text())
    kept = done["kept"]
    if done["skipped"]:
        logger.warning(
            "%s %s: %d samples skipped (listed in %s)", spec.name, split, done["skipped"], folder / SKIPPED_FILE
        )
    names = cached_columns(spec, 0)
    inputs = {name: DiskColumn(np.load(folder / f"{name}.npy", mmap_mode="r")[:kept]) for name in names}
    labels = torch.from_numpy(np.load(folder / "labels.npy"))
    texts = [tuple(t) for t in json.loads((folder / "texts.json").read_text())] if spec.text is not None else None
    return SplitData(inputs, labels, texts, step_view(spec.augmentation, spec.image, spec.audio, split == "train"))


def _build(spec: TaskSpec, samples: list[Sample], folder: Path, split: str) -> None:
    with atomic_folder(folder) as partial:
        arrays = {
            name: np.lib.format.open_memmap(partial / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
            for name, (shape, dtype) in cached_columns(spec, len(samples)).items()
        }
        labels, texts, skipped, truncated = [], [], [], []
        for sample in tqdm(samples, desc=f"preprocessing {spec.name} {split}", unit="sample", mininterval=2):
            try:
                values, was_truncated = _decode(spec, sample)
            except MediaError as error:
                skipped.append(str(error))
                continue
            if was_truncated:
                truncated.append(sample.image)
            for name, value in values.items():
                arrays[name][len(labels)] = value
            labels.append(sample.label)
            texts.append(list(sample.texts))
        for array in arrays.values():
            array.flush()
        np.save(partial / "labels.npy", np.asarray(labels, dtype=np.int64))
        (partial / "texts.json").write_text(json.dumps(texts))
        (partial / SKIPPED_FILE).write_text("".join(f"{reason}\n" for reason in skipped))
        (partial / TRUNCATED_FILE).write_text("".join(f"{path}\n" for path in truncated))
        (partial / DONE_FILE).write_text(json.dumps({"kept": len(labels), "skipped": len(skipped)}))
        if skipped:
            listed = "; ".join(skipped[:LISTED_SKIPS]) + (" ..." if len(skipped) > LISTED_SKIPS else "")
            logger.warning("%s %s: skipped %d of %d samples: %s", spec.name, split, len(skipped), len(samples), listed)
        if truncated:
            logger.warning(
                "%s %s: %d truncated images loaded with their missing part filled, as the original loads them "
                "(listed in %s)",
                spec.name,
                split,
                len(truncated),
                folder / TRUNCATED_FILE,
            )
        if not labels:
            first = skipped[0] if skipped else "the split lists no samples"
            raise DatasetError(
                f"{spec.name} {split}: none of the {len(samples)} samples could be decoded; first error: {first}"
            )
