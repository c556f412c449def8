"""The tasks a run can choose by name, and how to load their data.

Embedded tasks are generated from the seed. Real datasets are read from their official
layout under `torch-data-dir` (each module in `tasks/datasets/` says which) and decoded once
into the preprocessing cache. As in the original, a dataset that can be downloaded is
downloaded when a run first needs it; offline, the error says what to fetch by hand.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from tasks import embedded
from tasks.data import TaskData
from tasks.datasets import REAL_DATASETS
from tasks.download import download
from tasks.preprocess import DatasetError, build_split
from tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

EMBEDDED: dict[str, TaskSpec] = {spec.name: spec for spec in (embedded.SHAPES_QA, embedded.SHAPES_AV)}
TASKS: dict[str, TaskSpec] = {**EMBEDDED, **{name: module.SPEC for name, module in REAL_DATASETS.items()}}


@functools.lru_cache(maxsize=4)
def load_task_data(name: str, seed: int, data_dir: Path | None = None, cache_dir: Path | None = None) -> TaskData:
    """Train and test splits of task `name`; embedded tasks are generated from `seed`."""
    if name in EMBEDDED:
        return embedded.generate(name, seed)
    module = REAL_DATASETS[name]
    if data_dir is None:
        raise DatasetError(
            f"dataset={name!r} is read from disk: set torch-data-dir to the folder that holds {module.FOLDER}/ "
            f"(README, 'Datasets')"
        )
    if cache_dir is None:
        raise DatasetError(
            f"dataset={name!r} is decoded into pre-processors-cache-dir: set it to a folder with free space"
        )
    splits = _samples_downloading_once(module, Path(data_dir))
    return TaskData(*(build_split(module.SPEC, splits[split], cache_dir, split) for split in ("train", "test")))


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
