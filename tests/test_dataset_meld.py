"""MELD loader on a tiny release in the official MELD.Raw layout, with real .mp4 clips."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from support.fixtures_meld import EMOTIONS, TONE_SECONDS, write_meld

from tasks.audio import FRAMES_PER_SECOND, waveform_to_fbank
from tasks.datasets import meld
from tasks.preprocess import DONE_FILE, SKIPPED_FILE, DatasetError, build_split
from tasks.spec import FUSED_STREAM

# As the original, the waveform is zero-padded before the fbank, which is not normalised: padded frames are silence.
SILENCE = waveform_to_fbank(torch.zeros(1, 16_000), 16_000, 100, original=True)[0].numpy()
FBANK_FRAMES = 766  # the original's window for MELD


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("meld-data")
    return data_dir, write_meld(data_dir)


def test_the_task_is_the_papers():
    assert meld.SPEC.name == meld.FOLDER == "meld" and meld.SPEC.class_names == tuple(sorted(EMOTIONS))
    assert meld.SPEC.readout == ((FUSED_STREAM, 0, "audio"), (FUSED_STREAM, -1, "text"))
    assert meld.SPEC.audio.num_frames == 766 and meld.SPEC.audio.num_patches == 912
    assert meld.ARCHIVES[0].file_name == "MELD.Raw.tar.gz" and meld.ARCHIVES[0].unpack_to == "meld"


def test_train_is_train_plus_dev_with_emotions_and_cleaned_utterances(release):
    data_dir, written = release
    splits = meld.samples(data_dir)
    assert len(splits["train"]) == 3 * 7 and len(splits["test"]) == 2 * 7  # train 2 + dev 1 per emotion
    for split in ("train", "test"):
        assert [s.label for s in splits[split]] == [row["label"] for row in written[split]]
        assert [s.texts for s in splits[split]] == [(row["text"],) for row in written[split]]
        assert [s.clip for s in splits[split]] == [str(row["clip"]) for row in written[split]]
    assert splits["train"][0].texts == ('Oh, I\u2019m so neutral, "really" #0\u2026',)
    assert splits["train"][-1].clip.endswith("meld/MELD.Raw/dev_splits_complete/dia2_utt0.mp4")
    assert splits["test"][0].clip.endswith("meld/MELD.Raw/output_repeated_splits_test/dia0_utt0.mp4")


def test_a_split_caches_the_waveform_and_reads_the_first_2_56_s_padded_to_the_originals_766_frames(release, tmp_path):
    data_dir, written = release
    split = build_split(meld.SPEC, meld.samples(data_dir)["test"], tmp_path / "cache", "test")
    assert split.inputs["waveform"].shape == (14, 122_880)  # 7.68 s at 16 kHz
    lengths = split.inputs["waveform_length"].take(range(14)).numpy()
    expected = np.array([round(row["seconds"] * 16_000) for row in written["test"]])
    assert (np.abs(lengths - expected) < 800).all()  # within an AAC frame's padding; all under 7.68 s
    fbank = split.select(range(len(split))).inputs["fbank"].float().numpy()  # no generator: the deterministic view
    assert fbank.shape == (14, 766, 128) and split.labels.tolist() == [row["label"] for row in written["test"]]
    assert split.texts == [(row["text"],) for row in written["test"]]
    peaks, toned = {}, round(TONE_SECONDS * FRAMES_PER_SECOND)
    for row, values in zip(written["test"], fbank):
        heard = round(min(row["seconds"], 2.56) * FRAMES_PER_SECOND)  # clips over 2.56 s are cut there
        np.testing.assert_allclose(
            values[heard + 5 : FBANK_FRAMES], np.broadcast_to(SILENCE, (FBANK_FRAMES - heard - 5, 128)), atol=0.05
        )
        assert np.abs(values[10 : heard - 10] - SILENCE).max() > 0.5
        peaks.setdefault(row["label"], set()).add(int(values[10 : toned - 10].mean(axis=0).argmax()))
    ordered = [peaks[label] for label in range(len(EMOTIONS))]
    assert all(
        max(low) < min(high) for low, high in zip(ordered, ordered[1:])
    )  # each row's first second follows its label


def test_a_missing_or_corrupt_clip_is_skipped_and_counted(tmp_path, caplog):
    written = write_meld(tmp_path, per_class=1, missing=1, corrupt=1)
    samples = meld.samples(tmp_path)["train"]
    assert len(samples) == 14  # the loader keeps the rows; decoding skips their clips
    split = build_split(meld.SPEC, samples, tmp_path / "cache", "train")
    assert len(split) == 12 and split.select(range(12)).inputs["fbank"].shape == (12, 766, 128)
    assert split.labels.tolist() == [row["label"] for row in written["train"] if row["clip"] not in written["broken"]]
    (folder,) = (tmp_path / "cache" / "meld").iterdir()
    assert json.loads((folder / DONE_FILE).read_text()) == {"kept": 12, "skipped": 2}
    listed = (folder / SKIPPED_FILE).read_text()
    assert all(str(clip) in listed for clip in written["broken"]) and "skipped 2 of 14 samples" in caplog.text


def test_a_missing_csv_names_itself_and_the_download(tmp_path):
    write_meld(tmp_path, per_class=1)
    (tmp_path / "meld" / "MELD.Raw" / "dev_sent_emo.csv").unlink()
    with pytest.raises(
        DatasetError, match=r"meld/MELD.Raw/dev_sent_emo.csv is missing; run `python -m tasks.download meld"
    ):
        meld.samples(tmp_path)


def test_an_unextracted_clip_archive_says_which_to_extract(tmp_path):
    write_meld(tmp_path, per_class=1)
    shutil.rmtree(tmp_path / "meld" / "MELD.Raw" / "output_repeated_splits_test")
    with pytest.raises(
        DatasetError, match=r"output_repeated_splits_test is missing; extract \S*meld/MELD.Raw/test.tar.gz"
    ):
        meld.samples(tmp_path)


def test_the_clip_the_original_leaves_out_is_left_out(tmp_path):
    write_meld(tmp_path, per_class=1)
    release = tmp_path / "meld" / "MELD.Raw"
    for official in ("train", "dev"):  # dia125_utt3 of train is the one; dev's dia125_utt3 stays
        path = release / f"{official}_sent_emo.csv"
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        rows.append({**rows[0], "Dialogue_ID": "125", "Utterance_ID": "3", "Utterance": f"the {official} one"})
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    texts = [s.texts[0] for s in meld.samples(tmp_path)["train"]]
    assert "the dev one" in texts and "the train one" not in texts and len(texts) == 7 + 7 + 1
