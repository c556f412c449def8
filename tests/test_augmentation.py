"""Inputs drawn at every step as the original draws them: UCF101/Kinetics-Sounds moments, MELD placement.

Real video and audio files (the fixtures' codecs), decoded into the real cache, drawn through
the views of `tasks.augment` with seeded generators.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.fixtures_meld import TONE_SECONDS, write_meld
from support.fixtures_video import COLOURS, write_ucf101, write_video

from mpsl_flower.config import parse_run_config
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.split.evaluation import evaluate, evaluation_draws
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.schedule import step_batch
from tasks.audio import FRAMES_PER_SECOND, waveform_to_fbank
from tasks.augment import MomentView, input_generator
from tasks.datasets import meld, ucf101
from tasks.preprocess import Sample, build_split
from tasks.spec import ImageInput, RandomMoment

SILENCE = waveform_to_fbank(torch.zeros(1, 16_000), 16_000, 100, original=True)[0]  # zero padding's frames
LONG_SECONDS = 12.0  # three colours of 4 s; 300 Hz for 6 s, then 900 Hz
RED, GREEN, BLUE = COLOURS[:3]


@pytest.fixture(scope="module")
def long_video_split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long-video")
    video = write_video(folder / "long.avi", [RED, GREEN, BLUE], [300.0, 900.0], seconds=LONG_SECONDS)
    return build_split(ucf101.SPEC, [Sample(0, clip=str(video))], folder / "cache", "train")


def _tone_switch_frame(fbank: torch.Tensor) -> int:
    """The first fbank frame from which the loudest mel bin is the 900 Hz tone's for 10 frames
    (the codec's start-up frames aside)."""
    peaks = fbank.float().argmax(dim=1)
    high = peaks > int(peaks[10:50].mode().values) + 3
    return next(i for i in range(10, len(high)) if high[i : i + 10].all())


def _sound_span(fbank: torch.Tensor) -> tuple[int, int]:
    """First and last fbank frames that are not the zero padding's silence."""
    loud = ((fbank.float() - SILENCE).abs().amax(dim=1) > 1).nonzero()
    return int(loud[0]), int(loud[-1])


def test_the_cache_holds_frames_and_centred_audio_windows_at_three_stratified_moments(long_video_split):
    frames = long_video_split.inputs["image"].take([0])[0]  # [moment, 3, 256, 341]
    fbanks = long_video_split.inputs["fbank"].take([0])[0]  # [moment, 1024, 128]
    colours = [frame.float().mean(dim=(1, 2)) for frame in frames]
    for colour, expected in zip(colours, [RED, GREEN, BLUE]):  # moments at 2, 6 and 10 s
        assert (colour - torch.tensor(expected)).abs().max() < 12
    # The 10.255 s window centred on each moment, cut at the video's ends and zero-padded at its end:
    # 2 s -> [0, 7.13], 6 s -> [0.87, 11.13], 10 s -> [4.87, 12]; the tone changes at 6 s.
    half = 1024 * 0.01 / 2 + 0.0015
    for fbank, moment, start in zip(fbanks, (2, 6, 10), (0.0, 6 - half, 10 - half)):
        assert abs(_tone_switch_frame(fbank) - (6 - start) * FRAMES_PER_SECOND) <= 3
        heard = min(LONG_SECONDS, moment + half) - start
        assert abs(_sound_span(fbank)[1] - heard * FRAMES_PER_SECOND) <= 3


def test_each_step_draws_a_moment_whose_frame_and_fbank_belong_together(long_video_split):
    fbanks = long_video_split.inputs["fbank"].take([0])[0]
    drawn = set()
    for step in range(24):
        batch = long_video_split.select([0], input_generator(7, 0, 0, step)).inputs
        assert batch["image"].shape == (1, 3, 224, 224) and batch["fbank"].shape == (1, 1024, 128)
        moment = int(batch["image"][0].float().mean(dim=(1, 2)).argmax())  # red, green or blue: moment 0, 1, 2
        assert torch.equal(batch["fbank"][0], fbanks[moment])
        drawn.add(moment)
        again = long_video_split.select([0], input_generator(7, 0, 0, step)).inputs
        assert all(torch.equal(batch[name], again[name]) for name in batch)  # the same key, the same inputs
    assert drawn == {0, 1, 2}
    deterministic = long_video_split.select([0]).inputs
    assert int(deterministic["image"][0].float().mean(dim=(1, 2)).argmax()) == 1  # the middle moment
    assert torch.equal(deterministic["fbank"][0], fbanks[1])


def _gradient_frames() -> torch.Tensor:
    """One moment of 256 x 341 whose red channel is x // 2 and green channel is y: a crop tells its place."""
    y, x = torch.meshgrid(torch.arange(256), torch.arange(341), indexing="ij")
    return torch.stack([x // 2, y, torch.full_like(x, 128)]).to(torch.uint8)[None, None]


def test_frames_are_cropped_anywhere_and_flipped_half_of_the_time_as_torchvision_would():
    still = RandomMoment(moments=1, brightness=0.0, saturation=0.0)  # no jitter: the pixels show the crop
    view = MomentView(still, ImageInput(size=224))
    columns = {"image": _gradient_frames(), "fbank": torch.zeros(1, 1, 4, 2)}
    tops, lefts, flips = set(), set(), 0
    for step in range(200):
        image = view.inputs(columns, np.array([0]), input_generator(step))["image"][0].int()
        top = int(image[1, 0, 0])
        assert torch.equal(image[1, :, 0], torch.arange(top, top + 224, dtype=torch.int32))
        row = image[0, 0]
        flipped = bool(row[0] > row[-1])
        flips += flipped
        lefts.add(int(row[-1 if flipped else 0]) * 2)
        tops.add(top)
    assert min(tops) <= 2 and max(tops) >= 30 and max(tops) <= 32  # RandomCrop(224) of 256 rows
    assert min(lefts) <= 4 and max(lefts) >= 112 and max(lefts) <= 117  # ... and of 341 columns
    assert 70 < flips < 130
    centre = view.inputs(columns, np.array([0]), None)["image"][0].int()
    assert (int(centre[1, 0, 0]), int(centre[0, 0, 0])) == (16, 58 // 2)  # no generator: the centre crop


def test_brightness_and_saturation_jitter_stay_within_the_originals_0_2():
    view = MomentView(RandomMoment(moments=1, saturation=0.0), ImageInput(size=224))
    grey = torch.full((1, 1, 3, 256, 341), 100, dtype=torch.uint8)
    ratios = []
    for step in range(100):
        image = view.inputs({"image": grey, "fbank": torch.zeros(1, 1, 4, 2)}, np.array([0]), input_generator(step))
        values = image["image"][0].unique()
        assert len(values) == 1  # brightness scales every pixel alike
        ratios.append(float(values[0]) / 100)
    assert 0.8 <= min(ratios) < 0.85 and 1.15 < max(ratios) <= 1.2
    colourful = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 1, 3, 1, 1).expand(1, 1, 3, 256, 341)
    saturated = MomentView(RandomMoment(moments=1, brightness=0.0), ImageInput(size=224))
    spreads, columns = set(), {"image": colourful, "fbank": torch.zeros(1, 1, 4, 2)}
    for step in range(50):
        pixel = saturated.inputs(columns, np.array([0]), input_generator(step))
        spreads.add(int(pixel["image"][0, 0, 0, 0]) - int(pixel["image"][0, 2, 0, 0]))
    assert min(spreads) >= 150 * 0.8 - 2 and max(spreads) <= 150 * 1.2 + 2 and len(spreads) > 10


@pytest.fixture(scope="module")
def meld_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("meld-aug")
    written = write_meld(data_dir)
    splits = meld.samples(data_dir)
    cache = data_dir / "cache"
    return written, {split: build_split(meld.SPEC, splits[split], cache, split) for split in ("train", "test")}


def test_meld_places_the_clip_at_a_random_offset_in_the_766_frame_window(meld_data):
    written, splits = meld_data
    test = splits["test"]
    spans = []
    for step in range(12):
        fbank = test.select([3], input_generator(1, "test", step)).inputs["fbank"][0]
        assert fbank.shape == (766, 128)
        spans.append(_sound_span(fbank))
    heard = round(min(written["test"][3]["seconds"], 2.56) * FRAMES_PER_SECOND)
    assert all(abs(last - first - heard) <= 3 for first, last in spans)  # the whole clip, wherever it lies
    assert len({first for first, _ in spans}) > 6 and max(first for first, _ in spans) > 100
    assert _sound_span(test.select([3]).inputs["fbank"][0])[0] <= 1  # no generator: at the window's start


def test_meld_training_clips_start_at_a_random_point_and_test_clips_at_their_start(meld_data):
    written, splits = meld_data
    long_row = next(i for i, row in enumerate(written["train"]) if row["seconds"] == 4.0)
    tone = round(TONE_SECONDS * FRAMES_PER_SECOND)

    def tone_frames(split, row, key) -> int:
        """How many frames of the clip's first-second tone are in the drawn fbank."""
        fbank = split.select([row], input_generator(*key)).inputs["fbank"][0].float()
        first, _ = _sound_span(fbank)
        peaks = fbank.argmax(dim=1)
        return int((peaks[first : first + tone + 20] == peaks[first + 5]).sum())

    trained = {tone_frames(splits["train"], long_row, (2, 0, 0, step)) for step in range(16)}
    assert min(trained) < tone - 20 and len(trained) > 4  # a 4 s clip starts anywhere in its first 1.44 s
    test_row = next(i for i, row in enumerate(written["test"]) if row["seconds"] == 4.0)
    tested = {tone_frames(splits["test"], test_row, (2, "test", step)) for step in range(8)}
    assert all(abs(frames - tone) <= 4 for frames in tested)  # test: always from the clip's start


def test_a_step_and_its_recomputation_draw_the_same_inputs_and_test_draws_follow_the_config(tmp_path):
    write_ucf101(tmp_path / "data")
    run_config = {
        "dataset": "ucf101",
        "torch-data-dir": str(tmp_path / "data"),
        "pre-processors-cache-dir": str(tmp_path / "cache"),
        "device": "cpu",
    }
    config = parse_run_config(run_config)
    data = load_inputs(config)
    first, again = (step_batch(data.train, 4, config.seed, 1, 2, 0) for _ in range(2))
    assert all(torch.equal(first.inputs[name], again.inputs[name]) for name in first.inputs)
    other_step = step_batch(data.train, 4, config.seed, 1, 2, 1)
    assert not torch.equal(first.inputs["image"], other_step.inputs["image"])

    model = new_full_model(config)
    after_one, after_two = (
        evaluate(model.client, model.server, data.test, 3, evaluation_draws(config, epoch)) for epoch in (1, 2)
    )
    assert after_one == evaluate(model.client, model.server, data.test, 3, evaluation_draws(config, 1))
    assert after_one["test_loss"] != after_two["test_loss"]  # each evaluation draws anew, as the original's
    fixed = parse_run_config({**run_config, "test-time-augmentation": False})
    assert evaluation_draws(fixed, 1) is None
    deterministic = evaluate(model.client, model.server, data.test, 3, evaluation_draws(fixed, 1))
    assert deterministic == evaluate(model.client, model.server, data.test, 3, evaluation_draws(fixed, 2))
