"""Tiny video datasets written in their official layouts: UCF101 and Kinetics-400 (for Kinetics-Sounds).

Videos are real files with a real audio track, encoded like the originals: UCF101's .avi holds
MPEG-4 Part 2 video (Xvid) + MP3, Kinetics' .mp4 MPEG-4 video + AAC. Audio is at 44.1 kHz, so the
16 kHz resampling is exercised, and frames are 64 x 48, so the resize and centre crop are too. Each
class has its own colour and tone, so a model could learn from them; every split and annotation
file has the official names and columns.
"""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np

AUDIO_CODECS = {".avi": "mp3", ".mp4": "aac"}
SAMPLE_RATE = 44_100
FPS = 10
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 210, 30), (240, 240, 240), (150, 40, 200)]

# (class folder, name used in its file names, has audio). UCF101's HandstandPushups folder holds
# v_HandStandPushups_*.avi files: the loader must take the class from the folder, as here.
UCF101_CLASSES = [
    ("ApplyEyeMakeup", "ApplyEyeMakeup", True),
    ("Archery", "Archery", False),
    ("BandMarching", "BandMarching", True),
    ("HandstandPushups", "HandStandPushups", True),
    ("Punch", "Punch", False),
]
KINETICS_SOUNDS_CLASSES = ["chopping wood", "playing bagpipes", "tapping pen"]
KINETICS_OTHER_CLASSES = ["abseiling", "air drumming"]  # Kinetics-400 classes outside Kinetics-Sounds
K400_HEADER = ["label", "youtube_id", "time_start", "time_end", "split"]


def write_video(path: Path, colour: tuple[int, int, int], tone_hz: float | None, seconds: float = 2.5) -> Path:
    """A single-colour video with a sine tone (None: no audio track); the codecs follow the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream(AUDIO_CODECS[path.suffix], rate=SAMPLE_RATE, layout="mono") if tone_hz else None
        pixels = np.full((48, 64, 3), colour, dtype=np.uint8)
        for _ in range(round(seconds * FPS)):
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(video.encode())
        if audio is not None:
            _write_tone(container, audio, tone_hz, seconds)
    return path


def _write_tone(
    container: av.container.OutputContainer, stream: av.AudioStream, tone_hz: float, seconds: float
) -> None:
    times = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = (0.3 * np.sin(2 * np.pi * tone_hz * times)).astype(np.float32)
    step = stream.codec_context.frame_size or 1024
    for start in range(0, wave.size, step):
        frame = av.AudioFrame.from_ndarray(wave[None, start : start + step], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def tone(index: int) -> float:
    """The sine tone of class `index` in Hz: 300, 500, 700, ... (distinct mel bins)."""
    return 300.0 + 200 * index


def corrupt_video(path: Path) -> Path:
    """Overwrite a video with bytes no demuxer accepts, as a broken download would leave it."""
    path.write_bytes(b"\x00 this is not a video \x00" * 64)
    return path


def write_ucf101(data_dir: Path, train_per_class: int = 3, test_per_class: int = 2) -> dict:
    """UCF-101/<Class>/v_<Name>_g<gg>_c<cc>.avi + ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt.

    Split 1 tests on groups 1-7 and trains on 8-25, as the release does; the list files have the
    release's CRLF line ends. Classes without audio get silent videos. Returns {"audio_classes":
    [names in classInd order], "silent_classes": [...], "train": [paths], "test": [paths]} where the
    paths are those of the audio classes, in list order.
    """
    root = data_dir / "ucf101"
    facts: dict = {"audio_classes": [], "silent_classes": [], "train": [], "test": []}
    lines: dict[str, list[str]] = {"classInd": [], "trainlist01": [], "testlist01": []}
    for index, (folder, name, audible) in enumerate(UCF101_CLASSES):
        facts["audio_classes" if audible else "silent_classes"].append(folder)
        lines["classInd"].append(f"{index + 1} {folder}")
        groups = [("test", 1 + g) for g in range(test_per_class)] + [("train", 8 + g) for g in range(train_per_class)]
        for split, group in groups:
            relative = f"{folder}/v_{name}_g{group:02d}_c01.avi"
            write_video(root / "UCF-101" / relative, COLOURS[index], tone(index) if audible else None)
            lines[f"{split}list01"].append(f"{relative} {index + 1}" if split == "train" else relative)
            if audible:
                facts[split].append(root / "UCF-101" / relative)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    for name, rows in lines.items():
        (lists / f"{name}.txt").write_bytes("".join(f"{row}\r\n" for row in rows).encode())
    return facts


def _write_download(root: Path, split: str, name: str, index: int, broken: bool) -> None:
    """A downloaded Kinetics video of class `index`; a broken one has its good copy among the replacements."""
    path = write_video(root / split / name, COLOURS[index], tone(index))
    if broken:
        write_video(root / "replacement" / "replacement_for_corrupted_k400" / name, COLOURS[index], tone(index))
        corrupt_video(path)


def write_kinetics400(
    data_dir: Path, per_split: dict[str, int] | None = None, missing: int = 1, replaced: int = 1
) -> dict:
    """k400/{train,val,test}/<youtube_id>_<start:06d>_<end:06d>.mp4 + k400/annotations/<split>.csv.

    Per class, `per_split` videos are listed and written (default 3 train, 1 val, 1 test), and
    `missing` more train videos are listed but never downloaded. For `replaced` train videos the
    download is corrupt and a good copy lies in replacement/replacement_for_corrupted_k400/, as the
    cvdfoundation downloader leaves them. Returns {"videos": {class: [file names]} for the
    Kinetics-Sounds classes present, "missing": listed Kinetics-Sounds videos absent, "replaced": [names]}.
    """
    per_split = per_split or {"train": 3, "val": 1, "test": 1}
    root = data_dir / "k400"
    rows: dict[str, list[list]] = {split: [] for split in ("train", "val", "test")}
    facts: dict = {"videos": {name: [] for name in KINETICS_SOUNDS_CLASSES}, "missing": 0, "replaced": []}
    for index, label in enumerate(KINETICS_SOUNDS_CLASSES + KINETICS_OTHER_CLASSES):
        plan = [(split, True) for split, count in per_split.items() for _ in range(count)] + [
            ("train", False)
        ] * missing
        for number, (split, downloaded) in enumerate(plan):
            youtube_id = f"{index:03d}yt{number:02d}-_ab"  # 11 characters, with the '-' and '_' real ids have
            start = 10 * number
            name = f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4"
            rows[split].append([label, youtube_id, start, start + 10, split])
            sounds = label in facts["videos"]
            if not downloaded:
                facts["missing"] += sounds
                continue
            broken = sounds and split == "train" and len(facts["replaced"]) < replaced
            _write_download(root, split, name, index, broken)
            if sounds:
                facts["videos"][label].append(name)
            if broken:
                facts["replaced"].append(name)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, listed in rows.items():
        with open(root / "annotations" / f"{split}.csv", "w", newline="") as out:
            csv.writer(out).writerows([K400_HEADER, *listed])
    return facts
