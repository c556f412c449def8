"""Tiny video datasets written in their official layouts: UCF101 and Kinetics-400 (for Kinetics-Sounds).

Videos are real files with a real audio track, encoded like the originals: UCF101's .avi holds
MPEG-4 Part 2 video (Xvid) + MP3, Kinetics' .mp4 MPEG-4 video + AAC. Audio is at 44.1 kHz, so the
16 kHz resampling is exercised, and frames are 64 x 48, so the resize and centre crop are too. Each
class has its own colour and tone, so a model could learn from them; every split and annotation
file has the official names and columns.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from tasks.datasets import kinetics_sounds

AUDIO_CODECS = {".avi": "mp3", ".mp4": "aac"}
SAMPLE_RATE = 44_100
FPS = 10
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 210, 30), (240, 240, 240), (150, 40, 200)]

# (class folder, name used in its file names, has audio), in classInd order. UCF101's
# HandstandPushups folder holds v_HandStandPushups_*.avi files: the loader must take the class from
# the folder, as here. classInd lists Hammering before HammerThrow; Python's `sorted`, which the
# original labels by, puts HammerThrow first. JumpingJack and Punch are not among the 51 with sound.
UCF101_CLASSES = [
    ("ApplyEyeMakeup", "ApplyEyeMakeup", True),
    ("Hammering", "Hammering", True),
    ("HammerThrow", "HammerThrow", True),
    ("HandstandPushups", "HandStandPushups", True),
    ("JumpingJack", "JumpingJack", False),
    ("Punch", "Punch", False),
]


def write_video(
    path: Path,
    colour: tuple[int, int, int] | list[tuple[int, int, int]],
    tone_hz: float | list[float] | None,
    seconds: float = 2.5,
) -> Path:
    """A video of one colour with a sine tone (None: no audio track); the codecs follow the suffix.

    Lists of colours and tones split the video into equal parts, one colour and tone each, so
    that what a loader reads at a given time can be told apart.
    """
    colours = colour if isinstance(colour, list) else [colour]
    tones = tone_hz if isinstance(tone_hz, list) else [tone_hz]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audible = tones[0] is not None
        audio = container.add_stream(AUDIO_CODECS[path.suffix], rate=SAMPLE_RATE, layout="mono") if audible else None
        frames = round(seconds * FPS)
        for index in range(frames):
            pixels = np.full((48, 64, 3), colours[index * len(colours) // frames], dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(video.encode())
        if audio is not None:
            _write_tones(container, audio, tones, seconds)
    return path


def _write_tones(
    container: av.container.OutputContainer, stream: av.AudioStream, tones: list[float], seconds: float
) -> None:
    times = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    hz = np.asarray(tones)[np.minimum((times / seconds * len(tones)).astype(int), len(tones) - 1)]
    wave = (0.3 * np.sin(2 * np.pi * hz * times)).astype(np.float32)
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
    [names in classInd order], "silent_classes": [...], "train": [paths], "test": [paths],
    "colours": {class: RGB}, "tones": {class: Hz}} where the paths are those of the audio
    classes, in list order.
    """
    root = data_dir / "ucf101"
    facts: dict = {"audio_classes": [], "silent_classes": [], "train": [], "test": [], "colours": {}, "tones": {}}
    lines: dict[str, list[str]] = {"classInd": [], "trainlist01": [], "testlist01": []}
    for index, (folder, name, audible) in enumerate(UCF101_CLASSES):
        facts["audio_classes" if audible else "silent_classes"].append(folder)
        facts["colours"][folder], facts["tones"][folder] = COLOURS[index], tone(index)
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


def write_kinetics400(
    data_dir: Path, per_class: dict[str, int] | None = None, missing: int = 1, replaced: int = 1
) -> dict:
    """k400/train/<youtube_id>_<start:06d>_<end:06d>.mp4, as the cvdfoundation downloader leaves it.

    The videos are real entries of the paper's list, for the first three classes (label ids 0..2):
    per class, `per_class` listed videos of each split (default 3 train, 1 test) are written, and
    `missing` more listed train videos are not. The class of label 1 is downloaded arranged into
    class folders (`k400/train/<class name>/`). For `replaced` videos the download is corrupt and a
    good copy lies in replacement/replacement_for_corrupted_k400/. One video that is not listed is
    written too. Returns {"videos": {listed path: split}, "labels": {listed path: label},
    "replaced": [listed paths], "other": the unlisted file}.
    """
    per_class = per_class or {"train": 3, "test": 1}
    root = data_dir / "k400" / "train"
    facts: dict = {"videos": {}, "labels": {}, "replaced": []}
    for label in range(3):
        for split, count in per_class.items():
            listed = [v for v in kinetics_sounds.LISTED if v.label == label and v.split == split]
            skipped = missing if split == "train" else 0
            for video in listed[: count + skipped][skipped:]:
                folder = root / kinetics_sounds.CLASSES[label] if label == 1 else root
                path = write_video(folder / video.name, COLOURS[label], tone(label))
                if len(facts["replaced"]) < replaced:
                    write_video(
                        data_dir / "k400" / kinetics_sounds.REPLACEMENTS / video.name, COLOURS[label], tone(label)
                    )
                    corrupt_video(path)
                    facts["replaced"].append(video.path)
                facts["videos"][video.path] = split
                facts["labels"][video.path] = label
    facts["other"] = write_video(root / "zzzzzzzzzzz_000001_000011.mp4", COLOURS[5], tone(5))
    return facts
