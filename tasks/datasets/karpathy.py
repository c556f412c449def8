"""Karpathy splits (`dataset_<name>.json` of caption_datasets.zip), shared by Flickr30K and MS-COCO.

Each entry names an image (`filepath` for COCO, `filename`), its split (`train`, `restval`,
`val`, `test`) and its captions (`sentences[].raw`). We train on `train` and test on `test`
(Flickr30K 29,000 / 1,000; MS-COCO 82,783 / 5,000), with the first five captions of each
image; an image with fewer than five is left out, counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from tasks.archives import Archive
from tasks.preprocess import DatasetError, Sample
from tasks.spec import LATE_FUSION, ORIGINAL_STILL_IMAGE, RETRIEVAL, TaskSpec, TextInput

logger = logging.getLogger(__name__)
CAPTIONS = 5
SPLITS = {"train": "train", "test": "test"}
CAPTION_ARCHIVE_URL = (
    "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"  # https, as the original notes
)


def retrieval_spec(name: str, description: str) -> TaskSpec:
    """Image + 5 captions, no head: the image CLS output and each caption's output are the embeddings."""
    return TaskSpec(
        name=name,
        description=description,
        num_classes=0,
        class_names=(),
        fusion=LATE_FUSION,
        readout=(("image", 0, "image"), ("text", 0, "text")),
        objective=RETRIEVAL,
        image=ORIGINAL_STILL_IMAGE,
        text=TextInput(per_sample=CAPTIONS),
    )


def caption_archive(folder: str) -> Archive:
    return Archive(CAPTION_ARCHIVE_URL, "caption_datasets.zip", folder)


def samples(split_file: Path, image_path: Callable[[dict], Path], dataset: str) -> dict[str, list[Sample]]:
    """Samples of the train and test splits of a Karpathy split file."""
    if not split_file.is_file():
        raise DatasetError(
            f"{dataset}: {split_file} is missing; run `python -m tasks.download {dataset} --data-dir <torch-data-dir>`"
        )
    try:
        images = json.loads(split_file.read_text(encoding="utf-8"))["images"]
        entries = [(e["split"], [s["raw"] for s in e["sentences"]], image_path(e)) for e in images]
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(
            f"{dataset}: {split_file} is not a Karpathy split file ({error}); download it again"
        ) from error
    return split_samples(entries, dataset)


def split_samples(entries: list[tuple[str, list[str], Path]], dataset: str) -> dict[str, list[Sample]]:
    """Train and test samples of (Karpathy split, captions, image file) entries, in their order; the label
    of a sample is its row (retrieval has no classes)."""
    result = {}
    for ours, theirs in SPLITS.items():
        chosen = [(captions, image) for split, captions, image in entries if split == theirs]
        complete = [(captions, image) for captions, image in chosen if len(captions) >= CAPTIONS]
        if len(complete) < len(chosen):
            logger.warning(
                "%s %s: %d images with fewer than %d captions left out",
                dataset,
                ours,
                len(chosen) - len(complete),
                CAPTIONS,
            )
        result[ours] = [
            Sample(row, texts=tuple(c.strip() for c in captions[:CAPTIONS]), image=str(image))
            for row, (captions, image) in enumerate(complete)
        ]
    return result
