"""COCO-QA (Ren et al., 2015): a question about a COCO 2014 image, one of 430 one-word answers.

Layout under `torch-data-dir` (the release zip unpacks to `coco-qa/`; images are COCO 2014):

    coco-qa/train/{questions,answers,img_ids,types}.txt   one line per QA pair, aligned
    coco-qa/test/{questions,answers,img_ids,types}.txt
    coco/train2014/COCO_train2014_<id:012d>.jpg            train questions use train2014 images
    coco/val2014/COCO_val2014_<id:012d>.jpg                test questions use val2014 images

Classes are built as the original code builds them: every distinct answer of train and test
(430 in the release), the most frequent first (`answer_classes`), so no test pair is left out.
The release is fetched from the URL the original uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.archives import Archive
from tasks.preprocess import DatasetError, Sample
from tasks.spec import ORIGINAL_STILL_IMAGE, early_fusion_task

FOLDER = "coco-qa"
NUM_ANSWERS = 430
FIELDS = ("questions", "answers", "img_ids", "types")
IMAGE_FOLDERS = {"train": "train2014", "test": "val2014"}

SPEC = early_fusion_task(
    "coco-qa",
    "COCO-QA: COCO image + question, 430-answer classification (early fusion)",
    class_names=(),  # the answers are read from the data
    image=ORIGINAL_STILL_IMAGE,
    num_classes=NUM_ANSWERS,
)

COCO_2014_IMAGES = [
    Archive("http://images.cocodataset.org/zips/train2014.zip", "train2014.zip", "coco"),
    Archive("http://images.cocodataset.org/zips/val2014.zip", "val2014.zip", "coco"),
]
ARCHIVES = [
    Archive(
        "http://www.cs.toronto.edu/~mren/imageqa/data/cocoqa/cocoqa-2015-05-17.zip",
        "cocoqa-2015-05-17.zip",
        FOLDER,
    ),
    *COCO_2014_IMAGES,
]


def coco_image(data_dir: Path, folder: str, image_id: int) -> Path:
    """Path of a COCO 2014 image by id, e.g. coco/val2014/COCO_val2014_000000391895.jpg."""
    return data_dir / "coco" / folder / f"COCO_{folder}_{image_id:012d}.jpg"


def _read_split(data_dir: Path, split: str) -> list[tuple[str, str, int]]:
    folder = data_dir / FOLDER / split
    columns = {}
    for field in FIELDS:
        path = folder / f"{field}.txt"
        if not path.is_file():
            raise DatasetError(
                f"COCO-QA: {path} is missing; run `python -m tasks.download coco-qa --data-dir {data_dir}`"
            )
        columns[field] = path.read_text(encoding="utf-8").splitlines()
    lengths = {field: len(lines) for field, lines in columns.items()}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f"COCO-QA {split}: the files have different line counts {lengths}; the download is damaged")
    return [
        (q.strip(), a.strip(), int(i)) for q, a, i in zip(columns["questions"], columns["answers"], columns["img_ids"])
    ]


def answer_classes(answers: list[str]) -> list[str]:
    """The class list: distinct answers, most frequent first.

    The same numpy calls as the original (`np.unique` counts, `argsort` reversed), so ties fall
    in the same order it gives them.
    """
    unique, counts = np.unique(answers, return_counts=True)
    return unique[np.argsort(counts)[::-1]].tolist()


def samples(data_dir: Path) -> dict[str, list[Sample]]:
    rows = {split: _read_split(data_dir, split) for split in ("train", "test")}
    classes = answer_classes([answer for pairs in rows.values() for _, answer, _ in pairs])
    if len(classes) > NUM_ANSWERS:
        raise DatasetError(
            f"COCO-QA has {len(classes)} distinct answers, more than the {NUM_ANSWERS} of the release; "
            "the download is not the 2015-05-17 release"
        )
    label = {answer: index for index, answer in enumerate(classes)}
    return {
        split: [
            Sample(label[a], texts=(q,), image=str(coco_image(data_dir, IMAGE_FOLDERS[split], i))) for q, a, i in pairs
        ]
        for split, pairs in rows.items()
    }
