"""Kinetics-Sounds (Arandjelović & Zisserman, 2017): 30 Kinetics-400 classes that can be heard.

The split is the paper's, exactly as the original code defines it (the AV-CIL split): 15,376
train and 3,844 test videos of 30 classes, all from Kinetics-400's train part, listed with their
label ids in `assets/kinetics_sounds.json` (see `assets/README.md` for its source and licence).

Kinetics-400 has no automatic download here: it is ~450 GB of YouTube clips that you fetch with
https://github.com/cvdfoundation/kinetics-dataset into `<torch-data-dir>/k400/`:

    k400/train/<youtube_id>_<start:06d>_<end:06d>.mp4      (or k400/train/<class name>/<...>.mp4)

Only the train download is copied, as the original copies it: the downloader's good copies of
~1,400 broken videos (k400/replacement/replacement_for_corrupted_k400/) are not used, and a
listed video found only there counts as missing (the original stops with a missing file); a
broken copy is skipped and counted when decoded. The listed videos are copied (never moved:
k400/ stays whole for other uses) into the layout this loader reads, once; a run does it by
itself when it finds k400/ and no copy yet, as the original does, or do it beforehand (it
reports every listed video the download lacks):

    python -m tasks.datasets.kinetics_sounds --data-dir <torch-data-dir> [--k400-dir <k400>]

    kinetics-sounds/<class, spaces as _>/<youtube_id>_<start:06d>_<end:06d>.mp4

A listed video that is not there is left out with a warning that counts them: the split then
differs from the paper's.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from tasks.atomic import atomic_file
from tasks.datasets.ucf101 import frame_and_audio_spec
from tasks.preprocess import DatasetError, Sample, user_path

logger = logging.getLogger(__name__)
FOLDER = "kinetics-sounds"
K400 = "k400"
K400_DOWNLOADER = "https://github.com/cvdfoundation/kinetics-dataset"
REPLACEMENTS = Path("replacement") / "replacement_for_corrupted_k400"
LIST_FILE = Path(__file__).parent / "assets" / "kinetics_sounds.json"
LISTED_MISSING = 5
YOUTUBE_ID_LENGTH = 11
NUM_CLASSES = 30  # the classes of LIST_FILE


@dataclass(frozen=True)
class ListedVideo:
    """One video of the paper's split: `<class folder>/<file name>`, its label id and split."""

    path: str
    label: int
    split: str

    @property
    def name(self) -> str:
        return self.path.split("/", 1)[1]


@functools.cache
def _read_list() -> tuple[tuple[str, ...], tuple[ListedVideo, ...]]:
    """The class folders (by label id) and the paper's videos. Read on first use, not at import: every process
    that parses a run config imports this module, and decoding the 1 MB list there costs ~0.2 s (mostly garbage
    collections over the libraries loaded by then)."""
    listed = json.loads(LIST_FILE.read_text(encoding="utf-8"))
    return tuple(listed["classes"]), tuple(ListedVideo(*entry) for entry in listed["samples"])


@functools.cache
def _classes() -> tuple[str, ...]:
    """The Kinetics labels, by label id."""
    return tuple(folder.replace("_", " ") for folder in _read_list()[0])


def __getattr__(name: str) -> tuple:
    """`CLASS_FOLDERS`, `CLASSES` and `LISTED`, read from the list on first use (`_read_list`)."""
    if name == "CLASS_FOLDERS":
        return _read_list()[0]
    if name == "CLASSES":
        return _classes()
    if name == "LISTED":
        return _read_list()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SPEC = frame_and_audio_spec(
    "kinetics-sounds",
    "Kinetics-Sounds (30 Kinetics-400 classes): video frame + audio, classification (late fusion)",
    NUM_CLASSES,
)


def arrange_command(data_dir: Path) -> str:
    return f"python -m tasks.datasets.kinetics_sounds --data-dir {data_dir}"


@dataclass
class Arranged:
    """What an arranging run did: videos copied now, already in place, listed but not in the train download,
    and listed with a replacement copy that is not used (the original's choice)."""

    copied: int = 0
    present: int = 0
    missing: list[str] = field(default_factory=list)
    replacements_unused: int = 0


def _source(k400: Path, video: ListedVideo) -> Path | None:
    """The train download of a listed video, as the original copies it (never a replacement copy)."""
    candidates = (video.name, f"{_classes()[video.label]}/{video.name}", video.path)  # flat, or arranged by class
    return next((k400 / "train" / c for c in candidates if (k400 / "train" / c).is_file()), None)


def _copy(source: Path, target: Path) -> bool:
    """Copy unless the same file is already there; via a temporary name, so a cut-off copy is never taken as a video."""
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return False
    with atomic_file(target) as partial:
        shutil.copy2(source, partial)  # keeps the modification time, which the preprocessing cache key reads
    return True


def arrange(k400: Path, data_dir: Path) -> Arranged:
    """Copy every listed video from the Kinetics-400 download `k400` into `<data_dir>/kinetics-sounds/`."""
    if not (k400 / "train").is_dir():
        raise DatasetError(
            f"Kinetics-Sounds: {k400 / 'train'} is missing; download Kinetics-400 with {K400_DOWNLOADER} into {k400}"
        )
    replaced = {path.name[:YOUTUBE_ID_LENGTH] for path in (k400 / REPLACEMENTS).glob("*.mp4")}
    report = Arranged()
    for video in tqdm(_read_list()[1], desc="arranging kinetics-sounds", unit="video", mininterval=2):
        source = _source(k400, video)
        if video.name[:YOUTUBE_ID_LENGTH] in replaced:
            report.replacements_unused += 1
        if source is None:
            report.missing.append(str(k400 / "train" / video.name))
        elif _copy(source, data_dir / FOLDER / video.path):
            report.copied += 1
        else:
            report.present += 1
    return report


def samples(data_dir: Path) -> dict[str, list[Sample]]:
    root, listed = data_dir / FOLDER, _read_list()[1]
    present = [video for video in listed if (root / video.path).is_file()]
    if not present and (data_dir / K400 / "train").is_dir():
        logger.info("Kinetics-Sounds: copying the listed videos out of %s, once", data_dir / K400)
        _log_missing(arrange(data_dir / K400, data_dir))
        present = [video for video in listed if (root / video.path).is_file()]
    if not present:
        raise DatasetError(
            f"Kinetics-Sounds: no listed video is in {root}; download Kinetics-400 with {K400_DOWNLOADER} into "
            f"{data_dir / K400} (a run then copies the videos by itself), or run `{arrange_command(data_dir)}`"
        )
    if len(present) < len(listed):
        logger.warning(
            "Kinetics-Sounds: %d of the paper's %d videos are not in %s, so the split differs from the paper's; "
            "`%s` lists them",
            len(listed) - len(present),
            len(listed),
            root,
            arrange_command(data_dir),
        )
    result: dict[str, list[Sample]] = {"train": [], "test": []}
    for video in present:
        result[video.split].append(Sample(video.label, clip=str(root / video.path)))
    return result


def _log_missing(report: Arranged) -> None:
    if report.missing:
        shown = ", ".join(report.missing[:LISTED_MISSING])
        logger.warning("Kinetics-Sounds: %d listed videos are not in the download, e.g. %s", len(report.missing), shown)
    if report.replacements_unused:
        logger.info("Kinetics-Sounds: %s", _replacements_line(report))


def _replacements_line(report: Arranged) -> str:
    return (
        f"{report.replacements_unused} listed videos have a replacement copy in {REPLACEMENTS}, not used: the train "
        "download is taken, as the original takes it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Copy the paper's Kinetics-Sounds videos out of Kinetics-400.")
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
    if report.replacements_unused:
        print(_replacements_line(report))
    print(f"run with torch-data-dir='{data_dir}' dataset='kinetics-sounds'")


if __name__ == "__main__":
    main()
