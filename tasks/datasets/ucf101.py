"""UCF101 with sound (Soomro et al., 2012): action recognition from one frame + 10.255 s of audio.

Layout under `torch-data-dir` (both archives unpack into `ucf101/`):

    ucf101/UCF-101/<Class>/v_<Class>_g<gg>_c<cc>.avi       13,320 videos, Xvid + MP3 where there is sound
    ucf101/ucfTrainTestlist/classInd.txt                    "1 ApplyEyeMakeup", 101 lines
    ucf101/ucfTrainTestlist/trainlist01.txt                 "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    ucf101/ucfTrainTestlist/testlist01.txt                  "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

Only 51 of the 101 classes were recorded with sound, and sound is a property of the class, so
the task keeps the classes whose first readable video has an audio track (one probe per class,
not one per video) and relabels them 0..50 in classInd order. With split 1 that gives 4,893
train and 1,943 test videos. A video of a kept class that has no track after all is skipped
and counted when decoded, like any unreadable file.

The task definition (one middle frame + the 10.255 s of audio around it, late fusion) is shared
with Kinetics-Sounds through `frame_and_audio_spec` and `frame_and_audio_sample`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tasks.audio import SAMPLE_RATE, window_samples
from tasks.download import Archive
from tasks.media import MediaError, has_audio
from tasks.preprocess import DatasetError, Sample
from tasks.spec import LATE_FUSION, AudioInput, ImageInput, TaskSpec

logger = logging.getLogger(__name__)
FOLDER = "ucf101"
VIDEOS = "UCF-101"
LISTS = "ucfTrainTestlist"
SPLIT_LISTS = {"train": "trainlist01.txt", "test": "testlist01.txt"}  # split 1, as the paper
NUM_CLASSES = 51
AUDIO_FRAMES = 1024  # the original's `input_tdim`: 1,212 audio patches
CLIP_SECONDS = window_samples(AUDIO_FRAMES) / SAMPLE_RATE  # 10.255 s, the original's window: exactly 1,024 frames


def frame_and_audio_spec(name: str, description: str, num_classes: int) -> TaskSpec:
    """A video task: the frame (197 tokens) and the audio (1 + 1,212 tokens) run through the encoder
    apart (late fusion), and the head reads the mean of the two CLS outputs."""
    return TaskSpec(
        name=name,
        description=description,
        num_classes=num_classes,
        class_names=(),
        fusion=LATE_FUSION,
        readout=(("image", 0, "image"), ("audio", 0, "audio")),
        image=ImageInput(size=224, normalisation="none"),  # the original's frame transform ends in ToTensor
        audio=AudioInput(num_frames=AUDIO_FRAMES, original=True),
    )


def frame_and_audio_sample(video: Path, label: int) -> Sample:
    """The video's middle frame and the 10.255 s of its audio centred on the middle."""
    return Sample(label, frame=(str(video), None), audio=(str(video), None, CLIP_SECONDS))


SPEC = frame_and_audio_spec(
    "ucf101", "UCF101 (51 classes with sound): video frame + audio, action classification (late fusion)", NUM_CLASSES
)
ARCHIVES = [
    Archive("https://www.crcv.ucf.edu/data/UCF101/UCF101.rar", "UCF101.rar", FOLDER),
    Archive(
        "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip",
        "UCF101TrainTestSplits-RecognitionTask.zip",
        FOLDER,
    ),
]


def _missing(data_dir: Path, path: Path) -> DatasetError:
    return DatasetError(f"UCF101: {path} is missing; run `python -m tasks.download ucf101 --data-dir {data_dir}`")


def _lines(data_dir: Path, name: str) -> list[list[str]]:
    """The words of every line of a list file (the release files end lines with CRLF)."""
    path = data_dir / FOLDER / LISTS / name
    if not path.is_file():
        raise _missing(data_dir, path)
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _has_sound(videos: Path, listed: list[str]) -> bool:
    """Whether the class's first video that opens has an audio track (False when none opens)."""
    for relative in listed:
        try:
            return has_audio(videos / relative)
        except MediaError as error:
            logger.warning("UCF101: cannot probe %s for audio, trying the next video of its class", error)
    return False


def _group(classes: list[str], listed: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each class's videos (relative paths), train first; the class is the folder, not the file name."""
    by_class: dict[str, list[str]] = {name: [] for name in classes}
    for relative in listed["train"] + listed["test"]:
        folder = relative.split("/")[0]
        if folder not in by_class:
            raise DatasetError(f"UCF101: {relative} is listed under class {folder!r}, which classInd.txt does not name")
        by_class[folder].append(relative)
    return by_class


def samples(data_dir: Path) -> dict[str, list[Sample]]:
    classes = [words[1] for words in _lines(data_dir, "classInd.txt")]
    listed = {split: [words[0] for words in _lines(data_dir, name)] for split, name in SPLIT_LISTS.items()}
    videos = data_dir / FOLDER / VIDEOS
    if not videos.is_dir():
        raise _missing(data_dir, videos)
    by_class = _group(classes, listed)
    audible = [name for name in classes if _has_sound(videos, by_class[name])]
    logger.info("UCF101: %d of %d classes have an audio track", len(audible), len(classes))
    if len(audible) > NUM_CLASSES:
        raise DatasetError(f"UCF101: {len(audible)} classes have audio, more than the {NUM_CLASSES} of the release")
    label = {name: index for index, name in enumerate(audible)}
    return {
        split: [frame_and_audio_sample(videos / r, label[r.split("/")[0]]) for r in rows if r.split("/")[0] in label]
        for split, rows in listed.items()
    }
