"""Bookkeeping shared by every training driver: per-epoch tallies, the epoch record, its log line.

One record format serves every method and path (in-process runner, every Flower strategy), so
results of different methods compare key by key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mpsl_flower.config import RunConfig
from mpsl_flower.models.tokenizers import ClientModel
from mpsl_flower.models.weights import load_trainable
from mpsl_flower.split.aggregation import weighted_average
from mpsl_flower.split.build import new_client_model


@dataclass
class EpochTally:
    """What an epoch's steps add up to: training loss/accuracy, traffic and time per phase."""

    started_at: float = field(default_factory=time.perf_counter)
    loss_sum: float = 0.0
    correct: int = 0
    samples: int = 0
    steps: int = 0
    dropped: int = 0  # client-steps lost to failures
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_analytic: float = 0.0  # what the method's messages must carry (`mpsl_flower.accounting`)
    client_compute_s: float = 0.0  # summed over clients
    server_compute_s: float = 0.0

    def add_client_loss(self, loss_sum: float, correct: int, samples: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.samples += samples

    def train_record(self, epoch: int, lr: float, clients_aggregated: int) -> dict:
        """The training half of the epoch's record (`epoch` counts from 0, the record from 1)."""
        return {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": self.loss_sum / max(self.samples, 1),
            "train_accuracy": self.correct / max(self.samples, 1),
            "steps": self.steps,
            "clients_aggregated": clients_aggregated,
            "dropped_client_steps": self.dropped,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "bytes_analytic": self.bytes_analytic,
            "train_wall_s": time.perf_counter() - self.started_at,
            "client_compute_s": self.client_compute_s,
            "server_compute_s": self.server_compute_s,
        }


def with_evaluation(train_record: dict, evaluate: Callable[[], Mapping[str, float] | None]) -> dict:
    """The full epoch record: the training half plus what `evaluate` returns, timed as `eval_s`."""
    started = time.perf_counter()
    test_metrics = evaluate() or {}
    return {**train_record, **test_metrics, "eval_s": time.perf_counter() - started}


def averaged_client_model(config: RunConfig, states: list[dict[str, np.ndarray]], weights: list[int]) -> ClientModel:
    """The sample-weighted average of client weights, for evaluation and saving only (clients keep their own)."""
    model = new_client_model(config, pretrained=False)  # every trainable weight is replaced below
    load_trainable(model, weighted_average(states, weights))
    return model


def format_epoch(record: dict, num_epochs: int) -> str:
    """One progress line per epoch for the log."""
    tested = f"test acc {record['test_accuracy']:.3f}" if "test_accuracy" in record else "not evaluated"
    return (
        f"epoch {record['epoch']}/{num_epochs}: train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.3f} | {tested} | "
        f"up {record['bytes_up'] / 1e6:.2f} MB, down {record['bytes_down'] / 1e6:.2f} MB | "
        f"train {record['train_wall_s']:.1f} s, eval {record['eval_s']:.1f} s"
    )
