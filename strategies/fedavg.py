"""FedAvg and FedCLIP baselines as a Flower strategy (built on `flwr.serverapp.strategy.FedAvg`).

Each selected client trains a full copy of the trainable set (tokenizers, pre-LN, last N
blocks, head) for one local epoch with mini-batch ceil(batch-size / clients); its Adam state
persists across rounds in `context.state`. The server averages every trained tensor weighted
by sample count (Flower's own aggregation) and sends the result to the clients of the next
round. Only trainable tensors travel. Clients are selected with our own seeded RNG over
partition ids, because Flower's node ids are random per run.

FedCLIP is the same strategy over a different model (`method='fedclip'`, see
`models.factory.new_server_model`): the encoder is fully frozen and per-modality adapters are
added, so only tokenizers, adapters and head train and travel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from mpsl_flower import wire
from mpsl_flower.config import RunConfig
from mpsl_flower.measure.accounting import fedavg_bytes_per_client
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.models.trainable import load_trainable
from mpsl_flower.runs.record import EpochTally
from mpsl_flower.runs.writer import RunResults
from mpsl_flower.split.optimizer import epoch_lr
from strategies.discovery import ClientInfo
from strategies.epoch_report import EpochReport
from strategies.global_model import EvaluateFn
from strategies.opening import open_federation


def select_partitions(partition_ids: list[int], fraction: float, seed: int, server_round: int) -> list[int]:
    """A seeded sample of `fraction` of the partitions (at least one) for `server_round`."""
    count = max(1, math.ceil(fraction * len(partition_ids)))
    rng = np.random.default_rng([seed, server_round])
    return sorted(rng.choice(partition_ids, size=count, replace=False).tolist())


class FederatedAveraging(FedAvg):
    """FedAvg over the discovered clients, evaluated centrally after every round.

    `start` is Flower's own, preceded by client discovery; it returns Flower's `Result`.
    """

    def __init__(self, config: RunConfig, device: torch.device, results: RunResults | None = None) -> None:
        super().__init__(
            fraction_train=config.fraction_train, fraction_evaluate=0.0, min_available_nodes=1, min_train_nodes=1
        )
        self.config = config
        self.device = device
        self.results = results
        self.model = new_full_model(config)  # holds each round's average, for saving
        self.expected = {name: tuple(p.shape) for name, p in self.model.named_parameters() if p.requires_grad}
        self.clients: dict[int, ClientInfo] = {}
        self.partition_of: dict[int, int] = {}
        self.client_batch_size = 0
        self.tally = EpochTally()
        self.round_record: dict = {}
        self.client_arrays: dict[int, ArrayRecord] = {}  # partition -> its trained arrays, when each is validated
        self.report: EpochReport | None = None

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> Result:
        """Discover clients, then Flower's FedAvg loop; each round is closed like an MPSL epoch.

        `initial_arrays`: the trainable set (`strategies.global_model.initial_arrays`).
        `train_config` entries travel to the clients with every round's own settings.
        `evaluate_fn(round, arrays)` is called after each round (not before the first: the
        original evaluates trained models only).
        """
        opening = open_federation(
            self.config.method, grid, self.config, timeout, num_rounds, self.results, self.model, self.device
        )
        self.clients = {c.partition_id: c for c in opening.clients}
        self.partition_of = {c.node_id: c.partition_id for c in opening.clients}
        self.client_batch_size, self.report = opening.client_batch_size, opening.report

        def close_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            return None if server_round == 0 else self._close_round(server_round, arrays, evaluate_fn)

        return super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, close_round)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.tally, self.client_arrays = EpochTally(), {}
        chosen = select_partitions(sorted(self.clients), self.config.fraction_train, self.config.seed, server_round)
        round_config = ConfigRecord(
            {**config, wire.SERVER_ROUND: server_round, wire.CLIENT_BATCH_SIZE: self.client_batch_size}
        )
        content = RecordDict({wire.ARRAYS: arrays, wire.CONFIG: round_config})
        self.tally.bytes_down = wire.payload_bytes(content) * len(chosen)
        trained = sum(int(np.prod(shape)) for shape in self.expected.values())
        self.tally.bytes_analytic = len(chosen) * fedavg_bytes_per_client(trained)
        log(INFO, "[%s] round %d: %d of %d clients", self.config.method, server_round, len(chosen), len(self.clients))
        return [
            Message(content, dst_node_id=self.clients[pid].node_id, message_type=wire.FEDAVG_TRAIN) for pid in chosen
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the valid replies; a client with an error or malformed reply is left out, logged.

        The metrics returned are the round's training record (the same keys as an MPSL epoch's).
        """
        valid = []
        for reply in replies:
            if reply.has_error():
                reason = f"client error: {reply.error.reason}"
            else:
                reason = wire.reply_problem(
                    reply.content, wire.ARRAYS, self.expected, wire.METRICS, wire.FEDAVG_METRICS
                )
            if reason:
                log(
                    WARNING,
                    "[%s] round %d: node %d left out: %s",
                    self.config.method,
                    server_round,
                    reply.metadata.src_node_id,
                    reason,
                )
                self.tally.dropped += 1
                continue
            valid.append(reply)
            if not self.config.validate_only_aggregated:
                self.client_arrays[self.partition_of[reply.metadata.src_node_id]] = reply.content[wire.ARRAYS]
            metrics = reply.content[wire.METRICS]
            self.tally.bytes_up += wire.payload_bytes(reply.content)
            self.tally.add_client_loss(
                float(metrics[wire.LOSS_SUM]), int(metrics[wire.CORRECT]), int(metrics[wire.NUM_EXAMPLES])
            )
            self.tally.client_compute_s += float(metrics[wire.COMPUTE_S])
            self.tally.steps = max(
                self.tally.steps, int(metrics[wire.LOCAL_STEPS])
            )  # local steps of the longest client
        arrays, _ = super().aggregate_train(server_round, valid)
        self.round_record = self.tally.train_record(
            server_round - 1, epoch_lr(self.config, server_round - 1), len(valid)
        )
        return arrays, MetricRecord(self.round_record)

    def _close_round(
        self, server_round: int, arrays: ArrayRecord, evaluate_fn: EvaluateFn | None
    ) -> MetricRecord | None:
        """Evaluate, log, record and save the round's average; the test metrics go to Flower's `Result`."""
        load_trainable(self.model, wire.record_to_arrays(arrays))
        record = self.report.close(self.round_record, arrays, evaluate_fn, self.model, self.client_arrays)
        return self.report.result.evaluate_metrics_serverapp.get(record["epoch"])
