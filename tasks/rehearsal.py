"""A real task's exact shapes with generated inputs: a paper run's memory, time and disk, before any download.

`rehearsal=true` keeps the task as the run config shapes it (`RunConfig.task`: fusion, audio window) and swaps
its data for generated samples that are stored as the real loader stores them (`tasks.preprocess`). They have
the same cached columns, shapes and dtypes and the same step view, which crops, flips and jitters video frames
and places MELD's clip in its window at every step. Each sample gets as many texts as the real loader gives
(5 captions for retrieval), and the run's text encoder turns them into features.

Nothing is held whole. A column is a `GeneratedArray` that makes only the rows a batch reads, each one from
(seed, split, row) alone. So COCO-QA's 78,736 images take no memory until they are read, and a seed gives the
same data whatever order the rows are read in. Labels, texts and waveform lengths are made up front (small).

Every sample carries a concept: its class in classification, or one of `RETRIEVAL_CONCEPTS` drawn for it in
retrieval, where the label is the row, as the Karpathy loader gives it. The concept shows in every modality: a
coloured band across the image (its colour and its height; a band is horizontal, so crops and flips keep it),
a raised mel band in a stored fbank, a tone in a waveform, and a concept word in every text. So the labels
depend on the inputs, and a model that trains lifts accuracy above chance.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tasks.audio import NUM_MEL_BINS, SAMPLE_RATE, waveform_to_fbank, window_samples
from tasks.augment import WAVEFORM, WAVEFORM_LENGTH, step_view
from tasks.data import DiskColumn, SplitData, TaskData
from tasks.preprocess import cached_columns  # the real loader's column layout: the shapes agree
from tasks.spec import CLASSIFICATION, TaskSpec

# Train / test samples of each real dataset as its loader gives them (`rehearsal-*-samples=0` takes these).
OFFICIAL_SIZES: dict[str, tuple[int, int]] = {
    "coco-qa": (78_736, 38_948),  # QA pairs of the 2015-05-17 release (Ren et al., 2015; README: 78.7k / 38.9k)
    # B-T4SA's list lengths are published nowhere we could check: 80% and 10% of its 470,586 images (156,862 per
    # class, Vadicamo et al., 2017), the shares its authors give. Set both sample keys to your lists' lengths.
    "b-t4sa": (376_468, 47_059),
    "meld": (11_096, 2_610),  # train + dev less the excluded clip / test (tasks.datasets.meld, README)
    "ucf101": (4_893, 1_943),  # split 1 of the 51 classes with sound (tasks.datasets.ucf101)
    "kinetics-sounds": (15_376, 3_844),  # the paper's list (tasks.datasets.kinetics_sounds)
    "flickr30k": (29_000, 1_000),  # Karpathy split images (tasks.datasets.flickr30k)
    "mscoco": (82_783, 5_000),  # Karpathy split images (tasks.datasets.mscoco)
}
SPLITS = ("train", "test")
STREAMS = {"image": 0, "fbank": 1, WAVEFORM: 2}  # each column's own random choices per row

LEVELS = (20, 128, 235)  # per channel: 27 band colours, apart even after +-20% brightness jitter
PALETTE = np.array(list(itertools.product(LEVELS, repeat=3)), dtype=np.int16)
MIN_BAND_SLOTS = 2
# A small rehearsal draws its labels from fewer classes, so that every class has samples enough for a Dirichlet
# split over many clients (COCO-QA's 430 classes over 40 samples leave most clients empty); the head keeps
# every class. From 430 x 20 = 8,600 samples on, COCO-QA's rehearsal uses all its classes.
SAMPLES_PER_DRAWN_CLASS = 20
RETRIEVAL_CONCEPTS = 16 * len(PALETTE)  # 16 band heights x 27 colours: 432 images a caption can tell apart
MOSAIC, BASE_IMAGES = 16, 8  # the images the bands are painted over: random mosaics of 16-pixel squares
BASE_FBANKS = 4
FBANK_BAND_BINS, FBANK_BAND_GAIN = 2, 8.0  # the concept's band in a stored fbank: 2 mel bins, +8 (log energy)
AUDIO_SLOTS = NUM_MEL_BINS // FBANK_BAND_BINS  # distinct mel bands or tones; more concepts share them
TONE_LOW_HZ, TONE_HIGH_HZ = 150.0, 6_000.0
MIN_CLIP_SECONDS = 1.0
FILLER_WORDS = np.array(
    "the a this that some what where who look see here there now today very so and with of on in at about "
    "just really my your our one two small big old new good bad people thing place time day way".split(),
    dtype=object,
)
FILLERS = (3, 10)  # filler words per text: at least, and fewer than
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # a concept's word: one of these + one ending
ENDINGS = [v + c for v in "aeiou" for c in "bdfgklmnprstvz"]


@dataclass(frozen=True)
class Rehearsal:
    """A rehearsal's sample counts per split; 0 takes the real dataset's official size (`OFFICIAL_SIZES`)."""

    train_samples: int = 0
    test_samples: int = 0

    def sizes(self, name: str) -> dict[str, int]:
        official = dict(zip(SPLITS, OFFICIAL_SIZES[name]))
        chosen = {"train": self.train_samples, "test": self.test_samples}
        return {split: chosen[split] or official[split] for split in SPLITS}


class GeneratedArray:
    """Rows made on demand, read as `DiskColumn` reads a memory-mapped array: `array[rows]`, or
    `array[rows, variants]` for entry `variants[i]` of row i's second axis (one cached moment of a video).
    `make(row, variant)` gives one row, or with a variant that entry of it."""

    def __init__(self, shape: tuple[int, ...], dtype, make: Callable[[int, int | None], np.ndarray]) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.make = make

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        rows, variants = index if isinstance(index, tuple) else (index, None)
        rows = np.atleast_1d(rows).tolist()
        values = np.empty((len(rows), *self.shape[1 if variants is None else 2 :]), dtype=self.dtype)
        variants = [None] * len(rows) if variants is None else np.atleast_1d(variants).tolist()
        for i, (row, variant) in enumerate(zip(rows, variants)):
            values[i] = self.make(row, variant)
        return values


def rehearsal_data(task: TaskSpec, seed: int, rehearsal: Rehearsal) -> TaskData:
    """Train and test splits of `task` as its real loader stores them, generated from `seed`."""
    sizes = rehearsal.sizes(task.name)
    drawn = task.num_classes
    if task.objective == CLASSIFICATION:  # both splits' labels from the classes the training split can hold
        drawn = min(task.num_classes, max(2, sizes["train"] // SAMPLES_PER_DRAWN_CLASS))
    return TaskData(*(_split(task, seed, split, sizes[split], drawn) for split in SPLITS))


def concept_word(concept: int) -> str:
    """The made-up word that names a concept in the texts ("baab", "beiv", ...): one per concept below 4,900,
    neighbours sharing no part (the ending steps by 31 with each concept, the start by 1)."""
    start, turn = concept % len(SYLLABLES), concept // len(SYLLABLES)
    return SYLLABLES[start] + ENDINGS[(turn + 31 * start) % len(ENDINGS)]


def _split(task: TaskSpec, seed: int, split: str, size: int, drawn_classes: int) -> SplitData:
    key = (seed, SPLITS.index(split))
    rng = np.random.default_rng(key)
    concepts_count = task.num_classes if task.objective == CLASSIFICATION else RETRIEVAL_CONCEPTS
    concepts = rng.integers(0, drawn_classes if task.objective == CLASSIFICATION else concepts_count, size)
    labels = concepts if task.objective == CLASSIFICATION else np.arange(size)
    makers = {
        "image": functools.partial(_image, key, concepts, concepts_count),
        "fbank": functools.partial(_fbank, key, concepts, concepts_count),
    }
    inputs: dict[str, DiskColumn | torch.Tensor] = {}
    columns = cached_columns(task, size)
    if WAVEFORM in columns:  # MELD: a clip's start, whose real length the step view reads
        stored = columns[WAVEFORM][0][1]
        lengths = rng.integers(round(MIN_CLIP_SECONDS * SAMPLE_RATE), stored + 1, size)
        inputs[WAVEFORM_LENGTH] = torch.from_numpy(lengths)
        makers[WAVEFORM] = functools.partial(_waveform, key, concepts, concepts_count, lengths)
    for name, (shape, dtype) in columns.items():
        if name not in inputs:
            inputs[name] = DiskColumn(GeneratedArray(shape, dtype, functools.partial(makers[name], shape[1:])))
    texts = _texts(rng, concepts, task.text.per_sample) if task.text is not None else None
    view = step_view(task.augmentation, task.image, task.audio, split == "train")
    return SplitData(inputs, torch.from_numpy(labels), texts, view)


def _row_rng(key: tuple[int, int], stream: str, row: int) -> np.random.Generator:
    """The random choices of one row of one column: they follow from (seed, split, row) alone."""
    return np.random.default_rng([*key, STREAMS[stream], row])


def _spread(index: int, slots: int, top: float) -> float:
    """Where slot `index` of `slots` lies on [0, top], the slots evenly apart."""
    return index * top / max(1, slots - 1)


def _pick(choices: np.ndarray, variant: int | None) -> np.ndarray:
    """All of a row's per-moment choices, or only the one of moment `variant` (kept as an axis)."""
    return choices if variant is None else choices[[variant]]


@functools.lru_cache(maxsize=8)
def _base_images(seed: int, height: int, width: int) -> np.ndarray:
    """[BASE_IMAGES, 3, height, width] uint8 random mosaics that the bands are painted over."""
    rng = np.random.default_rng([seed, height, width])
    squares = rng.integers(50, 206, (BASE_IMAGES, 3, -(-height // MOSAIC), -(-width // MOSAIC)), dtype=np.uint8)
    return squares.repeat(MOSAIC, axis=2).repeat(MOSAIC, axis=3)[:, :, :height, :width].copy()


def _image(key, concepts, concepts_count: int, shape: tuple[int, ...], row: int, variant: int | None) -> np.ndarray:
    """A still image [3, H, W], or a video's frames [moments, 3, H, W] (one moment's [3, H, W] with `variant`),
    showing the row's concept as a band of its colour in its slot of the height."""
    rng = _row_rng(key, "image", row)
    moments = shape[0] if len(shape) == 4 else 1
    height, width = shape[-2:]
    bases = _base_images(key[0], height, width)[_pick(rng.integers(0, BASE_IMAGES, moments), variant)]
    tint = np.clip(PALETTE[concepts[row] % len(PALETTE)] + rng.integers(-12, 13, 3), 0, 255).astype(np.uint8)
    band = height // max(MIN_BAND_SLOTS, math.ceil(concepts_count / len(PALETTE)))
    top = concepts[row] // len(PALETTE) * band
    bases[:, :, top : top + band, :] = tint[None, :, None, None]
    return bases if len(shape) == 4 and variant is None else bases[0]


@functools.lru_cache(maxsize=4)
def _base_fbanks(seed: int, num_frames: int) -> np.ndarray:
    """[BASE_FBANKS, frames, mel bins] float32: fbanks of quiet noise, prepared as the original's."""
    rng = np.random.default_rng([seed, num_frames])
    noise = torch.from_numpy(rng.normal(0, 0.05, (BASE_FBANKS, 1, window_samples(num_frames))).astype(np.float32))
    return np.stack([waveform_to_fbank(wave, SAMPLE_RATE, num_frames, original=True).numpy() for wave in noise])


def _fbank(key, concepts, concepts_count: int, shape: tuple[int, ...], row: int, variant: int | None) -> np.ndarray:
    """A video's fbanks [moments, frames, mel bins] (one moment's with `variant`): noise with the row's
    concept as raised mel bins."""
    rng = _row_rng(key, "fbank", row)
    bases = _base_fbanks(key[0], shape[1])[_pick(rng.integers(0, BASE_FBANKS, shape[0]), variant)]
    slots = min(concepts_count, AUDIO_SLOTS)
    low = round(_spread(concepts[row] % slots, slots, NUM_MEL_BINS - FBANK_BAND_BINS))
    bases[:, :, low : low + FBANK_BAND_BINS] += FBANK_BAND_GAIN
    return bases if variant is None else bases[0]


def _waveform(key, concepts, concepts_count, lengths, shape: tuple[int, ...], row: int, variant: None) -> np.ndarray:
    """A clip's stored start [samples] float32 (a clip has no moments: `variant` is None): the row's concept
    as a tone in noise for the row's length, then zeros, as the cache holds a clip shorter than its seconds."""
    rng = _row_rng(key, WAVEFORM, row)
    slots = min(concepts_count, AUDIO_SLOTS)
    hz = TONE_LOW_HZ * (TONE_HIGH_HZ / TONE_LOW_HZ) ** _spread(concepts[row] % slots, slots, 1.0)
    length = int(lengths[row])
    times = np.arange(length, dtype=np.float32) / SAMPLE_RATE
    wave = np.zeros(shape, dtype=np.float32)
    wave[:length] = 0.3 * np.sin(2 * np.pi * hz * times + rng.uniform(0, 2 * np.pi))
    wave[:length] += 0.02 * rng.standard_normal(length, dtype=np.float32)
    return wave


def _texts(rng: np.random.Generator, concepts: np.ndarray, per_sample: int) -> list[tuple[str, ...]]:
    """`per_sample` texts per sample: a few filler words and the sample's concept word among them."""
    count = len(concepts) * per_sample
    fillers = FILLER_WORDS[rng.integers(0, len(FILLER_WORDS), (count, FILLERS[1] - 1))]
    lengths = rng.integers(*FILLERS, count)
    places = rng.integers(0, lengths + 1)
    words = [concept_word(concept) for concept in range(int(concepts.max(initial=0)) + 1)]
    named = np.repeat(concepts, per_sample).tolist()
    texts = []
    for i, (length, place, concept) in enumerate(zip(lengths.tolist(), places.tolist(), named)):
        chosen = fillers[i, :length].tolist()
        chosen.insert(place, words[concept])
        texts.append(" ".join(chosen))
    return [tuple(texts[i : i + per_sample]) for i in range(0, count, per_sample)]
