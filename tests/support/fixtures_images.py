"""Tiny image datasets written in their official layouts: COCO-QA and the Karpathy retrieval splits.

Images are real JPEG files whose colour follows the class (or, for retrieval, the image), so
a model can learn from them; every index file has the official names and columns.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 60, 230),
    "yellow": (230, 210, 30),
    "white": (240, 240, 240),
}


def write_jpeg(path: Path, colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (96, 64)) -> Path:
    """A noisy single-colour JPEG (not square, so the resize and centre crop are exercised)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


def write_coco_qa(data_dir: Path, per_answer: int = 3, test_only_answer: str | None = "white") -> dict:
    """COCO-QA release files + COCO 2014 images; the answer is the image's colour.

    Train uses train2014 images, test val2014. `test_only_answer` adds one test pair whose
    answer never occurs in train. Returns {"answers": sorted train answers, "train": n, "test": n}.
    """
    answers = ["blue", "green", "red", "yellow"]
    counts = {}
    for split, folder, offset in (("train", "train2014", 1000), ("test", "val2014", 5000)):
        rows = []
        for index, answer in enumerate(a for a in answers for _ in range(per_answer)):
            image_id = offset + index
            write_jpeg(data_dir / "coco" / folder / f"COCO_{folder}_{image_id:012d}.jpg", COLOURS[answer], image_id)
            rows.append((f"what is the color of the object in picture {index}", answer, image_id, 2))
        if split == "test" and test_only_answer:
            image_id = offset + len(rows)
            write_jpeg(
                data_dir / "coco" / folder / f"COCO_{folder}_{image_id:012d}.jpg", COLOURS[test_only_answer], image_id
            )
            rows.append(("what is the color of the last object", test_only_answer, image_id, 2))
        split_dir = data_dir / "coco-qa" / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for position, field in enumerate(("questions", "answers", "img_ids", "types")):
            (split_dir / f"{field}.txt").write_text("".join(f"{row[position]}\n" for row in rows), encoding="utf-8")
        counts[split] = len(rows)
    return {"answers": answers, **counts}


def write_karpathy(data_dir: Path, dataset: str, train_images: int = 8, test_images: int = 4) -> dict:
    """A Karpathy split file + images for `flickr30k` or `mscoco`; captions name the image's colour.

    Adds one `val` image (not used) and one train image with only 4 captions (left out).
    Returns {"train": usable train images, "test": test images, "captions": {filename: [...]}}.
    """
    names = list(COLOURS)
    entries, captions = [], {}
    plan = [("train", i) for i in range(train_images + 1)] + [("val", 0)] + [("test", i) for i in range(test_images)]
    for number, (split, index) in enumerate(plan):
        colour = names[number % len(names)]
        if dataset == "mscoco":
            folder = "train2014" if split == "train" else "val2014"
            filename = f"COCO_{folder}_{number:012d}.jpg"
            path = data_dir / "coco" / folder / filename
            entry = {"filepath": folder, "filename": filename, "cocoid": number}
        else:
            filename = f"{1000 + number}.jpg"
            path = data_dir / "flickr30k" / "flickr30k-images" / filename
            entry = {"filename": filename}
        write_jpeg(path, COLOURS[colour], number)
        count = 4 if (split, index) == ("train", train_images) else 5 + number % 2  # some images have 6
        sentences = [f"a {colour} picture number {number} variant {k}" for k in range(count)]
        captions[filename] = sentences
        entries.append(
            {
                **entry,
                "imgid": number,
                "split": split,
                "sentences": [{"raw": s, "tokens": s.split()} for s in sentences],
            }
        )
    folder = data_dir / ("mscoco" if dataset == "mscoco" else "flickr30k")
    folder.mkdir(parents=True, exist_ok=True)
    name = "dataset_coco.json" if dataset == "mscoco" else "dataset_flickr30k.json"
    (folder / name).write_text(json.dumps({"images": entries, "dataset": dataset.replace("mscoco", "coco")}))
    return {"train": train_images, "test": test_images, "captions": captions}


def write_hf_flickr30k_table(data_dir: Path) -> Path:
    """`flickr_annotations_30k.csv` of the Hugging Face copy (nlphuji/flickr30k) for a `write_karpathy`
    Flickr30K: one row per Karpathy entry, in the split file's order (the real table's `img_id` is the
    Karpathy `imgid`), columns raw (JSON captions), sentids, split, filename, img_id."""
    root = data_dir / "flickr30k"
    entries = json.loads((root / "dataset_flickr30k.json").read_text())["images"]
    table = root / "flickr_annotations_30k.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["raw", "sentids", "split", "filename", "img_id"])
        for entry in entries:
            raw = json.dumps([s["raw"] for s in entry["sentences"]])
            sentids = json.dumps(list(range(len(entry["sentences"]))))
            writer.writerow([raw, sentids, entry["split"], entry["filename"], entry["imgid"]])
    return table
