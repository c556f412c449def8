"""Bookkeeping shared by every training driver: per-epoch tallies, records and MPSL's epoch end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mpsl_flower.config import RunConfig
from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.models.tokenizers import ClientModel
from mpsl_flower.models.weights import load_trainable
from mpsl_flower.split.aggregation import weighted_average
from mpsl_flower.split.build import new_client_model
from mpsl_flower.split.evaluation import evaluate
from mpsl_flower.split.server_side import ServerSide
from tasks.data import SplitData


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
    client_compute_s: float = 0.0  # summed over clients
    server_compute_s: float = 0.0

    def add_client_loss(self, loss_sum: float, correct: int, samples: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.samples += samples


def close_epoch(
    config: RunConfig,
    epoch: int,
    server: ServerSide,
    client_states: list[dict[str, np.ndarray]],
    client_weights: list[int],
    test: SplitData,
    tally: EpochTally,
) -> tuple[dict, ClientModel]:
    """Average client weights (for evaluation and saving only), evaluate, step the LR schedule.

    Returns the epoch's metrics record and the aggregated client model.
    """
    client_model = new_client_model(config)
    load_trainable(client_model, weighted_average(client_states, client_weights))
    record = evaluated_record(config, epoch, server.lr, tally, client_model, server.model, test, len(client_states))
    server.end_epoch()
    return record, client_model


def evaluated_record(
    config: RunConfig,
    epoch: int,
    lr: float,
    tally: EpochTally,
    client_model: ClientModel,
    server_model: ServerModel,
    test: SplitData,
    clients_aggregated: int,
) -> dict:
    """Evaluate on the test split and build the epoch's record: one format for every method."""
    training_s = time.perf_counter() - tally.started_at
    eval_started = time.perf_counter()
    test_metrics = evaluate(client_model, server_model, test, config.eval_batch_size)
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": tally.loss_sum / max(tally.samples, 1),
        "train_accuracy": tally.correct / max(tally.samples, 1),
        **test_metrics,
        "steps": tally.steps,
        "clients_aggregated": clients_aggregated,
        "dropped_client_steps": tally.dropped,
        "bytes_up": tally.bytes_up,
        "bytes_down": tally.bytes_down,
        "train_wall_s": training_s,
        "client_compute_s": tally.client_compute_s,
        "server_compute_s": tally.server_compute_s,
        "eval_s": time.perf_counter() - eval_started,
    }


def format_epoch(record: dict, num_epochs: int) -> str:
    """One progress line per epoch for the log."""
    return (
        f"epoch {record['epoch']}/{num_epochs}: train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.3f} | test acc {record['test_accuracy']:.3f} | "
        f"up {record['bytes_up'] / 1e6:.2f} MB, down {record['bytes_down'] / 1e6:.2f} MB | "
        f"train {record['train_wall_s']:.1f} s, eval {record['eval_s']:.1f} s"
    )
