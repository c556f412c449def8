"""Partitions come from flwr-datasets, are reproducible and respect the Dirichlet settings."""

from __future__ import annotations

import numpy as np
import pytest

from mpsl_flower.config import RunConfig
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
    assert skew(noniid) > skew(iid) + 0.2


def test_iid_is_the_dirichlet_partitioner_at_alpha_1e5_as_the_original_splits():
    """The original's `iid` is its Dirichlet partitioner at alpha 1e5 (self-balancing, >= 10 per client):
    sizes near-equal but not cut to equal shards, every client holding close to the global label mix."""
    train = _train()
    labels = train.labels.numpy()
    iid = partition_rows(train, CLASSES, "iid", 100, 0.5, seed=2024)
    sizes = [len(r) for r in iid]
    assert min(sizes) >= MIN_PARTITION_SIZE
    assert max(sizes) - min(sizes) <= 0.2 * len(train) / 100  # near-equal, not cut to equal shards
    assert len(set(sizes)) > 1
    global_share = np.bincount(labels, minlength=CLASSES) / len(labels)
    shares = [np.bincount(labels[r], minlength=CLASSES) / len(r) for r in iid]
    assert max(np.abs(share - global_share).max() for share in shares) < 0.15
    dirichlet = partition_rows(train, CLASSES, "noniid", 100, 1e5, seed=2024)
    assert iid == dirichlet  # the same draw as noniid at the original's iid alpha
    assert iid == partition_rows(train, CLASSES, "iid", 100, 0.5, seed=2024)


def test_iid_on_too_little_data_names_the_minimum_and_what_to_change():
    with pytest.raises(ValueError, match=r"at least 10 samples each.*min-partition-size"):
        partition_rows(_train().select(range(800)), CLASSES, "iid", 100, 0.5, seed=0)
    rows = partition_rows(_train().select(range(800)), CLASSES, "iid", 100, 0.5, seed=0, min_size=5)
    assert min(len(r) for r in rows) >= 5


def test_the_run_config_minimum_is_the_partitioners():
    assert RunConfig().min_partition_size == MIN_PARTITION_SIZE


def test_impossible_split_says_what_to_change():
    with pytest.raises(ValueError, match="dirichlet-alpha"):
        partition_rows(_train().select(range(300)), CLASSES, "noniid", 100, 0.05, seed=0)
