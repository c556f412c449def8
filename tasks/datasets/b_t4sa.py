"""B-T4SA (Vadicamo et al., 2017): a tweet's image and text, negative / neutral / positive sentiment.

The release is not public: request access at http://www.t4sa.it/, unpack b-t4sa_imgs.tar (the
lists and the images) and put raw_tweets_text.csv beside them, so that `torch-data-dir` holds:

    b-t4sa/b-t4sa_{train,test}.txt        one line per image: `data/78476/784760943188189184-1.jpg 0`
    b-t4sa/data/...                         the images, paths relative to b-t4sa/
    b-t4sa/raw_tweets_text.csv              columns id,text: the text of every collected tweet

Labels are 0 negative, 1 neutral, 2 positive. Train is the train list, test the test list, as
in the original code (the release's b-t4sa_val.txt is not used, and need not be there). A
tweet may have several images (`-1`, `-2`, ...); each is a sample with the tweet's text. An
image whose tweet has no text is left out, counted; an unreadable image is skipped and
counted by `tasks.preprocess.build_split`.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from tasks.preprocess import DatasetError, Sample
from tasks.spec import ORIGINAL_STILL_IMAGE, early_fusion_task

logger = logging.getLogger(__name__)
FOLDER = "b-t4sa"
CLASS_NAMES = ("negative", "neutral", "positive")
SPLITS = {"train": ("train",), "test": ("test",)}  # the original reads these two lists; val is not used
TEXTS_FILE = "raw_tweets_text.csv"

SPEC = early_fusion_task(
    "b-t4sa",
    "B-T4SA: tweet image + text, 3-class sentiment classification (early fusion)",
    CLASS_NAMES,
    image=ORIGINAL_STILL_IMAGE,
)


def _required(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(
            f"B-T4SA: {path} is missing; request access at http://www.t4sa.it/ "
            f"and unpack the release into {path.parent}"
        )
    return path


def _read_list(data_dir: Path, name: str) -> list[tuple[str, int]]:
    """(image path relative to b-t4sa/, label) for each line of b-t4sa_<name>.txt."""
    path = _required(data_dir / FOLDER / f"b-t4sa_{name}.txt")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        image, _, label = line.strip().rpartition(" ")
        if not image or label not in ("0", "1", "2"):
            raise DatasetError(
                f"B-T4SA: {path} line {number} is not `<image path> <0|1|2>`: {line!r}; the file is damaged"
            )
        entries.append((image.strip(), int(label)))
    return entries


def _tweet_id(image: str) -> str:
    """The tweet an image belongs to: its file name up to the '-' (`data/78476/78476...-1.jpg` -> `78476...`)."""
    return Path(image).name.split("-", 1)[0]


def _read_texts(data_dir: Path, wanted: set[str]) -> dict[str, str]:
    """Texts of the wanted tweets only: the file holds all ~3.4 M collected tweets (414 MB), B-T4SA needs a fraction."""
    path = _required(data_dir / FOLDER / TEXTS_FILE)
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"id", "text"} <= set(reader.fieldnames or ()):
            raise DatasetError(f"B-T4SA: {path} has columns {reader.fieldnames}, not id,text; the file is damaged")
        try:
            return {row["id"].strip(): row["text"] for row in reader if row["id"] and row["id"].strip() in wanted}
        except csv.Error as error:
            raise DatasetError(
                f"B-T4SA: {path} line {reader.line_num} is not readable CSV ({error}); the file is damaged"
            ) from error


def samples(data_dir: Path) -> dict[str, list[Sample]]:
    lists = {
        split: [entry for name in names for entry in _read_list(data_dir, name)] for split, names in SPLITS.items()
    }
    texts = _read_texts(data_dir, {_tweet_id(image) for entries in lists.values() for image, _ in entries})
    folder = data_dir / FOLDER
    result = {}
    for split, entries in lists.items():
        known = [(image, label) for image, label in entries if _tweet_id(image) in texts]
        if len(known) < len(entries):
            logger.warning(
                "B-T4SA %s: %d images left out, their tweet has no text in %s",
                split,
                len(entries) - len(known),
                TEXTS_FILE,
            )
        result[split] = [
            Sample(label, texts=(texts[_tweet_id(image)],), image=str(folder / image)) for image, label in known
        ]
    return result
