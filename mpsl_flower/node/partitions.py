"""A client's own partition of the training data, loaded once per process."""

from __future__ import annotations

import functools

import torch

from mpsl_flower.config import RunConfig
from mpsl_flower.node.device_partition import check_partition_id, partition_rows_of
from mpsl_flower.split.model_inputs import load_inputs
from tasks.data import SplitData


@functools.lru_cache(maxsize=4)
def _all_partition_rows(config: RunConfig, num_partitions: int) -> list[list[int]]:
    return partition_rows_of(config, load_inputs(config).train.labels, num_partitions)


def client_partition(config: RunConfig, partition_id: int, num_partitions: int) -> SplitData:
    """Training samples of partition `partition_id` of `num_partitions`; same config, same rows."""
    check_partition_id(partition_id, num_partitions)
    return _partition(config, num_partitions, partition_id)


@functools.lru_cache(maxsize=256)
def _partition(config: RunConfig, num_partitions: int, partition_id: int) -> SplitData:
    rows = _all_partition_rows(config, num_partitions)
    return load_inputs(config).train.subset(rows[partition_id])


def partition_label_counts(config: RunConfig, num_partitions: int) -> dict[int, dict[int, int]]:
    """Each partition's samples per label, as the seeded partitioner makes them (for `run_info.json`).

    Computed where the data is (the server of a simulation, or any machine with the dataset),
    never reported by clients. Retrieval tasks have no labels: every partition's counts are empty.
    """
    labels = load_inputs(config).train.labels
    rows = _all_partition_rows(config, num_partitions)
    return {partition_id: label_counts(config, labels[r]) for partition_id, r in enumerate(rows)}


def label_counts(config: RunConfig, labels: torch.Tensor) -> dict[int, int]:
    """Samples per label; empty for retrieval tasks, which have no labels."""
    if config.task.num_classes == 0:
        return {}
    values, tallies = labels.unique(return_counts=True)
    return dict(zip(values.tolist(), tallies.tolist()))
