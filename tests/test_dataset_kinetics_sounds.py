"""Kinetics-Sounds: the paper's exact split, copied out of a tiny Kinetics-400 download (real .mp4 files)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from support.fixtures_video import corrupt_video, write_kinetics400

from tasks.datasets import kinetics_sounds
from tasks.preprocess import DONE_FILE, DatasetError, build_split
from tasks.spec import LATE_FUSION

REPO = Path(__file__).resolve().parents[1]


def _files(folder: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def _arranged(data_dir: Path) -> set[str]:
    root = data_dir / "kinetics-sounds"
    return {str(path.relative_to(root)) for path in root.rglob("*.mp4")}


def test_the_split_is_the_papers_15376_train_and_3844_test_videos_of_30_classes():
    spec = kinetics_sounds.SPEC
    assert (spec.name, spec.num_classes, spec.fusion) == ("kinetics-sounds", 30, LATE_FUSION)
    assert spec.readout == (("image", 0, "image"), ("audio", 0, "audio"))
    assert spec.image.size == 224 and spec.audio.num_frames == 1024
    assert Counter(video.split for video in kinetics_sounds.LISTED) == {"train": 15_376, "test": 3_844}
    assert len({video.path for video in kinetics_sounds.LISTED}) == 19_220
    assert all(
        video.path.split("/")[0] == kinetics_sounds.CLASS_FOLDERS[video.label] for video in kinetics_sounds.LISTED
    )
    assert kinetics_sounds.CLASSES[16] == "blowing out candles" and len(set(kinetics_sounds.CLASSES)) == 30
    assert not hasattr(kinetics_sounds, "ARCHIVES")  # Kinetics-400 is downloaded by hand


def test_arranging_copies_exactly_the_listed_videos_and_keeps_the_originals(tmp_path):
    facts = write_kinetics400(tmp_path)
    originals = _files(tmp_path / "k400")
    report = kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    assert _arranged(tmp_path) == set(facts["videos"])  # the unlisted video is not copied
    assert report.copied == 12 and report.present == 0
    assert len(report.missing) == 19_220 - 12 and all("/k400/train/" in path for path in report.missing)
    assert _files(tmp_path / "k400") == originals  # copied, never moved or touched
    (replaced,) = facts["replaced"]
    (download,) = (tmp_path / "k400" / "train").rglob(Path(replaced).name)
    copied = (tmp_path / "kinetics-sounds" / replaced).read_bytes()
    assert copied == download.read_bytes()  # the train download, as the original copies it, not the replacement


def test_arranging_again_copies_nothing_and_reports_the_missing_videos(tmp_path):
    write_kinetics400(tmp_path)
    kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    arranged = _files(tmp_path / "kinetics-sounds")
    Path(min(arranged)).unlink()  # lost since: copied again
    command = [sys.executable, "-m", "tasks.datasets.kinetics_sounds", "--data-dir", str(tmp_path)]
    run = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True
    )
    assert "1 videos copied, 11 already there, 19208 listed videos missing from the download" in run.stdout
    assert run.stdout.count("  missing: ") == kinetics_sounds.LISTED_MISSING
    assert _files(tmp_path / "kinetics-sounds") == arranged  # same files, same times: the cache keys stay valid


def test_samples_follow_the_list_and_a_first_run_copies_the_videos_itself(tmp_path, caplog):
    facts = write_kinetics400(tmp_path)
    with caplog.at_level(logging.INFO):
        splits = kinetics_sounds.samples(tmp_path)  # nothing arranged yet: it arranges from k400/
    assert _arranged(tmp_path) == set(facts["videos"])
    root = tmp_path / "kinetics-sounds"
    for split in ("train", "test"):
        got = {str(Path(s.clip).relative_to(root)): s.label for s in splits[split]}
        assert got == {path: facts["labels"][path] for path, chosen in facts["videos"].items() if chosen == split}
    assert len(splits["train"]) == 9 and len(splits["test"]) == 3
    assert "19208 of the paper's 19220 videos are not in" in caplog.text


def test_a_split_decodes_and_a_corrupt_video_is_skipped_and_counted(tmp_path, caplog):
    write_kinetics400(tmp_path, replaced=0)  # no broken download but the one corrupted below
    kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    samples = kinetics_sounds.samples(tmp_path)["train"]
    corrupt_video(Path(samples[1].clip))
    split = build_split(kinetics_sounds.SPEC, samples, tmp_path / "cache", "train")
    assert len(samples) == 9 and len(split) == 8
    assert split.inputs["image"].shape == (8, 3, 3, 256, 341) and split.inputs["fbank"].shape == (8, 3, 1024, 128)
    assert split.select([0]).inputs["image"].shape == (1, 3, 224, 224)
    (folder,) = (tmp_path / "cache" / "kinetics-sounds").iterdir()
    assert json.loads((folder / DONE_FILE).read_text()) == {"kept": 8, "skipped": 1}
    assert "skipped 1 of 9 samples" in caplog.text


def test_without_a_download_the_error_names_the_downloader_and_the_command(tmp_path):
    with pytest.raises(
        DatasetError,
        match=r"no listed video is in .*kinetics-dataset.* or run `python -m tasks.datasets.kinetics_sounds",
    ):
        kinetics_sounds.samples(tmp_path)
    with pytest.raises(
        DatasetError, match=r"k400/train is missing; download Kinetics-400 with https://github.com/cvdf"
    ):
        kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    assert not (tmp_path / "kinetics-sounds").exists()
