"""UCF101 with sound (Soomro et al., 2012): action recognition from a frame + 10.255 s of audio.

Layout under `torch-data-dir` (both archives unpack into `ucf101/`):

    ucf101/UCF-101/<Class>/v_<Class>_g<gg>_c<cc>.avi       13,320 videos, Xvid + MP3 where there is sound
    ucf101/ucfTrainTestlist/classInd.txt                    "1 ApplyEyeMakeup", 101 lines
    ucf101/ucfTrainTestlist/trainlist01.txt                 "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    ucf101/ucfTrainTestlist/testlist01.txt                  "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

Only 51 of the 101 classes were recorded with sound. The task keeps those of the original's
sample list (its assets/ucf101/samples.txt: split 1 of those 51 classes, 4,893 train and 1,943
test videos), `AUDIO_CLASSES`, labelled 0..50 in the order of Python's `sorted` on their names,
as the original does (it differs from classInd's: HammerThrow before Hammering). A video of a
kept class that has no audio track after all is skipped and counted when decoded, like any
unreadable file.

The task definition (at every step a random moment's frame, randomly cropped, flipped and
jittered, + the 10.255 s of audio around it, late fusion; `tasks.spec.RandomMoment`) is shared
with Kinetics-Sounds through `frame_and_audio_spec`.
"""

from __future__ import annotations

from pathlib import Path

from tasks.archives import Archive
from tasks.preprocess import DatasetError, Sample
from tasks.spec import LATE_FUSION, AudioInput, ImageInput, RandomMoment, TaskSpec, fusion_readout

FOLDER = "ucf101"
VIDEOS = "UCF-101"
LISTS = "ucfTrainTestlist"
SPLIT_LISTS = {"train": "trainlist01.txt", "test": "testlist01.txt"}  # split 1, as the paper
# The 51 classes with sound, as the original's sample list names them (MIT, "Copyright (c) 2025 Nousphera"),
# in Python's `sorted` order: their label ids.
AUDIO_CLASSES = (
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching", "BasketballDunk",
    "BlowDryHair", "BlowingCandles", "BodyWeightSquats", "Bowling", "BoxingPunchingBag", "BoxingSpeedBag",
    "BrushingTeeth", "CliffDiving", "CricketBowling", "CricketShot", "CuttingInKitchen", "FieldHockeyPenalty",
    "FloorGymnastics", "FrisbeeCatch", "FrontCrawl", "Haircut", "HammerThrow", "Hammering", "HandstandPushups",
    "HandstandWalking", "HeadMassage", "IceDancing", "Knitting", "LongJump", "MoppingFloor", "ParallelBars",
    "PlayingCello", "PlayingDaf", "PlayingDhol", "PlayingFlute", "PlayingSitar", "Rafting", "ShavingBeard", "Shotput",
    "SkyDiving", "SoccerPenalty", "StillRings", "SumoWrestling", "Surfing", "TableTennisShot", "Typing", "UnevenBars",
    "WallPushups", "WritingOnBoard",
)  # fmt: skip
AUDIO_FRAMES = 1024  # the original's `input_tdim` (1,212 audio patches): a 10.255 s window
FRAME = ImageInput(size=224, normalisation="none")  # the original's frame transform ends in ToTensor
AUDIO = AudioInput(num_frames=AUDIO_FRAMES, original=True)


def frame_and_audio_spec(name: str, description: str, num_classes: int) -> TaskSpec:
    """A video task: a frame (197 tokens) and the audio around it (1 + 1,212 tokens) run through the
    encoder apart (late fusion), and the head reads the mean of the two CLS outputs."""
    return TaskSpec(
        name=name,
        description=description,
        num_classes=num_classes,
        class_names=(),
        fusion=LATE_FUSION,
        readout=fusion_readout(LATE_FUSION, FRAME, AUDIO, None),
        image=FRAME,
        audio=AUDIO,
        augmentation=RandomMoment(),
    )


SPEC = frame_and_audio_spec(
    "ucf101",
    "UCF101 (51 classes with sound): video frame + audio, action classification (late fusion)",
    len(AUDIO_CLASSES),
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


def _check_classes(classes: list[str], listed: dict[str, list[str]]) -> None:
    """Every listed video lies in a class folder that classInd.txt names (the class is the folder, not the
    file name: HandstandPushups/ holds v_HandStandPushups_*.avi)."""
    known = set(classes)
    for relative in listed["train"] + listed["test"]:
        if relative.split("/")[0] not in known:
            raise DatasetError(f"UCF101: {relative} is listed under a class that classInd.txt does not name")


def samples(data_dir: Path) -> dict[str, list[Sample]]:
    classes = [words[1] for words in _lines(data_dir, "classInd.txt")]
    listed = {split: [words[0] for words in _lines(data_dir, name)] for split, name in SPLIT_LISTS.items()}
    videos = data_dir / FOLDER / VIDEOS
    if not videos.is_dir():
        raise _missing(data_dir, videos)
    _check_classes(classes, listed)
    label = {name: index for index, name in enumerate(AUDIO_CLASSES)}
    return {
        split: [Sample(label[r.split("/")[0]], clip=str(videos / r)) for r in rows if r.split("/")[0] in label]
        for split, rows in listed.items()
    }
