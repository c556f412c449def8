"""A tiny B-T4SA written in the official layout: the three list files, raw_tweets_text.csv and JPEG images.

Each image is a real JPEG whose colour follows the sentiment (negative red, neutral green,
positive blue), so a decoded image can be traced back to its label. Tweets carry what real ones
do: commas, quotes, line breaks and emoji; one tweet has two images, and the text file also
holds tweets that no list uses (it covers all of T4SA).
"""

from __future__ import annotations

import csv
from pathlib import Path

from support.fixtures_images import write_jpeg

COLOURS = ((220, 30, 30), (30, 200, 40), (40, 60, 230))  # by label: negative, neutral, positive
NAMES = ("negative", "neutral", "positive")
FIRST_TWEET_ID = 768149437775974400


def _image_path(tweet: int, number: int) -> str:
    """Where the release keeps a tweet's image, relative to b-t4sa/: data/<first 5 digits>/<tweet id>-<n>.jpg."""
    return f"data/{str(tweet)[:5]}/{tweet}-{number}.jpg"


def _tweets(per_class: int):
    """(list name, index in the list, tweet id, label, image paths) of every tweet, in list order."""
    tweet = FIRST_TWEET_ID
    for name, count in (("train", per_class), ("val", 1), ("test", per_class)):
        for index, label in enumerate(label for label in range(len(NAMES)) for _ in range(count)):
            tweet += 1
            second = [_image_path(tweet, 2)] if (name, index) == ("train", len(NAMES) * count - 1) else []
            yield name, index, tweet, label, [_image_path(tweet, 1), *second]


def _write_image(path: Path, label: int, seed: int, damage: str | None) -> None:
    if damage == "corrupt":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8 not really a jpeg")
    elif damage is None:
        write_jpeg(path, COLOURS[label], seed)


def write_b_t4sa(data_dir: Path, per_class: int = 2, without_text: int = 0, missing: int = 0, corrupt: int = 0) -> dict:
    """b-t4sa/ under `data_dir`: `per_class` tweets per label in train and test, one in val.

    The last train tweet has a second image. The first `without_text` test tweets have no row in
    raw_tweets_text.csv; the first `missing` train images are not written and the next `corrupt`
    ones are junk bytes. Returns {"train": [...], "test": [...], "broken": [image paths]}: the
    samples the loader should give, in order, each {"image", "label", "text"}; the val list is written
    but not used, as in the original.
    """
    folder = data_dir / "b-t4sa"
    folder.mkdir(parents=True, exist_ok=True)
    written: dict = {"train": [], "test": [], "broken": []}
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    texts, train_images = [], 0
    for name, index, tweet, label, images in _tweets(per_class):
        text = f'Tweet {tweet}, so "{NAMES[label]}"\ntoday \U0001f600 https://t.co/x{index}'
        has_text = name != "test" or index >= without_text
        if has_text:
            texts.append((tweet, text))
        for image in images:
            lines[name].append(f"{image} {label}")
            damage = None
            if name == "train":
                damage = (
                    "missing" if train_images < missing else "corrupt" if train_images < missing + corrupt else None
                )
                train_images += 1
            _write_image(folder / image, label, tweet, damage)
            if damage:
                written["broken"].append(folder / image)
            if has_text and name != "val":  # the original trains on the train list only
                written[name].append({"image": folder / image, "label": label, "text": text})
    for name, listed in lines.items():
        (folder / f"b-t4sa_{name}.txt").write_text("".join(f"{line}\n" for line in listed), encoding="utf-8")
    texts += [(tweet + 1, "a T4SA tweet that B-T4SA leaves out"), (tweet + 2, "another one")]
    with open(folder / "raw_tweets_text.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("id", "text"))
        writer.writerows(texts)
    return written
