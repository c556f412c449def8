"""Which clients take part in each step, and which samples each uses.

Both the in-process runner and the Flower path derive the clients of a step, and each
client's batch and the random choices of its inputs, from (seed, partition, epoch, step)
alone, so the two paths see identical data and a client never stores its schedule.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mpsl_flower.config import RunConfig
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


def batch_length(num_samples: int, client_batch_size: int, batch: int) -> int:
    """Samples in mini-batch `batch` of a client with `num_samples` (`step_batch`'s cycling included)."""
    return min(client_batch_size, num_samples - batch % num_batches(num_samples, client_batch_size) * client_batch_size)


def step_batch(
    data: SplitData,
    client_batch_size: int,
    seed: int,
    partition_id: int,
    epoch: int,
    step: int,
    batch: int | None = None,
) -> SplitData:
    """The client's mini-batch at `step`, its inputs drawn as the task draws them at each step
    (`tasks.augment`) from the same key as its rows.

    `batch`: which of the epoch's mini-batches the client takes (`StepSchedule`); by default the
    step's own, as when every client takes part in every step. A client drawn more often than it
    has batches (`clients-per-step`) cycles through them again.
    """
    batch = step if batch is None else batch
    rows = batch_rows(
        len(data), client_batch_size, seed, partition_id, epoch, batch % num_batches(len(data), client_batch_size)
    )
    return data.select(rows, input_generator(seed, partition_id, epoch, step))


def drawn_partitions(partitions: list[int], count: int, seed: int, epoch: int, step: int) -> list[int]:
    """`count` of `partitions`, drawn without replacement from (seed, epoch, step) alone, in ascending order."""
    ordered = sorted(partitions)
    picks = np.random.default_rng([seed, epoch, step]).choice(len(ordered), size=count, replace=False)
    return sorted(ordered[i] for i in picks)


class StepSchedule:
    """The clients of every step of an epoch, each with the index of the mini-batch it takes.

    Every client in every step (`clients-per-step` 0 or the number of clients; the original's
    schedule): a client takes batch `step` of its partition while it has one, and an epoch lasts
    as many steps as the largest client has batches. With K = `clients-per-step` below the number
    of clients, each step draws K clients (`drawn_partitions`), each takes its next mini-batch of
    batch-size / K samples (cycling through its partition when drawn more often than it has
    batches), and an epoch is ceil(training samples / batch-size) steps, so it uses about as many
    samples as one pass over the data.
    """

    def __init__(self, config: RunConfig, partition_sizes: dict[int, int]) -> None:
        self.config = config
        self.partition_sizes = dict(sorted(partition_sizes.items()))
        self.client_batch_size = config.client_batch_size(len(partition_sizes))
        self.sampled = config.step_clients(len(partition_sizes)) < len(partition_sizes)
        if self.sampled:
            self.num_steps = math.ceil(sum(partition_sizes.values()) / config.batch_size)
        else:
            self.num_steps = steps_per_epoch(list(partition_sizes.values()), self.client_batch_size)
        self._epoch: tuple[int, list[dict[int, int]]] | None = None  # the last epoch's draws

    def takes(self, epoch: int, step: int) -> dict[int, int]:
        """Partition -> index of its mini-batch, for the clients of `step`, in ascending partition order."""
        if not self.sampled:
            m = self.client_batch_size
            return {p: step for p, size in self.partition_sizes.items() if step < num_batches(size, m)}
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self._drawn_epoch(epoch))
        return self._epoch[1][step]

    def _drawn_epoch(self, epoch: int) -> list[dict[int, int]]:
        """Every step's draw of `epoch`, each drawn client with the number of times it was drawn before."""
        drawn_before = dict.fromkeys(self.partition_sizes, 0)
        steps = []
        for step in range(self.num_steps):
            drawn = drawn_partitions(
                list(self.partition_sizes), self.config.clients_per_step, self.config.seed, epoch, step
            )
            steps.append({p: drawn_before[p] for p in drawn})
            for p in drawn:
                drawn_before[p] += 1
        return steps
