"""Split a task's training set across clients with flwr-datasets partitioners."""

from __future__ import annotations

import warnings

from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

from tasks.data import SplitData

MIN_PARTITION_SIZE = 10  # the original's default minimum per client, for both split types
IID_ALPHA = 1e5  # the original's `iid`: its Dirichlet partitioner at this concentration


def make_partitioner(
    split_type: str, num_partitions: int, alpha: float, seed: int, min_size: int = MIN_PARTITION_SIZE
) -> Partitioner:
    """`noniid`: Dirichlet over labels at `alpha`; `iid`: the same at α = 1e5, as the original splits,
    which gives near-equal label shares and sizes within a few samples. Both self-balance and redraw
    until every client has `min_size` samples. `even` (retrieval, which has no labels): equal shares
    at random; `IidPartitioner` cuts contiguous shards, so `task_partitioner` shuffles the rows first.
    """
    if split_type == "even":
        return IidPartitioner(num_partitions=num_partitions)
    if split_type not in ("iid", "noniid"):
        raise ValueError(f"unknown split type {split_type!r}; allowed values: iid, noniid")
    return DirichletPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        alpha=IID_ALPHA if split_type == "iid" else alpha,
        min_partition_size=min_size,
        self_balancing=True,
        shuffle=True,
        seed=seed,
    )


def task_partitioner(
    train: SplitData,
    num_classes: int,
    split_type: str,
    num_partitions: int,
    alpha: float,
    seed: int,
    min_size: int = MIN_PARTITION_SIZE,
) -> Partitioner:
    """The flwr-datasets partitioner of a task's training set (with its `datasets.Dataset` of (row, label)),
    e.g. for flwr-datasets' `plot_label_distributions`. Retrieval tasks (`num_classes` 0) have no labels
    to skew: they always get the even random split, as the original's retrieval partitioner does."""
    if num_classes == 0:
        split_type = "even"
    partitioner = make_partitioner(split_type, num_partitions, alpha, seed, min_size)
    index = train.index_dataset(num_classes)
    partitioner.dataset = index.shuffle(seed=seed) if split_type == "even" else index
    return partitioner


def partition_rows(
    train: SplitData,
    num_classes: int,
    split_type: str,
    num_partitions: int,
    alpha: float,
    seed: int,
    min_size: int = MIN_PARTITION_SIZE,
) -> list[list[int]]:
    """Row indices of every partition; the same arguments always give the same partitions."""
    partitioner = task_partitioner(train, num_classes, split_type, num_partitions, alpha, seed, min_size)
    with warnings.catch_warnings():
        # flwr-datasets warns on every Dirichlet redraw; only a final failure matters.
        warnings.simplefilter("ignore", UserWarning)
        try:
            return [
                partitioner.load_partition(pid).with_format("numpy")["row"][:].tolist() for pid in range(num_partitions)
            ]
        except ValueError as error:
            shown_alpha = IID_ALPHA if split_type == "iid" else alpha
            raise ValueError(
                f"could not split {len(train)} samples over {num_partitions} clients "
                f"({split_type}: Dirichlet alpha={shown_alpha:g}) with at least {min_size} samples each "
                f"({error}); use fewer clients, more data, a smaller min-partition-size"
                + (", or a larger dirichlet-alpha" if split_type == "noniid" else "")
            ) from error
