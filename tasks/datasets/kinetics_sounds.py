"""Kinetics-Sounds (Arandjelović & Zisserman, 2017): the 30 Kinetics-400 classes that can be heard.

Kinetics-400 has no automatic download here: it is ~450 GB of YouTube clips that you fetch with
https://github.com/cvdfoundation/kinetics-dataset into `<torch-data-dir>/k400/`:

    k400/{train,val,test}/<youtube_id>_<start:06d>_<end:06d>.mp4
    k400/replacement/replacement_for_corrupted_k400/<...>.mp4   good copies of ~1,400 broken train videos
    k400/annotations/{train,val,test}.csv                        label,youtube_id,time_start,time_end,split

Then arrange the 30 classes once (copies, never moves: k400/ stays whole for other uses):

    python -m tasks.datasets.kinetics_sounds --data-dir <torch-data-dir>

which gives the layout this loader reads:

    kinetics-sounds/<class, spaces as _>/<youtube_id>_<start:06d>_<end:06d>.mp4

Kinetics-Sounds has no official split; as in the paper (15,376 train / 3,844 test) the videos of
each class are split 80/20 at random, with a fixed seed (`SEED`) so every run and every client
sees the same split. The seed mixes in the class name, so one class's split does not depend on
how many videos another class has.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from tasks.datasets.ucf101 import frame_and_audio_sample, frame_and_audio_spec
from tasks.preprocess import DatasetError, Sample, user_path

logger = logging.getLogger(__name__)
FOLDER = "kinetics-sounds"
K400 = "k400"
K400_DOWNLOADER = "https://github.com/cvdfoundation/kinetics-dataset"
REPLACEMENTS = Path("replacement") / "replacement_for_corrupted_k400"
ANNOTATED_SPLITS = ("train", "val", "test")
SEED = 2024
TEST_FRACTION = 0.2
LISTED_MISSING = 5
CLASSES = (
    "blowing nose", "bowling", "chopping wood", "dribbling basketball", "laughing", "mowing lawn",
    "playing accordion", "playing bagpipes", "playing bass guitar", "playing clarinet", "playing drums",
    "playing guitar",
    "playing harmonica", "playing keyboard", "playing organ", "playing piano", "playing saxophone", "playing trombone",
    "playing trumpet", "playing violin", "playing xylophone", "ripping paper", "shoveling snow", "shuffling cards",
    "singing", "stomping grapes", "tap dancing", "tapping guitar", "tapping pen", "tickling",
)  # fmt: skip

SPEC = frame_and_audio_spec(
    "kinetics-sounds",
    "Kinetics-Sounds (30 Kinetics-400 classes): video frame + audio, classification (late fusion)",
    len(CLASSES),
)


def class_folder(name: str) -> str:
    """A class's folder under kinetics-sounds/: its Kinetics label with spaces as underscores."""
    return name.replace(" ", "_")


def arrange_command(data_dir: Path) -> str:
    return f"python -m tasks.datasets.kinetics_sounds --data-dir {data_dir}"


@dataclass
class Arranged:
    """What an arranging run did: videos copied now, already in place, and listed but not downloaded."""

    copied: int = 0
    present: int = 0
    missing: list[str] = field(default_factory=list)


def listed_videos(k400: Path) -> list[tuple[str, str, Path]]:
    """(class, file name, file to copy) for every annotated Kinetics-Sounds video.

    A video in the replacement folder wins over the download of the same YouTube id, which is broken.
    """
    replacements = {path.name[:11]: path for path in (k400 / REPLACEMENTS).glob("*.mp4")}  # keyed by YouTube id
    listed = []
    for split in ANNOTATED_SPLITS:
        path = k400 / "annotations" / f"{split}.csv"
        if not path.is_file():
            raise DatasetError(
                f"Kinetics-Sounds: {path} is missing; download Kinetics-400 with {K400_DOWNLOADER} into {k400}"
            )
        with open(path, newline="", encoding="utf-8") as rows:
            for row in csv.DictReader(rows):
                if row["label"] in CLASSES:
                    start, end = (int(float(row[column])) for column in ("time_start", "time_end"))
                    name = f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
                    listed.append((row["label"], name, replacements.get(row["youtube_id"], k400 / split / name)))
    return listed


def _copy(source: Path, target: Path) -> bool:
    """Copy unless the same file is already there; via a temporary name, so a cut-off copy is never taken as a video."""
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.copy2(source, partial)  # keeps the modification time, which the preprocessing cache key reads
    os.replace(partial, target)
    return True


def arrange(k400: Path, data_dir: Path) -> Arranged:
    """Copy the annotated videos of the 30 classes from `k400` into `<data_dir>/kinetics-sounds/<class>/`."""
    report = Arranged()
    for label, name, source in tqdm(listed_videos(k400), desc="arranging kinetics-sounds", unit="video", mininterval=2):
        if not source.is_file():
            report.missing.append(str(source))
        elif _copy(source, data_dir / FOLDER / class_folder(label) / name):
            report.copied += 1
        else:
            report.present += 1
    return report


def _split_class(videos: list[Path], name: str) -> tuple[list[Path], list[Path]]:
    """(train, test) of one class: a seeded shuffle of its sorted videos, the first 20 % for test."""
    shuffled = sorted(videos)
    random.Random(f"{SEED}:{name}").shuffle(shuffled)
    test_count = round(len(shuffled) * TEST_FRACTION)
    return shuffled[test_count:], shuffled[:test_count]


def samples(data_dir: Path) -> dict[str, list[Sample]]:
    root = data_dir / FOLDER
    if not root.is_dir():
        raise DatasetError(
            f"Kinetics-Sounds: {root} is missing; download Kinetics-400 with {K400_DOWNLOADER} into {data_dir / K400}, "
            f"then run `{arrange_command(data_dir)}`"
        )
    result: dict[str, list[Sample]] = {"train": [], "test": []}
    empty = []
    for label, name in enumerate(CLASSES):
        videos = list((root / class_folder(name)).glob("*.mp4"))
        if not videos:
            empty.append(name)
        for split, chosen in zip(("train", "test"), _split_class(videos, name)):
            result[split] += [frame_and_audio_sample(video, label) for video in chosen]
    if len(empty) == len(CLASSES):
        raise DatasetError(
            f"Kinetics-Sounds: {root} holds no class folder with videos; run `{arrange_command(data_dir)}`"
        )
    if empty:
        logger.warning(
            "Kinetics-Sounds: %d of %d classes have no videos: %s", len(empty), len(CLASSES), ", ".join(empty)
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Copy the 30 Kinetics-Sounds classes out of a Kinetics-400 download.")
    parser.add_argument("--data-dir", type=user_path, required=True, help="the folder you pass as torch-data-dir")
    parser.add_argument("--k400-dir", type=user_path, help="the Kinetics-400 download (default: <data-dir>/k400)")
    args = parser.parse_args()
    data_dir = args.data_dir.expanduser().resolve()
    report = arrange((args.k400_dir or data_dir / K400).expanduser().resolve(), data_dir)
    print(
        f"Kinetics-Sounds in {data_dir / FOLDER}: {report.copied} videos copied, {report.present} already there, "
        f"{len(report.missing)} listed videos missing from the download"
    )
    for path in report.missing[:LISTED_MISSING]:
        print(f"  missing: {path}")
    print(f"run with torch-data-dir='{data_dir}' dataset='kinetics-sounds'")


if __name__ == "__main__":
    main()
