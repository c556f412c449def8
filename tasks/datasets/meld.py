"""MELD (Poria et al., 2019): an utterance from the TV series Friends, its audio and transcript, one of 7 emotions.

Layout under `torch-data-dir`. `python -m tasks.download meld` unpacks MELD.Raw.tar.gz into `meld/`
and then the three clip archives inside it, MELD.Raw/{train,dev,test}.tar.gz, where they lie (by
hand: `tar -xzf train.tar.gz` in MELD.Raw, and so on):

    meld/MELD.Raw/{train,dev,test}_sent_emo.csv                  one row per utterance
    meld/MELD.Raw/train_splits/dia<Dialogue_ID>_utt<Utterance_ID>.mp4
    meld/MELD.Raw/dev_splits_complete/dia<D>_utt<U>.mp4
    meld/MELD.Raw/output_repeated_splits_test/dia<D>_utt<U>.mp4

Train is the official train + dev, test the official test. A sample is 2.56 s of the clip's
audio track, placed at a random offset in a 7.68 s window (the original's 766 fbank frames, 912
patches), and the utterance text; the 2.56 s start at a random point in training and at the
clip's start at test, drawn at every step (`tasks.spec.RandomAudioPlacement`).
The one clip the original leaves out as corrupt (`EXCLUDED`) is left out here too. A row whose
clip is missing or unreadable stays in the list and is skipped and counted by
`tasks.preprocess.build_split`, like any unreadable file (train + dev list 11,098 rows; less the
excluded clip and the one the release lacks, the paper's 11,096).
"""

from __future__ import annotations

import csv
from pathlib import Path

from tasks.archives import Archive
from tasks.preprocess import DatasetError, Sample
from tasks.spec import AudioInput, RandomAudioPlacement, early_fusion_task

FOLDER = "meld"
RELEASE = "MELD.Raw"
# Label ids as the original numbers them: its emotion names sorted (`sorted(set(targets))`), anger 0 ...
# surprise 6. The Dirichlet partitioner draws per label in this order, so it decides the non-IID split.
CLASS_NAMES = tuple(sorted(("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")))
# official split -> (its clip folder, the archive inside MELD.Raw that unpacks to that folder)
OFFICIAL_SPLITS = {
    "train": ("train_splits", "train.tar.gz"),
    "dev": ("dev_splits_complete", "dev.tar.gz"),
    "test": ("output_repeated_splits_test", "test.tar.gz"),
}
SPLITS = {"train": ("train", "dev"), "test": ("test",)}
# The clips the original code leaves out as corrupt, as (official split, Dialogue_ID, Utterance_ID):
# its assets/meld/corrupted_samples.txt (MIT, "Copyright (c) 2025 Nousphera") lists train_dia125_utt3.
EXCLUDED = frozenset({("train", 125, 3)})

SPEC = early_fusion_task(
    "meld",
    "MELD: Friends utterance audio + transcript, 7-emotion classification (early fusion)",
    CLASS_NAMES,
    audio=AudioInput(num_frames=766, original=True),
    augmentation=RandomAudioPlacement(),
)

ARCHIVES = [
    Archive(
        "http://web.eecs.umich.edu/~mihalcea/downloads/MELD.Raw.tar.gz",
        "MELD.Raw.tar.gz",
        FOLDER,
        inner=tuple(f"{RELEASE}/{archive}" for _, archive in OFFICIAL_SPLITS.values()),
    )
]

# The CSVs hold Windows-1252 punctuation stored as C1 control characters ("I\x92m"); map them back
# so the text encoder sees "I’m". The five codes cp1252 leaves undefined stay as they are.
_CP1252_PUNCTUATION = {
    code: char for code in range(0x80, 0xA0) if (char := bytes([code]).decode("cp1252", errors="ignore"))
}


def _how_to_get_it(data_dir: Path) -> str:
    release = data_dir / FOLDER / RELEASE
    return (
        f"run `python -m tasks.download meld --data-dir {data_dir}`, "
        f"which also extracts the clip archives in {release} "
        f"(by hand: `tar -xzf train.tar.gz`, `dev.tar.gz`, `test.tar.gz` there)"
    )


def _read_rows(data_dir: Path, official: str) -> list[dict[str, str]]:
    path = data_dir / FOLDER / RELEASE / f"{official}_sent_emo.csv"
    if not path.is_file():
        raise DatasetError(f"MELD: {path} is missing; {_how_to_get_it(data_dir)}")
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            return list(csv.DictReader(handle))
    except csv.Error as error:
        raise DatasetError(f"MELD: {path} is not a readable CSV ({error}); the file is damaged") from error


def _clip_folder(data_dir: Path, official: str) -> Path:
    """The split's clip folder; its absence means the inner archive was never extracted, worth saying once."""
    folder_name, archive = OFFICIAL_SPLITS[official]
    folder = data_dir / FOLDER / RELEASE / folder_name
    if not folder.is_dir():
        raise DatasetError(
            f"MELD: the clip folder {folder} is missing; extract {folder.parent / archive} ({_how_to_get_it(data_dir)})"
        )
    return folder


def _sample(row: dict[str, str], official: str, folder: Path, where: str) -> Sample | None:
    """The row's sample; None for a clip the original leaves out (`EXCLUDED`)."""
    try:
        label = CLASS_NAMES.index(row["Emotion"].strip().lower())
        dialogue, utterance = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
        text = row["Utterance"].translate(_CP1252_PUNCTUATION).strip()
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise DatasetError(
            f"MELD {where}: no valid Emotion, Dialogue_ID, Utterance_ID or Utterance ({error}); damaged file"
        ) from error
    if (official, dialogue, utterance) in EXCLUDED:
        return None
    clip = folder / f"dia{dialogue}_utt{utterance}.mp4"
    return Sample(label, texts=(text,), clip=str(clip))


def samples(data_dir: Path) -> dict[str, list[Sample]]:
    result = {}
    for split, officials in SPLITS.items():
        result[split] = []
        for official in officials:
            rows, folder = _read_rows(data_dir, official), _clip_folder(data_dir, official)
            for number, row in enumerate(rows, 2):
                sample = _sample(row, official, folder, f"{official}_sent_emo.csv row {number}")
                if sample is not None:
                    result[split].append(sample)
    return result
