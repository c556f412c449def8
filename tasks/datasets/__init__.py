"""The real datasets, one module each, all with the same shape.

Every module defines:

- `SPEC`: the task as data (`tasks.spec.TaskSpec`: modalities, fusion, readout, head size,
  objective);
- `FOLDER`: its folder under `torch-data-dir`, for messages and the README;
- `samples(data_dir) -> {"train": [Sample, ...], "test": [...]}`: reads the official layout
  under `data_dir` and describes each sample by its files (`tasks.preprocess.Sample`); raises
  `DatasetError` naming the missing file and how to get it;
- `ARCHIVES` (where the original downloads automatically): the official archives for
  `python -m tasks.download <dataset>`.

Decoding, caching and skipping of unreadable files happen once for all of them in
`tasks.preprocess.build_split`.
"""

from __future__ import annotations

from types import ModuleType

from tasks.datasets import (
    b_t4sa,
    coco_qa,
    flickr30k,
    kinetics_sounds,
    meld,
    mscoco,
    ucf101,
)

REAL_DATASETS: dict[str, ModuleType] = {
    module.SPEC.name: module for module in (coco_qa, b_t4sa, meld, ucf101, kinetics_sounds, flickr30k, mscoco)
}
