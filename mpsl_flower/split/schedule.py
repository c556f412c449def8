"""Which samples a client uses at each step.

Both the in-process runner and the Flower client derive batches, and the random choices of
their inputs, from (seed, partition, epoch, step) alone, so the two paths see identical data
and a client never stores its schedule.
"""

from __future__ import annotations

import math

import torch

from tasks.augment import input_generator
from tasks.data import SplitData


def num_batches(num_samples: int, client_batch_size: int) -> int:
    """Steps a client with `num_samples` takes part in per epoch."""
    return math.ceil(num_samples / client_batch_size)


def steps_per_epoch(partition_sizes: list[int], client_batch_size: int) -> int:
    """An epoch lasts as many steps as the largest client has batches."""
    return max(num_batches(size, client_batch_size) for size in partition_sizes)


def batch_rows(
    num_samples: int, client_batch_size: int, seed: int, partition_id: int, epoch: int, step: int
) -> torch.Tensor:
    """Rows (into the client's partition) of its mini-batch at `step`; empty once out of data."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + partition_id * 1_009 + epoch)
    order = torch.randperm(num_samples, generator=generator)
    return order[step * client_batch_size : (step + 1) * client_batch_size]


def step_batch(
    data: SplitData, client_batch_size: int, seed: int, partition_id: int, epoch: int, step: int
) -> SplitData:
    """The client's mini-batch at `step`, its inputs drawn as the task draws them at each step
    (`tasks.augment`) from the same key as its rows."""
    rows = batch_rows(len(data), client_batch_size, seed, partition_id, epoch, step)
    return data.select(rows, input_generator(seed, partition_id, epoch, step))
