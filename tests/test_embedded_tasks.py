"""The embedded tasks: deterministic, multimodal by construction, learnable far above chance."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from mpsl_flower.config import ConfigError, parse_run_config
from mpsl_flower.models.tokenizers import ClientModel
from tasks import embedded
from tasks.registry import TASKS, load_task_data


def test_same_seed_gives_the_same_data_and_another_seed_other_data():
    first = embedded.generate.__wrapped__("shapes-qa", 7)
    again = embedded.generate.__wrapped__("shapes-qa", 7)
    other = embedded.generate.__wrapped__("shapes-qa", 8)
    assert torch.equal(first.train.inputs["image"], again.train.inputs["image"])
    assert torch.equal(first.test.labels, again.test.labels)
    assert not torch.equal(first.train.inputs["image"], other.train.inputs["image"])


def test_splits_have_a_few_thousand_samples_and_every_class():
    data = load_task_data("shapes-qa", 2024)
    assert len(data.train) == embedded.TRAIN_SIZE and len(data.test) == embedded.TEST_SIZE
    assert set(data.train.labels.tolist()) == set(range(TASKS["shapes-qa"].num_classes))


def test_embedded_train_samples_only_adds_to_or_cuts_the_default_task():
    default = load_task_data("shapes-qa", 2024)
    larger = load_task_data("shapes-qa", 2024, embedded_train_samples=embedded.TRAIN_SIZE + 300)
    smaller = load_task_data("shapes-qa", 2024, embedded_train_samples=500)
    assert len(larger.train) == embedded.TRAIN_SIZE + 300 and len(smaller.train) == 500
    assert torch.equal(larger.train.inputs["image"][: embedded.TRAIN_SIZE], default.train.inputs["image"])
    assert torch.equal(smaller.train.labels, default.train.labels[:500])
    assert torch.equal(larger.test.inputs["image"], default.test.inputs["image"])  # the test split never moves
    added = larger.train.inputs["image"][embedded.TRAIN_SIZE :]
    assert not any(torch.equal(added[0], image) for image in default.train.inputs["image"][:300])


def test_embedded_train_samples_is_refused_for_a_real_dataset():
    with pytest.raises(ConfigError, match="embedded-train-samples=100 sizes the embedded tasks"):
        parse_run_config({"dataset": "coco-qa", "embedded-train-samples": 100})
    assert parse_run_config({"embedded-train-samples": 100}).embedded_train_samples == 100


def _text_only_accuracy(data) -> float:
    """Best accuracy of any rule that sees only the question: majority answer per question."""
    answers = defaultdict(Counter)
    for question, label in zip(data.train.texts, data.train.labels.tolist()):
        answers[question][label] += 1
    guess = {question: counts.most_common(1)[0][0] for question, counts in answers.items()}
    hits = [guess.get(q) == y for q, y in zip(data.test.texts, data.test.labels.tolist())]
    return float(np.mean(hits))


def test_the_question_alone_cannot_answer_and_chance_is_low():
    data = load_task_data("shapes-qa", 2024)
    chance = Counter(data.test.labels.tolist()).most_common(1)[0][1] / len(data.test)
    assert chance < 0.2
    assert _text_only_accuracy(data) < 0.4


def test_the_image_alone_cannot_answer_because_questions_differ():
    """Both question types occur, with answers from disjoint vocabularies (colours vs shapes)."""
    data = load_task_data("shapes-qa", 2024)
    colour_answers = set(range(len(embedded.COLORS)))
    labels = set(data.train.labels.tolist())
    assert labels & colour_answers and labels - colour_answers


def test_audio_variant_tokenizes_fbanks_into_patches_and_keeps_two_streams():
    spec = TASKS["shapes-av"]
    data = load_task_data("shapes-av", 2024)
    assert tuple(data.train.inputs["fbank"].shape[1:]) == (spec.audio.num_frames, 128)
    model = ClientModel(spec, dim=96, patch=8, pre_layer_norm=True)
    shapes = model.stream_shapes()
    assert set(shapes) == {"image", "audio"}
    assert shapes["audio"][0] == spec.audio.num_patches + 1


def test_tone_pitch_moves_the_fbank_energy_up_the_mel_axis():
    rng = np.random.default_rng(0)
    spectra = np.stack([embedded.tone_fbank(hz, rng).mean(axis=0) for hz in embedded.TONE_HZ])
    peaks = (spectra - spectra.mean(axis=0)).argmax(axis=1).tolist()  # the bin each tone lifts most
    assert peaks == sorted(peaks) and len(set(peaks)) == len(peaks)
