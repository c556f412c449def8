"""MS-COCO image-caption retrieval, Karpathy splits (82,783 train / 5,000 test images, 5 captions each).

Layout under `torch-data-dir` (images shared with COCO-QA):

    mscoco/dataset_coco.json                        from caption_datasets.zip
    coco/train2014/COCO_train2014_<id:012d>.jpg     COCO 2014 images
    coco/val2014/COCO_val2014_<id:012d>.jpg
"""

from __future__ import annotations

from pathlib import Path

from tasks.datasets import karpathy
from tasks.datasets.coco_qa import COCO_2014_IMAGES
from tasks.preprocess import Sample

FOLDER = "mscoco"
SPEC = karpathy.retrieval_spec("mscoco", "MS-COCO: image <-> 5 captions retrieval, R@1/5/10 both ways")
ARCHIVES = [karpathy.caption_archive(FOLDER), *COCO_2014_IMAGES]


def samples(data_dir: Path) -> dict[str, list[Sample]]:
    return karpathy.samples(
        data_dir / FOLDER / "dataset_coco.json",
        lambda entry: data_dir / "coco" / entry["filepath"] / entry["filename"],
        SPEC.name,
    )
