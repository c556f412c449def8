"""COCO-QA, Flickr30K and MS-COCO loaders on tiny datasets in their official layouts."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.fixtures_images import write_coco_qa, write_karpathy

from mpsl_flower.config import EMBEDDED_DEFAULTS, parse_run_config
from mpsl_flower.models.tokenizers import ImageTokenizer
from mpsl_flower.split.model_inputs import load_inputs
from tasks.datasets import coco_qa, flickr30k, mscoco
from tasks.media import load_image
from tasks.preprocess import DONE_FILE, SKIPPED_FILE, DatasetError, build_split
from tasks.registry import load_task_data


def test_coco_qa_reads_the_release_files_and_coco_images(tmp_path):
    facts = write_coco_qa(tmp_path)
    splits = coco_qa.samples(tmp_path)
    assert len(splits["train"]) == facts["train"]
    assert len(splits["test"]) == facts["test"]  # every pair: the classes include the test answers
    classes = coco_qa.answer_classes(facts["answers"] * 6 + ["white"])
    assert [s.label for s in splits["test"]][-1] == classes.index("white") == 4  # the rarest answer, last
    first = splits["train"][0]
    assert first.label == classes.index("blue") and first.texts == ("what is the color of the object in picture 0",)
    assert first.image.endswith("coco/train2014/COCO_train2014_000000001000.jpg")
    assert splits["test"][0].image.endswith("coco/val2014/COCO_val2014_000000005000.jpg")


def test_coco_qa_split_decodes_to_224_pixel_images_with_questions(tmp_path):
    write_coco_qa(tmp_path)
    split = build_split(coco_qa.SPEC, coco_qa.samples(tmp_path)["train"], tmp_path / "cache", "train")
    assert split.inputs["image"].shape == (12, 3, 224, 224)
    image = split.select([0]).inputs["image"][0].numpy()
    assert image.dtype == np.uint8 and image[2].mean() > image[0].mean()  # blue dominates
    classes = coco_qa.answer_classes(["blue", "green", "red", "yellow"] * 6 + ["white"])
    expected = [classes.index(answer) for answer in ("blue", "green", "red", "yellow") for _ in range(3)]
    assert len(split.texts) == 12 and split.labels.tolist() == expected


def test_coco_qa_classes_are_every_answer_most_frequent_first():
    answers = ["a"] + ["b"] * 3 + ["c"] * 2 + ["d"] * 4
    assert coco_qa.answer_classes(answers) == ["d", "b", "c", "a"]


def test_a_missing_release_file_names_itself_and_the_download_command(tmp_path):
    write_coco_qa(tmp_path)
    (tmp_path / "coco-qa" / "test" / "img_ids.txt").unlink()
    with pytest.raises(
        DatasetError, match=r"coco-qa/test/img_ids.txt is missing; run `python -m tasks.download coco-qa"
    ):
        coco_qa.samples(tmp_path)


def test_a_corrupt_image_is_skipped_counted_and_listed(tmp_path, caplog):
    write_coco_qa(tmp_path)
    broken = tmp_path / "coco" / "train2014" / "COCO_train2014_000000001004.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "coco" / "train2014" / "COCO_train2014_000000001005.jpg").unlink()
    split = build_split(coco_qa.SPEC, coco_qa.samples(tmp_path)["train"], tmp_path / "cache", "train")
    assert len(split) == 10 and split.inputs["image"].shape[0] == 10
    (folder,) = (tmp_path / "cache" / "coco-qa").iterdir()
    assert json.loads((folder / DONE_FILE).read_text()) == {"kept": 10, "skipped": 2}
    listed = (folder / SKIPPED_FILE).read_text()
    assert str(broken) in listed and "COCO_train2014_000000001005.jpg" in listed
    assert "skipped 2 of 12 samples" in caplog.text


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path):
    write_coco_qa(tmp_path)
    samples = coco_qa.samples(tmp_path)["test"]
    build_split(coco_qa.SPEC, samples, tmp_path / "cache", "test")
    (first,) = (tmp_path / "cache" / "coco-qa").iterdir()
    stamp = (first / DONE_FILE).stat().st_mtime_ns
    build_split(coco_qa.SPEC, samples, tmp_path / "cache", "test")
    assert (first / DONE_FILE).stat().st_mtime_ns == stamp  # reused, not rebuilt
    image = tmp_path / "coco" / "val2014" / "COCO_val2014_000000005000.jpg"
    image.write_bytes(image.read_bytes() + b"\x00")  # new size: a changed file
    rebuilt = build_split(coco_qa.SPEC, samples, tmp_path / "cache", "test")
    assert len(list((tmp_path / "cache" / "coco-qa").iterdir())) == 2 and len(rebuilt) == 13


@pytest.mark.parametrize("module", [flickr30k, mscoco])
def test_karpathy_splits_give_five_captions_per_image(tmp_path, module):
    facts = write_karpathy(tmp_path, module.SPEC.name)
    splits = module.samples(tmp_path)
    assert (
        len(splits["train"]) == facts["train"] and len(splits["test"]) == facts["test"]
    )  # 4-caption image and val left out
    for sample in splits["train"] + splits["test"]:
        name = sample.image.rsplit("/", 1)[1]
        assert sample.texts == tuple(facts["captions"][name][:5])
    split = build_split(module.SPEC, splits["test"], tmp_path / "cache", "test")
    assert split.inputs["image"].shape == (facts["test"], 3, 224, 224)
    assert split.labels.tolist() == list(range(facts["test"]))  # retrieval: a sample's label is its row


def test_a_real_dataset_loads_through_the_run_config_with_text_features(tmp_path):
    write_karpathy(tmp_path, "flickr30k")
    config = parse_run_config(
        {
            **EMBEDDED_DEFAULTS,  # the small encoder, whose text encoder is the bag of words
            "dataset": "flickr30k",
            "torch-data-dir": str(tmp_path),
            "pre-processors-cache-dir": str(tmp_path / "cache"),
        }
    )
    data = load_inputs(config)
    assert data.train.inputs["text_feature"].shape == (8, 5, 64)  # 5 captions, bag-of-words features
    assert data.test.inputs["image"].shape == (4, 3, 224, 224)


def test_a_real_dataset_without_a_data_dir_says_which_key_to_set():
    with pytest.raises(DatasetError, match="set torch-data-dir to the folder that holds coco-qa/"):
        load_task_data("coco-qa", 2024, None, None)


def test_flickr30k_images_from_the_hugging_face_copys_zip_are_unpacked_on_first_use(tmp_path):
    facts = write_karpathy(tmp_path, "flickr30k")
    root = tmp_path / "flickr30k"
    shutil.make_archive(str(root / "flickr30k-images"), "zip", root, "flickr30k-images")  # as hf download leaves it
    shutil.rmtree(root / "flickr30k-images")
    splits = flickr30k.samples(tmp_path)
    assert len(splits["train"]) == facts["train"] and all(Path(s.image).is_file() for s in splits["test"])


def test_flickr30k_from_the_hugging_face_copy_alone_reads_its_annotation_table(tmp_path):
    """`hf download nlphuji/flickr30k` leaves the images' zip and a CSV of Karpathy splits and captions."""
    write_karpathy(tmp_path, "flickr30k")
    root = tmp_path / "flickr30k"
    expected = flickr30k.samples(tmp_path)
    entries = json.loads((root / "dataset_flickr30k.json").read_text())["images"]
    with open(root / flickr30k.HF_ANNOTATIONS, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["raw", "sentids", "split", "filename", "img_id"])
        for entry in entries:
            raw = json.dumps([s["raw"] for s in entry["sentences"]])
            sentids = json.dumps(list(range(len(entry["sentences"]))))
            writer.writerow([raw, sentids, entry["split"], entry["filename"], entry["imgid"]])
    (root / "dataset_flickr30k.json").unlink()
    shutil.make_archive(str(root / "flickr30k-images"), "zip", root, "flickr30k-images")
    shutil.rmtree(root / "flickr30k-images")
    assert flickr30k.samples(tmp_path) == expected
    (root / flickr30k.HF_ANNOTATIONS).write_text("not,the,table\n1,2,3\n")
    with pytest.raises(DatasetError, match="is not the annotation table of nlphuji/flickr30k"):
        flickr30k.samples(tmp_path)


def test_still_images_are_prepared_as_the_originals_vit_mae_processor(tmp_path):
    """Stretched to 224 x 224 (no crop: the edges stay) and normalised with ImageNet's mean and std."""
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :4] = (0, 255, 0)  # a green strip at the far left edge, which a centre crop would cut
    pixels[:, 4:] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    stretched = load_image(tmp_path / "wide.png", 224, stretch=True)
    cropped = load_image(tmp_path / "wide.png", 224)
    assert stretched.shape == cropped.shape == (3, 224, 224)
    assert stretched[1, :, 0].mean() > 200 and cropped[1, :, 0].mean() < 50
    for module in (coco_qa, flickr30k, mscoco):
        assert (module.SPEC.image.resize, module.SPEC.image.normalisation) == ("stretch", "imagenet")
    tokenizer = ImageTokenizer(coco_qa.SPEC.image, 96, 16)
    torch.testing.assert_close(tokenizer.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(tokenizer.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
