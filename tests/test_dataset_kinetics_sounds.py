"""Kinetics-Sounds: arranging a tiny Kinetics-400 download (official layout, real .mp4 files) and loading it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_video import KINETICS_SOUNDS_CLASSES, corrupt_video, write_kinetics400

from tasks.datasets import kinetics_sounds
from tasks.media import has_audio
from tasks.preprocess import DONE_FILE, DatasetError, build_split
from tasks.spec import LATE_FUSION

REPO = Path(__file__).resolve().parents[1]


def _arranged(data_dir: Path) -> dict[str, list[str]]:
    return {
        folder.name: sorted(p.name for p in folder.iterdir()) for folder in (data_dir / "kinetics-sounds").iterdir()
    }


def _files(folder: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def test_the_task_has_the_30_classes_and_the_ucf101_input_shapes():
    spec = kinetics_sounds.SPEC
    assert (spec.name, spec.num_classes, spec.fusion) == ("kinetics-sounds", 30, LATE_FUSION)
    assert len(set(kinetics_sounds.CLASSES)) == 30 and set(KINETICS_SOUNDS_CLASSES) <= set(kinetics_sounds.CLASSES)
    assert spec.readout == (("image", 0, "image"), ("audio", 0, "audio"))
    assert spec.image.size == 224 and spec.audio.num_frames == 1024
    assert not hasattr(kinetics_sounds, "ARCHIVES")  # Kinetics-400 is downloaded by hand


def test_arranging_copies_exactly_the_kinetics_sounds_videos_and_keeps_the_originals(tmp_path):
    facts = write_kinetics400(tmp_path)
    originals = _files(tmp_path / "k400")
    report = kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    expected = {name.replace(" ", "_"): sorted(videos) for name, videos in facts["videos"].items()}
    assert _arranged(tmp_path) == expected  # no abseiling/, no air_drumming/
    assert report.copied == 15 and report.present == 0 and len(report.missing) == facts["missing"] == 3
    assert all("/k400/train/" in path for path in report.missing)
    assert _files(tmp_path / "k400") == originals  # copied, never moved or touched
    (replaced,) = facts["replaced"]
    assert has_audio(
        tmp_path / "kinetics-sounds" / "chopping_wood" / replaced
    )  # the replacement, not the broken download


def test_arranging_again_copies_nothing_and_reports_the_missing_videos(tmp_path):
    write_kinetics400(tmp_path)
    kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    arranged = _files(tmp_path / "kinetics-sounds")
    Path(min(arranged)).unlink()  # lost since: copied again
    command = [sys.executable, "-m", "tasks.datasets.kinetics_sounds", "--data-dir", str(tmp_path)]
    run = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True
    )
    assert "1 videos copied, 14 already there, 3 listed videos missing from the download" in run.stdout
    assert run.stdout.count("  missing: ") == 3
    assert _files(tmp_path / "kinetics-sounds") == arranged  # same files, same times: the cache keys stay valid


def test_the_split_is_a_seeded_80_20_split_of_each_class(tmp_path):
    facts = write_kinetics400(tmp_path, per_split={"train": 6, "val": 2, "test": 2})
    kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    splits = kinetics_sounds.samples(tmp_path)
    assert splits == kinetics_sounds.samples(tmp_path)  # the same split on every call
    for name, videos in facts["videos"].items():
        label = kinetics_sounds.CLASSES.index(name)
        chosen = {split: {Path(s.frame[0]).name for s in splits[split] if s.label == label} for split in splits}
        assert len(chosen["train"]) == 8 and len(chosen["test"]) == 2
        assert chosen["train"] | chosen["test"] == set(videos)
    assert {s.label for s in splits["train"]} == {kinetics_sounds.CLASSES.index(name) for name in facts["videos"]}
    sample = splits["test"][0]
    assert sample.frame == (sample.audio[0], None) and sample.audio[1:] == (None, 10.24)
    assert "/kinetics-sounds/" in sample.frame[0]


def test_a_split_decodes_and_a_corrupt_video_is_skipped_and_counted(tmp_path, caplog):
    write_kinetics400(tmp_path)
    kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    samples = kinetics_sounds.samples(tmp_path)["train"]
    corrupt_video(Path(samples[1].frame[0]))
    split = build_split(kinetics_sounds.SPEC, samples, tmp_path / "cache", "train")
    assert len(samples) == 12 and len(split) == 11
    assert split.inputs["image"].shape == (11, 3, 224, 224) and split.inputs["fbank"].shape == (11, 1024, 128)
    assert split.select([0]).inputs["image"].dtype == torch.uint8
    (folder,) = (tmp_path / "cache" / "kinetics-sounds").iterdir()
    assert json.loads((folder / DONE_FILE).read_text()) == {"kept": 11, "skipped": 1}
    assert "skipped 1 of 12 samples" in caplog.text


def test_a_missing_annotation_file_names_itself_and_the_downloader(tmp_path):
    write_kinetics400(tmp_path, per_split={"train": 1})
    (tmp_path / "k400" / "annotations" / "val.csv").unlink()
    with pytest.raises(
        DatasetError, match=r"k400/annotations/val.csv is missing; download Kinetics-400 with https://github.com/cvdf"
    ):
        kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    assert not (tmp_path / "kinetics-sounds").exists()


def test_loading_before_arranging_says_which_command_to_run(tmp_path):
    write_kinetics400(tmp_path, per_split={"train": 1})
    with pytest.raises(
        DatasetError, match=r"kinetics-sounds is missing; .* run `python -m tasks.datasets.kinetics_sounds --data-dir"
    ):
        kinetics_sounds.samples(tmp_path)
