"""B-T4SA loader on a tiny release in the official layout, with real JPEG images."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from support.fixtures_b_t4sa import NAMES, write_b_t4sa

from tasks.datasets import b_t4sa
from tasks.preprocess import DONE_FILE, SKIPPED_FILE, DatasetError, build_split
from tasks.spec import FUSED_STREAM


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("b-t4sa-data")
    return data_dir, write_b_t4sa(data_dir, without_text=1)


def test_the_task_is_the_papers():
    assert b_t4sa.SPEC.name == b_t4sa.FOLDER == "b-t4sa" and b_t4sa.SPEC.class_names == NAMES
    assert b_t4sa.SPEC.readout == ((FUSED_STREAM, 0, "image"), (FUSED_STREAM, -1, "text"))
    assert b_t4sa.SPEC.image.size == 224 and b_t4sa.SPEC.text is not None and b_t4sa.SPEC.audio is None
    assert not hasattr(b_t4sa, "ARCHIVES")  # the release needs the user's own access


def test_train_is_the_train_list_alone_and_each_image_gets_its_tweets_text(release, caplog):
    data_dir, written = release
    with caplog.at_level(logging.WARNING):
        splits = b_t4sa.samples(data_dir)
    # the val list is not used (as in the original); a second image; a tweet without text
    assert len(splits["train"]) == 3 * 2 + 1 and len(splits["test"]) == 3 * 2 - 1
    for split in ("train", "test"):
        assert [(s.image, s.label, s.texts) for s in splits[split]] == [
            (str(row["image"]), row["label"], (row["text"],)) for row in written[split]
        ]
    first, second = (s for s in splits["train"] if s.image.rsplit("/", 1)[1].startswith("768149437775974406-"))
    assert first.image.endswith("-1.jpg") and second.image.endswith("-2.jpg") and first.texts == second.texts
    assert (
        "\n" in splits["test"][0].texts[0] and '"' in splits["test"][0].texts[0]
    )  # a quoted multi-line tweet read whole
    assert "B-T4SA test: 1 images left out, their tweet has no text" in caplog.text


def test_a_split_decodes_to_224_pixel_images_in_label_colours(release, tmp_path):
    data_dir, written = release
    split = build_split(b_t4sa.SPEC, b_t4sa.samples(data_dir)["train"], tmp_path / "cache", "train")
    images = split.inputs["image"].take(range(len(split))).numpy()
    assert images.shape == (7, 3, 224, 224) and images.dtype == np.uint8
    assert split.labels.tolist() == [row["label"] for row in written["train"]]
    assert split.texts == [(row["text"],) for row in written["train"]]
    assert [
        int(image.reshape(3, -1).mean(axis=1).argmax()) for image in images
    ] == split.labels.tolist()  # red, green, blue


def test_a_missing_or_corrupt_image_is_skipped_and_counted(tmp_path, caplog):
    written = write_b_t4sa(tmp_path, per_class=1, missing=1, corrupt=1)
    split = build_split(b_t4sa.SPEC, b_t4sa.samples(tmp_path)["train"], tmp_path / "cache", "train")
    assert len(split) == 2 and split.inputs["image"].shape == (2, 3, 224, 224)
    assert split.labels.tolist() == [row["label"] for row in written["train"] if row["image"] not in written["broken"]]
    (folder,) = (tmp_path / "cache" / "b-t4sa").iterdir()
    assert json.loads((folder / DONE_FILE).read_text()) == {"kept": 2, "skipped": 2}
    listed = (folder / SKIPPED_FILE).read_text()
    assert all(str(path) in listed for path in written["broken"]) and "skipped 2 of 4 samples" in caplog.text


def test_a_missing_val_list_is_not_an_error(tmp_path):
    written = write_b_t4sa(tmp_path, per_class=1)
    (tmp_path / "b-t4sa" / "b-t4sa_val.txt").unlink()
    assert [s.image for s in b_t4sa.samples(tmp_path)["train"]] == [str(row["image"]) for row in written["train"]]


@pytest.mark.parametrize("name", ["b-t4sa_train.txt", "b-t4sa_test.txt", "raw_tweets_text.csv"])
def test_a_missing_release_file_names_itself_and_where_to_ask(tmp_path, name):
    write_b_t4sa(tmp_path, per_class=1)
    (tmp_path / "b-t4sa" / name).unlink()
    with pytest.raises(DatasetError, match=rf"b-t4sa/{name} is missing; .*request access at http://www.t4sa.it/"):
        b_t4sa.samples(tmp_path)


def test_a_damaged_list_line_is_named(tmp_path):
    write_b_t4sa(tmp_path, per_class=1)
    with open(tmp_path / "b-t4sa" / "b-t4sa_test.txt", "a", encoding="utf-8") as handle:
        handle.write("data/1/2/768149437775974499-1.jpg positive\n")
    with pytest.raises(DatasetError, match=r"b-t4sa_test.txt line 4 is not"):
        b_t4sa.samples(tmp_path)
