"""A tiny MELD written in the official MELD.Raw layout: the three *_sent_emo.csv files and real .mp4 clips.

Each clip is a small MPEG-4 video with an AAC audio track, as in the release. Its first second is a
tone whose pitch follows the emotion, so a decoded fbank can be traced back to its row, and the rest a
high tone, so audio taken from anywhere but the start shows; lengths (1-4 s),
sample rates (44.1 / 48 kHz) and channel counts vary, so cutting, padding, mixing down and
resampling are all exercised. Utterances carry the release's Windows-1252 punctuation ("I\\x92m").
"""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np

EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENTS = {"neutral": "neutral", "joy": "positive", "surprise": "positive"}  # the other emotions are negative
COLUMNS = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime".split(
    ","
)
CLIP_FOLDERS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
SECONDS = (1.0, 1.7, 3.2, 4.0)
SAMPLE_RATES = (44_100, 48_000)
VIDEO_FPS, VIDEO_SIDE = 10, 32


def tone_hz(label: int) -> float:
    """The pitch of a class's clips: far enough apart to land in different mel bins."""
    return 300.0 * (label + 1)


TAIL_HZ, TONE_SECONDS = 6000.0, 1.0


def write_clip(path: Path, seconds: float, sample_rate: int, channels: int, hz: float) -> Path:
    """An .mp4 with a grey MPEG-4 video track and an AAC track: a `hz` tone for a second, then `TAIL_HZ`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=VIDEO_FPS)
        video.width, video.height, video.pix_fmt = VIDEO_SIDE, VIDEO_SIDE, "yuv420p"
        audio = container.add_stream("aac", rate=sample_rate)
        audio.layout = layout
        times = np.arange(round(seconds * sample_rate)) / sample_rate
        wave = (0.3 * np.sin(2 * np.pi * np.where(times < TONE_SECONDS, hz, TAIL_HZ) * times)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.tile(wave, (channels, 1)), format="fltp", layout=layout)
        frame.sample_rate, frame.pts = sample_rate, 0
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            container.mux(packet)
        for index in range(max(1, round(seconds * VIDEO_FPS))):
            picture = av.VideoFrame.from_ndarray(np.full((VIDEO_SIDE, VIDEO_SIDE, 3), 128, np.uint8), format="rgb24")
            picture.pts = index
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
    return path


def _rows(per_class: int, first_number: int) -> list[dict]:
    rows = []
    for index, emotion in enumerate(e for e in EMOTIONS for _ in range(per_class)):
        number = first_number + index
        rows.append(
            {
                "Sr No.": index + 1,
                "Utterance": f'Oh, I\x92m so {emotion}, "really" #{number}\x85',
                "Speaker": ("Monica", "Joey", "Ross")[index % 3],
                "Emotion": emotion,
                "Sentiment": SENTIMENTS.get(emotion, "negative"),
                "Dialogue_ID": index // 3,
                "Utterance_ID": index % 3,
                "Season": 3,
                "Episode": 7,
                "StartTime": f"00:{index:02d}:16,059",
                "EndTime": f"00:{index:02d}:18,910",
            }
        )
    return rows


def write_meld(data_dir: Path, per_class: int = 2, missing: int = 0, corrupt: int = 0) -> dict:
    """MELD.Raw under `data_dir/meld/`: `per_class` rows per emotion in train and test, one in dev.

    The first `missing` train rows get no clip and the next `corrupt` ones a clip of junk bytes.
    Returns {"train": [...], "test": [...], "broken": [clip paths]}: the rows in the order the
    loader gives them (train then dev for "train"), each {"text", "label", "clip", "seconds"},
    with "text" as the loader should clean it.
    """
    release = data_dir / "meld" / "MELD.Raw"
    release.mkdir(parents=True, exist_ok=True)
    written: dict = {"train": [], "test": [], "broken": []}
    number = 0
    for official, count in (("train", per_class), ("dev", 1), ("test", per_class)):
        rows = _rows(count, number)
        number += len(rows)
        with open(release / f"{official}_sent_emo.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        (release / CLIP_FOLDERS[official]).mkdir(exist_ok=True)
        for index, row in enumerate(rows):
            clip = release / CLIP_FOLDERS[official] / f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}.mp4"
            seconds = SECONDS[index % len(SECONDS)]
            label = sorted(EMOTIONS).index(row["Emotion"])  # the label ids of the sorted names, as the original
            if official == "train" and index < missing + corrupt:
                if index >= missing:
                    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really an mp4")
                written["broken"].append(clip)
            else:
                write_clip(clip, seconds, SAMPLE_RATES[index % 2], 1 + index % 2, tone_hz(label))
            text = row["Utterance"].replace("\x92", "\u2019").replace("\x85", "\u2026")
            row = {"text": text, "label": label, "clip": clip, "seconds": seconds}
            written["test" if official == "test" else "train"].append(row)
    return written
