"""`label-attack-report`: the gradients a curious MPSL server keeps to attack, and the epoch's attack scores.

The server keeps up to `ATTACK_SAMPLES_PER_EPOCH` rows of the gradients clients send back
(dL/dlogits, or dL/dfeatures with the head on the clients) and, at the end of the epoch, runs
`measure.label_attacks` on them. To score the attacks it reads the true labels from the data it
has in simulation (as for `run_info`'s label counts), for measurement only: no client sends one.
"""

from __future__ import annotations

import torch

from mpsl_flower.config import RunConfig
from mpsl_flower.measure.label_attacks import attack_report
from mpsl_flower.node.partitions import client_partition
from mpsl_flower.split.schedule import step_batch

ATTACK_SAMPLES_PER_EPOCH = 5000  # gradient rows kept per epoch (bounds memory)


class GradientSample:
    """The epoch's kept gradient rows, by (partition, epoch, step); empty unless `label-attack-report`."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.rows: list[tuple[int, int, int, torch.Tensor]] = []

    def observe(self, partition: int, epoch: int, step: int, grad: torch.Tensor) -> None:
        """Keep the rows of one client's gradient, up to the epoch's bound."""
        kept = sum(len(rows) for *_, rows in self.rows)
        if self.config.label_attack_report and kept < ATTACK_SAMPLES_PER_EPOCH:
            self.rows.append((partition, epoch, step, grad[: ATTACK_SAMPLES_PER_EPOCH - kept].clone()))

    def attack_figures(self, num_clients: int, client_batch_size: int) -> dict:
        """The epoch's attack scores against the true labels (nothing when no row was kept); starts a new epoch."""
        if not self.rows:
            return {}
        grads, labels = [], []
        for partition, epoch, step, rows in self.rows:
            data = client_partition(self.config, partition, num_clients)
            batch = step_batch(data, client_batch_size, self.config.seed, partition, epoch, step)
            labels.append(batch.labels[: len(rows)])
            grads.append(rows)
        self.rows = []
        direct = not self.config.head_on_client  # the server sees dL/dlogits
        return attack_report(
            torch.cat(grads).numpy(), torch.cat(labels).numpy(), self.config.task.num_classes, self.config.seed, direct
        )
