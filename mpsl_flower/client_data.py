"""A client's own partition of the training data, loaded once per process."""

from __future__ import annotations

import functools

from mpsl_flower.config import RunConfig
from mpsl_flower.model_inputs import load_inputs
from tasks.data import SplitData
from tasks.partitioning import partition_rows
from tasks.registry import TASKS, load_task_data


@functools.lru_cache(maxsize=4)
def _all_partition_rows(dataset: str, seed: int, split_type: str, num_partitions: int, alpha: float) -> list[list[int]]:
    data = load_task_data(dataset, seed)
    return partition_rows(data.train, TASKS[dataset].class_names, split_type, num_partitions, alpha, seed)


def client_partition(config: RunConfig, partition_id: int, num_partitions: int) -> SplitData:
    """Training samples of partition `partition_id` of `num_partitions`; same config, same rows."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id={partition_id} is outside 0..{num_partitions - 1} (num-partitions={num_partitions})")
    return _partition(config, num_partitions, partition_id)


@functools.lru_cache(maxsize=256)
def _partition(config: RunConfig, num_partitions: int, partition_id: int) -> SplitData:
    rows = _all_partition_rows(config.dataset, config.seed, config.split_type, num_partitions, config.dirichlet_alpha)
    return load_inputs(config).train.subset(rows[partition_id])
