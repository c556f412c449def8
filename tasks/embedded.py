"""Embedded default tasks, generated locally and deterministically from a seed (no download).

`shapes-qa` (image + question, early fusion): each image holds two coloured shapes in a 2x2
grid; a question asks either the colour of a named shape or the shape of a named colour.
The same image answers different questions differently, so neither modality alone suffices:
a text-only model is capped near the share of the most common answer per question type.

`shapes-av` (frame + audio, late fusion): a frame shows one shape, the audio is a noisy tone
of one of three pitches; the class is the (shape, pitch) pair. It exercises the audio
tokenizer (Kaldi fbank -> patch conv) and late fusion offline.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from tasks.audio import SAMPLE_RATE, fbank_frames, waveform_to_fbank
from tasks.data import SplitData, TaskData
from tasks.spec import LATE_FUSION, AudioInput, ImageInput, TaskSpec, early_fusion_task, fusion_readout

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")
IMAGE_SIZE = 32
CELL = IMAGE_SIZE // 2
TRAIN_SIZE, TEST_SIZE = 6000, 1500
EXTRA_TRAIN_STREAM = 1  # `generate`: the seed's second stream, for training samples beyond TRAIN_SIZE
PRETRAINING_STREAM = 2  # `pretraining_split`: the seed's third stream, disjoint from every run's samples

QA_ANSWERS = tuple(COLORS) + SHAPES

TONE_HZ = (330.0, 990.0, 2970.0)
CLIP_S = 0.3

SHAPES_QA = early_fusion_task(
    "shapes-qa",
    "embedded image+question answering over coloured shapes (early fusion)",
    QA_ANSWERS,
    image=ImageInput(size=IMAGE_SIZE),
)

SHAPES_AV = TaskSpec(
    name="shapes-av",
    description="embedded frame+audio classification of (shape, tone pitch) pairs (late fusion)",
    num_classes=len(SHAPES) * len(TONE_HZ),
    class_names=tuple(f"{shape}@{int(hz)}Hz" for shape in SHAPES for hz in TONE_HZ),
    fusion=LATE_FUSION,
    readout=fusion_readout(LATE_FUSION, ImageInput(size=IMAGE_SIZE), AudioInput(fbank_frames(CLIP_S)), None),
    image=ImageInput(size=IMAGE_SIZE),
    audio=AudioInput(num_frames=fbank_frames(CLIP_S)),
)


@functools.cache
def _shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean mask of a filled shape in a size x size box."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        centre = size / 2
        return (ys - centre) ** 2 + (xs - centre) ** 2 <= centre**2
    # Triangle pointing up: the row's half-width grows linearly from apex to base.
    return np.abs(xs - size / 2) <= ys / 2


def _draw(image: np.ndarray, shape: str, color: str, cell: int, rng: np.random.Generator) -> None:
    """Paint one shape, with random size and offset, into one of the four grid cells."""
    size = int(rng.integers(9, 14))
    top = (cell // 2) * CELL + int(rng.integers(0, CELL - size + 1))
    left = (cell % 2) * CELL + int(rng.integers(0, CELL - size + 1))
    mask = _shape_mask(shape, size)
    region = image[:, top : top + size, left : left + size]
    region[:, mask] = np.array(COLORS[color], dtype=np.uint8)[:, None]


def _blank_image(rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(20.0, 8.0, size=(3, IMAGE_SIZE, IMAGE_SIZE))
    return np.clip(noise, 0, 255).astype(np.uint8)


def _qa_sample(rng: np.random.Generator) -> dict:
    shapes = rng.choice(len(SHAPES), size=2, replace=False)
    colors = rng.choice(len(COLORS), size=2, replace=False)
    cells = rng.choice(4, size=2, replace=False)
    color_names = list(COLORS)
    image = _blank_image(rng)
    for shape_idx, color_idx, cell in zip(shapes, colors, cells):
        _draw(image, SHAPES[shape_idx], color_names[color_idx], int(cell), rng)
    target = int(rng.integers(0, 2))
    shape, color = SHAPES[shapes[target]], color_names[colors[target]]
    if rng.random() < 0.5:
        question, answer = f"what color is the {shape}?", color
    else:
        question, answer = f"what shape is the {color} object?", shape
    return {"image": image, "text": (question,), "label": QA_ANSWERS.index(answer)}


def tone_fbank(frequency_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised Kaldi fbank of a noisy tone, as AST expects."""
    t = np.arange(int(SAMPLE_RATE * CLIP_S)) / SAMPLE_RATE
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.5 * np.sin(2 * np.pi * frequency_hz * t + phase) + rng.normal(0, 0.1, t.shape)
    waveform = torch.tensor(wave, dtype=torch.float32).unsqueeze(0)
    return waveform_to_fbank(waveform, SAMPLE_RATE, SHAPES_AV.audio.num_frames).numpy()


def _av_sample(rng: np.random.Generator) -> dict:
    shape_idx = int(rng.integers(0, len(SHAPES)))
    tone_idx = int(rng.integers(0, len(TONE_HZ)))
    image = _blank_image(rng)
    color = list(COLORS)[int(rng.integers(0, len(COLORS)))]
    _draw(image, SHAPES[shape_idx], color, int(rng.integers(0, 4)), rng)
    return {"image": image, "fbank": tone_fbank(TONE_HZ[tone_idx], rng), "label": shape_idx * len(TONE_HZ) + tone_idx}


_GENERATORS = {SHAPES_QA.name: (SHAPES_QA, _qa_sample), SHAPES_AV.name: (SHAPES_AV, _av_sample)}


def _split(samples: list[dict]) -> SplitData:
    inputs = {
        key: torch.from_numpy(np.stack([np.asarray(sample[key]) for sample in samples]))
        for key in samples[0]
        if key not in ("label", "text")
    }
    texts = [sample["text"] for sample in samples] if "text" in samples[0] else None
    labels = torch.tensor([sample["label"] for sample in samples], dtype=torch.long)
    return SplitData(inputs, labels, texts)


@functools.lru_cache(maxsize=4)
def generate(name: str, seed: int, train_samples: int = 0) -> TaskData:
    """Build the train/test splits of an embedded task; the same seed gives the same data.

    `train_samples` (0: `TRAIN_SIZE`) sizes the training split, e.g. for a federation of 1,000 clients.
    Whatever it is, the test split and the first training samples are the default task's: samples
    beyond `TRAIN_SIZE` come from a second stream of the seed, so a larger task only adds to it."""
    _, make_sample = _GENERATORS[name]
    train_samples = train_samples or TRAIN_SIZE
    rng = np.random.default_rng(seed)
    train = [make_sample(rng) for _ in range(TRAIN_SIZE)][:train_samples]
    test = [make_sample(rng) for _ in range(TEST_SIZE)]
    more = np.random.default_rng([seed, EXTRA_TRAIN_STREAM])
    train += [make_sample(more) for _ in range(train_samples - len(train))]
    return TaskData(train=_split(train), test=_split(test))


def pretraining_split(name: str, seed: int, samples: int) -> SplitData:
    """Samples of an embedded task for pretraining its encoder (`mpsl_flower.models.embedded_pretraining`).

    They come from a stream of the seed of their own, so they are none of the samples a run trains or
    tests on, as a pretrained encoder has not seen the fine-tuning data."""
    _, make_sample = _GENERATORS[name]
    rng = np.random.default_rng([seed, PRETRAINING_STREAM])
    return _split([make_sample(rng) for _ in range(samples)])
