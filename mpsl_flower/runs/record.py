"""The epoch record: its keys, the tally that fills its training half, and its log line.

One record per epoch (MPSL, centralized) or round (FedAvg, FedCLIP) serves every method and
every path (the in-process runner, every Flower strategy), so results of different methods
compare key by key. This module is the one home of the record's keys, as `wire` is of the
messages': every module that writes or splits a record spells its keys from here. A record is
one line of `metrics.jsonl`; a Flower `Result` keeps its test half apart from its training half
(`test_half`).

The keys are flat names (the JSON lines, the notebooks and the README's tables read them):
- training half: `TRAIN_KEYS`, from `EpochTally.train_record`;
- test half: `TEST_LOSS`, `TEST_ACCURACY`, for classification `TEST_ACCURACY_BATCH_MEAN` and, for
  retrieval, `test_r<k>_image_to_text` and `test_r<k>_text_to_image` (`tasks.objectives.retrieval_recalls`); with
  `validate-only-aggregated-model=false`, `CLIENT_TEST_ACCURACY` (per client),
  `CLIENT_TEST_PARTITIONS` and `CLIENT_TEST_ACCURACY_MEAN`; and `EVAL_S`, the evaluation's time;
- with `label-attack-report`: the `LABEL_ATTACK_*` scores (`measure.label_attacks`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# ---- training half ------------------------------------------------------------------------
EPOCH = "epoch"  # counts from 1
LR = "lr"
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
STEPS = "steps"
CLIENTS_AGGREGATED = "clients_aggregated"
DROPPED_CLIENT_STEPS = "dropped_client_steps"
BYTES_UP = "bytes_up"
BYTES_DOWN = "bytes_down"
BYTES_ANALYTIC = "bytes_analytic"
TRAIN_WALL_S = "train_wall_s"
CLIENT_COMPUTE_S = "client_compute_s"
SERVER_COMPUTE_S = "server_compute_s"
TRAIN_KEYS = (
    EPOCH,
    LR,
    TRAIN_LOSS,
    TRAIN_ACCURACY,
    STEPS,
    CLIENTS_AGGREGATED,
    DROPPED_CLIENT_STEPS,
    BYTES_UP,
    BYTES_DOWN,
    BYTES_ANALYTIC,
    TRAIN_WALL_S,
    CLIENT_COMPUTE_S,
    SERVER_COMPUTE_S,
)

# ---- test half ----------------------------------------------------------------------------
TEST_PREFIX, CLIENT_TEST_PREFIX = "test_", "client_test_"
TEST_LOSS = "test_loss"
TEST_ACCURACY = "test_accuracy"  # retrieval: the mean of R@1 both ways
# Classification: the original's figure, the mean of per-batch accuracies over `batch-size` batches, the last
# (partial) batch weighing as a full one; TEST_ACCURACY is the exact per-sample share.
TEST_ACCURACY_BATCH_MEAN = "test_accuracy_batch_mean"
CLIENT_TEST_ACCURACY = "client_test_accuracy"
CLIENT_TEST_PARTITIONS = "client_test_partitions"
CLIENT_TEST_ACCURACY_MEAN = "client_test_accuracy_mean"
EVAL_S = "eval_s"

# ---- label attacks (`label-attack-report`) ------------------------------------------------
LABEL_ATTACK_SAMPLES = "label_attack_samples"
LABEL_ATTACK_MAJORITY = "label_attack_majority"
LABEL_ATTACK_DIRECT = "label_attack_direct"
LABEL_ATTACK_NORM = "label_attack_norm"
LABEL_ATTACK_COSINE = "label_attack_cosine"


def is_test_metric(key: str) -> bool:
    """Whether `key` belongs to the test half, told by name alone, so that a record read back from
    `metrics.jsonl` splits as the live one did."""
    return key.startswith((TEST_PREFIX, CLIENT_TEST_PREFIX)) or key == EVAL_S


def test_half(record: Mapping) -> dict:
    """The record's test metrics and evaluation time."""
    return {key: value for key, value in record.items() if is_test_metric(key)}


def training_half(record: Mapping) -> dict:
    """Everything in the record that is not its test half (training figures, attack scores)."""
    return {key: value for key, value in record.items() if not is_test_metric(key)}


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
    bytes_analytic: float = 0.0  # what the method's messages must carry (`measure.accounting`)
    client_compute_s: float = 0.0  # summed over clients
    server_compute_s: float = 0.0

    def add_client_loss(self, loss_sum: float, correct: int, samples: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.samples += samples

    def train_record(self, epoch: int, lr: float, clients_aggregated: int) -> dict:
        """The training half of the epoch's record (`epoch` counts from 0, the record from 1)."""
        return {
            EPOCH: epoch + 1,
            LR: lr,
            TRAIN_LOSS: self.loss_sum / max(self.samples, 1),
            TRAIN_ACCURACY: self.correct / max(self.samples, 1),
            STEPS: self.steps,
            CLIENTS_AGGREGATED: clients_aggregated,
            DROPPED_CLIENT_STEPS: self.dropped,
            BYTES_UP: self.bytes_up,
            BYTES_DOWN: self.bytes_down,
            BYTES_ANALYTIC: self.bytes_analytic,
            TRAIN_WALL_S: time.perf_counter() - self.started_at,
            CLIENT_COMPUTE_S: self.client_compute_s,
            SERVER_COMPUTE_S: self.server_compute_s,
        }


def with_evaluation(train_record: dict, evaluate: Callable[[], Mapping[str, float] | None]) -> dict:
    """The full epoch record: the training half plus what `evaluate` returns, timed as `EVAL_S`."""
    started = time.perf_counter()
    test_metrics = evaluate() or {}
    return {**train_record, **test_metrics, EVAL_S: time.perf_counter() - started}


def format_epoch(record: dict, num_epochs: int) -> str:
    """One progress line per epoch for the log."""
    tested = f"test acc {record[TEST_ACCURACY]:.3f}" if TEST_ACCURACY in record else "not evaluated"
    return (
        f"epoch {record[EPOCH]}/{num_epochs}: train loss {record[TRAIN_LOSS]:.4f} "
        f"acc {record[TRAIN_ACCURACY]:.3f} | {tested} | "
        f"up {record[BYTES_UP] / 1e6:.2f} MB, down {record[BYTES_DOWN] / 1e6:.2f} MB | "
        f"train {record[TRAIN_WALL_S]:.1f} s, eval {record[EVAL_S]:.1f} s"
    )
