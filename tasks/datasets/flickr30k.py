"""Flickr30K image-caption retrieval, Karpathy splits (29,000 train / 1,000 test images, 5 captions each).

Layout under `torch-data-dir`:

    flickr30k/dataset_flickr30k.json       from caption_datasets.zip
    flickr30k/flickr30k-images/<id>.jpg    the 31,783 images

The images are those of the Hugging Face copy the original reads (`nlphuji/flickr30k`), matched
to the Karpathy split by file name. A copy fetched with `hf download nlphuji/flickr30k
--repo-type dataset --local-dir <torch-data-dir>/flickr30k` leaves `flickr30k-images.zip` there;
it is verified and unpacked on first use.
"""

from __future__ import annotations

from pathlib import Path

from tasks.datasets import karpathy
from tasks.download import Archive, unpack, verify
from tasks.preprocess import Sample

FOLDER = "flickr30k"
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
    return karpathy.samples(
        root / "dataset_flickr30k.json", lambda entry: root / "flickr30k-images" / entry["filename"], SPEC.name
    )
