"""Flickr30K image-caption retrieval, Karpathy splits (29,000 train / 1,000 test images, 5 captions each).

Layout under `torch-data-dir`:

    flickr30k/dataset_flickr30k.json       from caption_datasets.zip
    flickr30k/flickr30k-images/<id>.jpg    the 31,783 images

The images are those of the Hugging Face copy the original reads (`nlphuji/flickr30k`), matched
to the Karpathy split by file name. A copy fetched with `hf download nlphuji/flickr30k
--repo-type dataset --local-dir <torch-data-dir>/flickr30k` leaves `flickr30k-images.zip` there,
which is verified and unpacked on first use, and `flickr_annotations_30k.csv`: the Karpathy split
and captions of every image (columns `raw`, a JSON list of captions, `sentids`, `split`,
`filename`, `img_id`). Without the Karpathy file, that table is read with the `datasets`
library instead; with both, the Karpathy file decides, as in the original.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.archives import Archive, unpack, verify
from tasks.datasets import karpathy
from tasks.preprocess import DatasetError, Sample

FOLDER = "flickr30k"
HF_ANNOTATIONS = "flickr_annotations_30k.csv"  # the Hugging Face copy's split and captions
SPEC = karpathy.retrieval_spec("flickr30k", "Flickr30K: image <-> 5 captions retrieval, R@1/5/10 both ways")
ARCHIVES = [
    karpathy.caption_archive(FOLDER),
    Archive(
        "https://huggingface.co/datasets/nlphuji/flickr30k/resolve/main/flickr30k-images.zip",
        "flickr30k-images.zip",
        FOLDER,
    ),
]


def samples(data_dir: Path) -> dict[str, list[Sample]]:
    root = data_dir / FOLDER
    images, hf_copy = root / "flickr30k-images", root / "flickr30k-images.zip"
    if not images.is_dir() and hf_copy.is_file():
        verify(hf_copy)
        unpack(hf_copy, root)
    split_file, table = root / "dataset_flickr30k.json", root / HF_ANNOTATIONS
    if not split_file.is_file() and table.is_file():
        return karpathy.split_samples(_hf_entries(table, images), SPEC.name)
    return karpathy.samples(split_file, lambda entry: images / entry["filename"], SPEC.name)


def _hf_entries(table: Path, images: Path) -> list[tuple[str, list[str], Path]]:
    """(split, captions, image) of every row of the Hugging Face copy's annotation table."""
    import datasets  # datasets pulls pandas: only this fallback reader needs it, not every run that parses a config

    try:
        rows = datasets.load_dataset("csv", data_files=str(table), split="train")
        return [(row["split"], json.loads(row["raw"]), images / row["filename"]) for row in rows]
    except (ValueError, KeyError, TypeError, datasets.exceptions.DatasetGenerationError) as error:
        raise DatasetError(
            f"flickr30k: {table} is not the annotation table of nlphuji/flickr30k ({error}); download it again"
        ) from error
