"""Audio, video frames and images decoded as the original decodes them, on real files.

The references here decode the files with PyAV and Pillow directly and resample with torchaudio's
`Resample`, as the original's loaders do (`ucf_101.py`, `kinetics_sounds.py`, `dataset_utils.py`,
`t4sa.py`); our loaders must give the same numbers.
"""

from __future__ import annotations

import contextlib
import csv
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torchaudio
from PIL import Image, ImageFile
from support.fixtures_images import write_coco_qa, write_jpeg
from support.fixtures_meld import write_meld
from support.fixtures_video import FPS, write_kinetics400, write_video

from mpsl_flower.config import EMBEDDED_DEFAULTS, parse_run_config
from mpsl_flower.runs.facts import preprocessing_facts
from tasks.audio import SAMPLE_RATE, waveform_to_fbank, window_samples
from tasks.augment import WAVEFORM
from tasks.datasets import coco_qa, kinetics_sounds, meld, ucf101
from tasks.media import load_audio, load_frame, load_image, media_duration
from tasks.preprocess import TRUNCATED_FILE, Sample, build_split, truncated_images

LEFT_HZ, RIGHT_HZ = 440.0, 1250.0


def write_tones(path: Path, rate: int, seconds: float, channels: int, codec: str = "aac") -> Path:
    """An audio file with a different tone in each channel (440 Hz left, 1,250 Hz right, at other levels)."""
    layout = "stereo" if channels == 2 else "mono"
    times = np.arange(round(seconds * rate)) / rate
    waves = [0.4 * np.sin(2 * np.pi * LEFT_HZ * times), 0.1 * np.sin(2 * np.pi * RIGHT_HZ * times)][:channels]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        planar = np.stack(waves).astype(np.float32)
        if codec == "aac":
            frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        else:  # PCM: interleaved 16-bit
            packed = np.round(planar.T.reshape(1, -1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def decoded_channels(path: Path) -> tuple[torch.Tensor, int]:
    """Every channel of the file's audio at its own rate, [channels, samples], straight from the decoder."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        assert stream.format.is_planar and stream.format.name == "fltp"  # AAC decodes to planar float
        return torch.from_numpy(np.concatenate(chunks, axis=1)), stream.rate


def originals_waveform(path: Path) -> torch.Tensor:
    """The original's waveform: the channels' plain mean, then torchaudio's Resample (default filter) to 16 kHz."""
    channels, rate = decoded_channels(path)
    mono = channels.mean(dim=0, keepdim=True)
    return mono if rate == SAMPLE_RATE else torchaudio.transforms.Resample(rate, SAMPLE_RATE)(mono)


def test_stereo_audio_is_the_plain_mean_of_its_channels(tmp_path):
    clip = write_tones(tmp_path / "stereo.mp4", SAMPLE_RATE, 1.5, channels=2)
    channels, _ = decoded_channels(clip)
    assert channels.shape[0] == 2 and not torch.allclose(channels[0], channels[1], atol=0.05)
    waveform = load_audio(clip)
    assert torch.equal(waveform, channels.mean(dim=0, keepdim=True))  # not FFmpeg's mono mix: sqrt(2) x the mean


@pytest.mark.parametrize("rate", [44_100, 48_000])
@pytest.mark.parametrize("channels", [1, 2])
def test_audio_is_resampled_by_torchaudios_resample_from_the_source_rate(tmp_path, rate, channels):
    clip = write_tones(tmp_path / f"{rate}.mp4", rate, 2.0, channels)
    expected = originals_waveform(clip)
    waveform = load_audio(clip)
    assert waveform.shape == expected.shape
    torch.testing.assert_close(waveform, expected, rtol=0, atol=1e-6)


def test_a_4_s_clip_at_44_1_khz_gives_64000_samples_the_resampler_drops_none(tmp_path):
    clip = write_tones(tmp_path / "four.wav", 44_100, 4.0, channels=2, codec="pcm_s16le")
    assert load_audio(clip).shape == (1, 64_000)


def _grey_video(path: Path, frames: int) -> Path:
    """A video whose frame i is grey level 8 x i + 20 (a frame's number can be read off its pixels)."""
    return write_video(path, [(8 * i + 20,) * 3 for i in range(frames)], None, seconds=frames / FPS)


def _frame_number(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 20) / 8)


@pytest.mark.parametrize("at_seconds", [0.0, 0.57, 0.99, 1.5, 2.46])
def test_a_moments_frame_is_frame_int_t_x_fps_as_the_original_seeks(tmp_path, at_seconds):
    video = _grey_video(tmp_path / "grey.avi", 25)
    assert _frame_number(load_frame(video, at_seconds, 48, 64)) == int(at_seconds * FPS)


def _ucf101_split(tmp_path: Path, seconds: float):
    video = write_video(tmp_path / "clip.avi", [(200, 30, 30), (30, 30, 200)], [300.0, 900.0], seconds=seconds)
    return video, build_split(ucf101.SPEC, [Sample(0, clip=str(video))], tmp_path / "cache", "train")


def test_cached_moment_fbanks_are_float32_and_the_originals_fbank_of_its_int_cut_window(tmp_path):
    video, split = _ucf101_split(tmp_path, 12.2)
    fbanks = split.inputs["fbank"].take([0])[0]
    assert fbanks.dtype == torch.float32
    waveform, duration = originals_waveform(video), media_duration(video)
    half = window_samples(ucf101.AUDIO_FRAMES) / SAMPLE_RATE / 2
    rounded_differs = False
    for k, fbank in enumerate(fbanks):
        moment = (k + 0.5) / 3 * duration
        start, end = max(0.0, moment - half) * SAMPLE_RATE, min(duration, moment + half) * SAMPLE_RATE
        rounded_differs |= (round(start), round(end)) != (int(start), int(end))
        window = waveform[:, int(start) : int(end)]  # the original's int() of the sample positions
        expected = waveform_to_fbank(window, SAMPLE_RATE, ucf101.AUDIO_FRAMES, original=True)
        assert torch.equal(fbank, expected)
    assert rounded_differs  # the video's moments have sample positions that round and int() put apart


def test_meld_clips_are_the_originals_40961_samples_at_16_khz(tmp_path):
    written = write_meld(tmp_path / "data", per_class=1)
    samples = meld.samples(tmp_path / "data")["test"]
    split = build_split(meld.SPEC, samples, tmp_path / "cache", "test")
    row = next(i for i, row in enumerate(written["test"]) if row["seconds"] == 4.0)
    waveform = split.inputs[WAVEFORM].take([row])[0]
    at_48_khz = math.ceil(Fraction(2.56) * 48_000)  # the original: ceil of the clip's end, 122,881 samples
    clip_samples = math.ceil(Fraction(at_48_khz, 3))  # Resample to 16 kHz keeps ceil(n / 3): 40,961
    fbank = split.select([row]).inputs["fbank"][0]  # no generator: the clip's start at the window's start

    def placed(samples: int) -> torch.Tensor:
        window = torch.zeros(1, round(7.68 * SAMPLE_RATE))
        window[0, :samples] = waveform[:samples]
        return waveform_to_fbank(window, SAMPLE_RATE, 766, original=True)

    assert torch.equal(fbank, placed(clip_samples))
    assert not torch.equal(fbank, placed(round(2.56 * SAMPLE_RATE)))  # 40,960: one sample short


@contextlib.contextmanager
def _pillow_loads_truncated():
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def _cut_short(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def test_a_truncated_jpeg_is_loaded_as_the_original_loads_it_and_pillow_is_left_as_it_was(tmp_path):
    image = _cut_short(write_jpeg(tmp_path / "cut.jpg", (200, 120, 40), seed=3))
    with pytest.raises(OSError, match="truncated"), Image.open(image) as strict:
        strict.load()
    with _pillow_loads_truncated(), Image.open(image) as loose:
        expected = np.asarray(loose.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    assert np.array_equal(load_image(image, 224, stretch=True), expected)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # set for our load only


def test_truncated_images_are_kept_counted_per_split_and_reported_in_run_info(tmp_path):
    write_coco_qa(tmp_path / "data")
    images = sorted((tmp_path / "data" / "coco" / "train2014").glob("*.jpg"))
    for image in images[:2]:
        _cut_short(image)
    listed = coco_qa.samples(tmp_path / "data")
    split = build_split(coco_qa.SPEC, listed["train"], tmp_path / "cache", "train")
    assert len(split) == len(listed["train"])  # kept, not skipped
    assert truncated_images(split) == 2
    (folder,) = (tmp_path / "cache" / "coco-qa").iterdir()
    assert sorted((folder / TRUNCATED_FILE).read_text().splitlines()) == [str(image) for image in images[:2]]
    config = parse_run_config(
        {
            **EMBEDDED_DEFAULTS,
            "dataset": "coco-qa",
            "torch-data-dir": str(tmp_path / "data"),
            "pre-processors-cache-dir": str(tmp_path / "cache"),
            "output-dir": str(tmp_path / "results"),
            "device": "cpu",
        }
    )
    assert preprocessing_facts(config)["truncated_images"] == {"train": 2, "test": 0}


def test_kinetics_sounds_copies_the_train_download_never_the_replacement(tmp_path):
    facts = write_kinetics400(tmp_path, replaced=2)
    only_replaced = next(v for v in kinetics_sounds.LISTED if v.path == facts["replaced"][1])
    train_copy = next((tmp_path / "k400" / "train").rglob(only_replaced.name))
    train_copy.unlink()  # the download lacks it; only the replacement copy is there
    report = kinetics_sounds.arrange(tmp_path / "k400", tmp_path)
    kept = tmp_path / "kinetics-sounds" / facts["replaced"][0]
    (download,) = (tmp_path / "k400" / "train").rglob(Path(facts["replaced"][0]).name)
    assert kept.read_bytes() == download.read_bytes()  # the (broken) train download, as the original copies
    assert not (tmp_path / "kinetics-sounds" / only_replaced.path).exists()
    assert str(tmp_path / "k400" / "train" / only_replaced.name) in report.missing
    assert report.replacements_unused == 2


def _originals_text(utterance: str) -> str:
    """What the original reads for an utterance: its UTF-8 samples.txt read back as Windows-1252, then ’ -> '."""
    return utterance.encode("utf-8").decode("cp1252", errors="replace").replace("\u2019", "'")


def test_meld_utterances_stay_clean_where_the_original_reads_mojibake(tmp_path):
    written = write_meld(tmp_path, per_class=1)
    texts = [sample.texts[0] for sample in meld.samples(tmp_path)["train"]]
    assert texts == [row["text"] for row in written["train"]]
    assert not any("\u00c2" in text or "\u00e2\u20ac" in text for text in texts)  # no "Â", no "â€"
    release = tmp_path / "meld" / "MELD.Raw"
    utterances = []
    for name in ("train", "dev"):
        with open(release / f"{name}_sent_emo.csv", encoding="utf-8", newline="") as handle:
            utterances += [row["Utterance"].strip() for row in csv.DictReader(handle)]
    misread = [u for u in utterances if _originals_text(u) != u]
    assert len(misread) == len(utterances) == len(texts)  # every fixture row carries cp1252 punctuation


def test_a_task_with_no_decoding_cache_reports_no_truncation_count(tmp_path):
    """The embedded tasks are generated, and their only cached column is the text features: no count, no error."""
    config = parse_run_config({"dataset": "shapes-qa", "pre-processors-cache-dir": str(tmp_path / "cache")})
    assert "truncated_images" not in preprocessing_facts(config)
