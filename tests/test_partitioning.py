"""Partitions come from flwr-datasets, are reproducible and respect the Dirichlet settings."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.partitioning import MIN_PARTITION_SIZE, partition_rows
from tasks.registry import TASKS, load_task_data

CLASSES = TASKS["shapes-qa"].num_classes


def _train():
    return load_task_data("shapes-qa", 2024).train


def test_same_seed_same_partitions_other_seed_others():
    first = partition_rows(_train(), CLASSES, "noniid", 20, 0.5, seed=1)
    assert first == partition_rows(_train(), CLASSES, "noniid", 20, 0.5, seed=1)
    assert first != partition_rows(_train(), CLASSES, "noniid", 20, 0.5, seed=2)


@pytest.mark.parametrize("split_type", ["iid", "noniid"])
def test_every_sample_lands_in_exactly_one_partition(split_type):
    rows = partition_rows(_train(), CLASSES, split_type, 100, 0.5, seed=2024)
    flat = [r for part in rows for r in part]
    assert sorted(flat) == list(range(len(_train())))


def test_noniid_gives_every_client_at_least_the_minimum_and_skews_labels():
    train = _train()
    labels = train.labels.numpy()

    def skew(rows):  # mean share of each client's most common label
        return np.mean([np.bincount(labels[r]).max() / len(r) for r in rows])

    noniid = partition_rows(train, CLASSES, "noniid", 100, 0.5, seed=2024)
    iid = partition_rows(train, CLASSES, "iid", 100, 0.5, seed=2024)
    assert min(len(r) for r in noniid) >= MIN_PARTITION_SIZE
    assert {len(r) for r in iid} == {len(train) // 100}
    assert skew(noniid) > skew(iid) + 0.2


def test_impossible_split_says_what_to_change():
    with pytest.raises(ValueError, match="dirichlet-alpha"):
        partition_rows(_train().select(range(300)), CLASSES, "noniid", 100, 0.05, seed=0)
