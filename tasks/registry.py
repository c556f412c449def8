"""The tasks a run can choose by name, and how to load their data.

Embedded tasks are generated from the seed. Real datasets are read from their official
layout under `torch-data-dir` (each module in `tasks/datasets/` says which) and decoded once
into the preprocessing cache. As in the original, a dataset that can be downloaded is
downloaded when a run first needs it; offline, the error says what to fetch by hand.
A rehearsal of a real dataset generates its data in the real layout instead (`tasks.rehearsal`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from pathlib import Path

from tasks import embedded
from tasks.archives import download
from tasks.data import TaskData
from tasks.datasets import REAL_DATASETS
from tasks.preprocess import DatasetError, build_split
from tasks.rehearsal import Rehearsal, rehearsal_data
from tasks.spec import RandomMoment, TaskSpec, fusion_readout, fusion_types

logger = logging.getLogger(__name__)

EMBEDDED: dict[str, TaskSpec] = {spec.name: spec for spec in (embedded.SHAPES_QA, embedded.SHAPES_AV)}
TASKS: dict[str, TaskSpec] = {**EMBEDDED, **{name: module.SPEC for name, module in REAL_DATASETS.items()}}


# The original's `--audio_time_dimension` for UCF101 and Kinetics-Sounds: (audio window in s, fbank frames).
AUDIO_TIME_DIMENSIONS = {"10.24s": (10.255, 1024), "1s": (1.0, 98)}
DEFAULT_AUDIO_TIME = "10.24s"
DEFAULT_FUSION = "default"


def configured_task(name: str, fusion_type: str = DEFAULT_FUSION, audio_time: str = DEFAULT_AUDIO_TIME) -> TaskSpec:
    """Task `name` as the original's `--fusion_type` and `--audio_time_dimension` shape it.

    Raises ValueError naming the choices when an option does not apply to the task.
    """
    task = TASKS[name]
    if audio_time != DEFAULT_AUDIO_TIME:
        if not isinstance(task.augmentation, RandomMoment):
            raise ValueError(
                f"audio-time-dimension={audio_time!r} applies to ucf101 and kinetics-sounds only, as in the original "
                f"(MELD's window is 7.68 s); leave it at {DEFAULT_AUDIO_TIME!r} for {name}"
            )
        seconds, frames = AUDIO_TIME_DIMENSIONS[audio_time]
        audio = replace(task.audio, num_frames=frames)
        task = replace(task, audio=audio, augmentation=replace(task.augmentation, window_seconds=seconds))
    fusion = task.fusion
    if fusion_type != DEFAULT_FUSION:
        names = fusion_types(task)
        if fusion_type.lower() not in names:
            choices = ", ".join(repr(n) for n in [DEFAULT_FUSION, *names])
            raise ValueError(f"fusion-type={fusion_type!r} does not apply to {name}; choose one of {choices}")
        fusion = names[fusion_type.lower()]
    return replace(task, fusion=fusion, readout=fusion_readout(fusion, task.image, task.audio, task.text))


@functools.lru_cache(maxsize=4)
def load_task_data(
    name: str,
    seed: int,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    task: TaskSpec | None = None,
    rehearsal: Rehearsal | None = None,
    embedded_train_samples: int = 0,
) -> TaskData:
    """Train and test splits of task `name`, decoded as `task` says (default: the task as registered);
    embedded tasks are generated from `seed` (`embedded_train_samples` training samples; 0: the default),
    and so is a real task's `rehearsal`, in its real layout (no files read)."""
    if name in EMBEDDED:
        return embedded.generate(name, seed, embedded_train_samples)
    if rehearsal is not None:
        return rehearsal_data(task or REAL_DATASETS[name].SPEC, seed, rehearsal)
    _require_data_dir(name, data_dir)
    if cache_dir is None:  # before reading (or downloading) anything
        raise DatasetError(
            f"dataset={name!r} is decoded into pre-processors-cache-dir: set it to a folder with free space"
        )
    splits = listed_samples(name, data_dir)
    task = task or REAL_DATASETS[name].SPEC
    return TaskData(*(build_split(task, splits[split], cache_dir, split) for split in ("train", "test")))


def listed_samples(name: str, data_dir: Path | None) -> dict[str, list]:
    """The samples a real dataset's annotation lists name per split (`tasks.preprocess.Sample`: files, texts,
    label), nothing decoded: a device picks its own from them."""
    return _samples_downloading_once(REAL_DATASETS[name], _require_data_dir(name, data_dir))


def _require_data_dir(name: str, data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DatasetError(
            f"dataset={name!r} is read from disk: set torch-data-dir to the folder that holds "
            f"{REAL_DATASETS[name].FOLDER}/ (README, 'Datasets')"
        )
    return Path(data_dir)


def _samples_downloading_once(module, data_dir: Path) -> dict:
    """The dataset's samples; when its files are not there yet, its official archives are fetched first."""
    try:
        return module.samples(data_dir)
    except DatasetError as missing:
        archives = getattr(module, "ARCHIVES", ())
        if not archives or all((data_dir / "downloads" / archive.file_name).is_file() for archive in archives):
            raise  # not downloadable, or downloaded already: the files themselves are wrong
        logger.warning("%s; downloading the official archives into %s once, as the original does", missing, data_dir)
        download(archives, data_dir)
        return module.samples(data_dir)
