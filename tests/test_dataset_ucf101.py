"""UCF101 loader on a tiny dataset in the official layout: real .avi files (MPEG-4 + MP3), real split lists."""

from __future__ import annotations

import json

import pytest
import torch
from support.fixtures_video import corrupt_video, write_ucf101

from mpsl_flower.models.tokenizers import ImageTokenizer
from tasks.datasets import kinetics_sounds, ucf101
from tasks.preprocess import DONE_FILE, SKIPPED_FILE, DatasetError, build_split
from tasks.spec import LATE_FUSION, RandomMoment


def _class_of(sample) -> str:
    return sample.clip.split("/UCF-101/")[1].split("/")[0]


def test_the_task_is_a_random_moments_frame_and_the_originals_10_255_s_of_audio_in_late_fusion():
    spec = ucf101.SPEC
    assert spec.augmentation == RandomMoment() and kinetics_sounds.SPEC.augmentation == spec.augmentation
    assert (spec.augmentation.brightness, spec.augmentation.saturation) == (0.2, 0.2)
    assert (spec.name, spec.num_classes, spec.fusion) == ("ucf101", 51, LATE_FUSION)
    assert spec.streams == ("image", "audio") and spec.readout == (("image", 0, "image"), ("audio", 0, "audio"))
    assert spec.image.size == 224 and (spec.audio.num_frames, spec.audio.num_mel_bins) == (1024, 128)
    assert spec.image.normalisation == "none"  # the original's frame transform ends in ToTensor, no Normalize
    assert kinetics_sounds.SPEC.image == spec.image
    tokenizer = ImageTokenizer(spec.image, 96, 16)
    assert tokenizer.mean.abs().sum() == 0 and (tokenizer.std == 1).all()
    assert spec.audio.num_patches == 1212 and spec.audio.patch_grid == (101, 12)
    assert [a.unpack_to for a in ucf101.ARCHIVES] == ["ucf101", "ucf101"]


def test_the_originals_51_classes_with_sound_are_kept_and_labelled_in_sorted_order(tmp_path):
    assert len(ucf101.AUDIO_CLASSES) == 51 and list(ucf101.AUDIO_CLASSES) == sorted(ucf101.AUDIO_CLASSES)
    assert "Archery" in ucf101.AUDIO_CLASSES and "Punch" not in ucf101.AUDIO_CLASSES
    facts = write_ucf101(tmp_path)
    splits = ucf101.samples(tmp_path)
    labels = {name: ucf101.AUDIO_CLASSES.index(name) for name in facts["audio_classes"]}
    assert labels["HammerThrow"] < labels["Hammering"]  # Python's sorted, not classInd's order
    for split in ("train", "test"):
        assert [s.clip for s in splits[split]] == [str(path) for path in facts[split]]
        assert [s.label for s in splits[split]] == [labels[_class_of(s)] for s in splits[split]]
    assert len(splits["train"]) == 12 and len(splits["test"]) == 8
    assert {_class_of(s) for s in splits["train"] + splits["test"]} == set(labels)  # JumpingJack, Punch left out
    assert splits["test"][0].clip.endswith("ucf101/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")


def test_a_split_caches_each_videos_moments_and_draws_224_pixel_frames_with_their_fbanks(tmp_path):
    facts = write_ucf101(tmp_path)
    split = build_split(ucf101.SPEC, ucf101.samples(tmp_path)["train"], tmp_path / "cache", "train")
    assert split.inputs["image"].shape == (12, 3, 3, 256, 341) and split.inputs["fbank"].shape == (12, 3, 1024, 128)
    label = {name: ucf101.AUDIO_CLASSES.index(name) for name in facts["audio_classes"]}
    assert split.labels.tolist() == [label[name] for name in facts["audio_classes"] for _ in range(3)]
    batch = split.select([0, 3, 6, 9]).inputs  # no generator: the middle moment, centre crop
    assert batch["image"].shape == (4, 3, 224, 224) and batch["image"].dtype == torch.uint8
    assert batch["fbank"].shape == (4, 1024, 128)
    for image, clip in zip(batch["image"], facts["audio_classes"]):
        assert (image.float().mean(dim=(1, 2)) - torch.tensor(facts["colours"][clip])).abs().max() < 12
    # 2.5 s of tone: the loudest mel bin rises with the class's tone (300, 500, 700, 900 Hz); then padding.
    peaks = batch["fbank"][:, :200].float().mean(dim=1).argmax(dim=1).tolist()
    assert peaks == sorted(peaks) and len(set(peaks)) == 4
    # As the original: the waveform is zero-padded to 10.255 s, so the fbank's 1,024 frames end in silence,
    # not normalised (float32 fbanks: the padding's frames agree to float32 rounding).
    assert batch["fbank"][:, 300:].float().std() < 1e-5 and (batch["fbank"][:, 300, 0] < -15).all()


def test_a_corrupt_or_missing_video_is_skipped_and_counted(tmp_path, caplog):
    facts = write_ucf101(tmp_path)
    corrupt_video(facts["train"][0])
    facts["train"][4].unlink()
    samples = ucf101.samples(tmp_path)["train"]
    assert len(samples) == 12
    split = build_split(ucf101.SPEC, samples, tmp_path / "cache", "train")
    assert len(split) == 10 and split.inputs["fbank"].shape[0] == 10
    (folder,) = (tmp_path / "cache" / "ucf101").iterdir()
    assert json.loads((folder / DONE_FILE).read_text()) == {"kept": 10, "skipped": 2}
    listed = (folder / SKIPPED_FILE).read_text()
    assert str(facts["train"][0]) in listed and str(facts["train"][4]) in listed
    assert "skipped 2 of 12 samples" in caplog.text


@pytest.mark.parametrize("missing", ["ucfTrainTestlist/classInd.txt", "ucfTrainTestlist/testlist01.txt", "UCF-101"])
def test_a_missing_release_file_names_itself_and_the_download_command(tmp_path, missing):
    write_ucf101(tmp_path)
    path = tmp_path / "ucf101" / missing
    if path.is_dir():
        path.rename(tmp_path / "elsewhere")
    else:
        path.unlink()
    with pytest.raises(
        DatasetError, match=rf"ucf101/{missing} is missing; run `python -m tasks.download ucf101 --data-dir"
    ):
        ucf101.samples(tmp_path)
