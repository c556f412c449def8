"""Split a task's training set across clients with flwr-datasets partitioners."""

from __future__ import annotations

import warnings

from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

from tasks.data import SplitData

MIN_PARTITION_SIZE = 10


def make_partitioner(split_type: str, num_partitions: int, alpha: float, seed: int) -> Partitioner:
    """`noniid`: Dirichlet over labels (self-balancing, >= 10 per client); `iid`: even split.

    `IidPartitioner` cuts contiguous shards, so `partition_rows` shuffles the rows first.
    """
    if split_type == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if split_type == "noniid":
        return DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=alpha,
            min_partition_size=MIN_PARTITION_SIZE,
            self_balancing=True,
            shuffle=True,
            seed=seed,
        )
    raise ValueError(f"unknown split type {split_type!r}; allowed values: iid, noniid")


def task_partitioner(
    train: SplitData, num_classes: int, split_type: str, num_partitions: int, alpha: float, seed: int
) -> Partitioner:
    """The flwr-datasets partitioner of a task's training set (with its `datasets.Dataset` of (row, label)),
    e.g. for flwr-datasets' `plot_label_distributions`. Retrieval tasks (`num_classes` 0) have no labels
    to skew: they always get the even random split."""
    if num_classes == 0:
        split_type = "iid"
    partitioner = make_partitioner(split_type, num_partitions, alpha, seed)
    index = train.index_dataset(num_classes)
    partitioner.dataset = index.shuffle(seed=seed) if split_type == "iid" else index
    return partitioner


def partition_rows(
    train: SplitData, num_classes: int, split_type: str, num_partitions: int, alpha: float, seed: int
) -> list[list[int]]:
    """Row indices of every partition; the same arguments always give the same partitions."""
    partitioner = task_partitioner(train, num_classes, split_type, num_partitions, alpha, seed)
    with warnings.catch_warnings():
        # flwr-datasets warns on every Dirichlet redraw; only a final failure matters.
        warnings.simplefilter("ignore", UserWarning)
        try:
            return [
                partitioner.load_partition(pid).with_format("numpy")["row"][:].tolist() for pid in range(num_partitions)
            ]
        except ValueError as error:
            raise ValueError(
                f"could not split {len(train)} samples over {num_partitions} clients with "
                f"dirichlet-alpha={alpha} and at least {MIN_PARTITION_SIZE} samples each ({error}); "
                "use fewer clients, a larger dirichlet-alpha, or dataset-split-type='iid'"
            ) from error
