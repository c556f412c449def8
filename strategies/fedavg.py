"""FedAvg and FedCLIP baselines as a Flower strategy (built on `flwr.serverapp.strategy.FedAvg`).

Each selected client trains a full copy of the trainable set (tokenizers, pre-LN, last N
blocks, head) for one local epoch with mini-batch ceil(batch-size / clients); its Adam state
persists across rounds in `context.state`. The server averages every trained tensor weighted
by sample count and sends the result to the clients of the next round. Only trainable tensors
travel. Clients are selected with our own seeded RNG over partition ids, because Flower's node
ids are random per run.

FedCLIP is the same strategy over a different model (`method='fedclip'`, see
`split.build.new_server_model`): the encoder is fully frozen and per-modality adapters are
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
from flwr.serverapp.strategy import FedAvg

from mpsl_flower import wire
from mpsl_flower.client_data import partition_label_counts
from mpsl_flower.config import RunConfig
from mpsl_flower.models.weights import load_trainable, trainable_arrays
from mpsl_flower.results import RunResults, model_facts
from mpsl_flower.split.build import new_full_model
from mpsl_flower.split.epoch import EpochTally, evaluated_record, format_epoch
from mpsl_flower.split.schedule import step_lr, steps_per_epoch
from strategies.discovery import ClientInfo
from tasks.data import SplitData

ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"  # FedAvg's record keys, shared with the ClientApp
LOCAL_METRICS = ("num-examples", "loss-sum", "correct", "steps", "compute-s")


def select_partitions(partition_ids: list[int], fraction: float, seed: int, server_round: int) -> list[int]:
    """A seeded sample of `fraction` of the partitions (at least one) for `server_round`."""
    count = max(1, math.ceil(fraction * len(partition_ids)))
    rng = np.random.default_rng([seed, server_round])
    return sorted(rng.choice(partition_ids, size=count, replace=False).tolist())


class FederatedAveraging(FedAvg):
    """FedAvg over the discovered clients, evaluated centrally after every round."""

    def __init__(
        self, config: RunConfig, clients: list[ClientInfo], test: SplitData, device: torch.device, results: RunResults | None = None
    ) -> None:
        super().__init__(fraction_train=config.fraction_train, fraction_evaluate=0.0, min_available_nodes=1, min_train_nodes=1)
        self.config = config
        self.clients = {c.partition_id: c for c in clients}
        self.test = test
        self.results = results
        self.model = new_full_model(config).to(device)
        self.expected = {name: tuple(p.shape) for name, p in self.model.named_parameters() if p.requires_grad}
        self.client_batch_size = config.client_batch_size(len(clients))
        self.tally = EpochTally()
        self.aggregated_clients = 0
        self.history: list[dict] = []

    def run(self, grid: Grid) -> list[dict]:
        """`nr-of-epochs` rounds of one local epoch each; one record per round."""
        if self.results:
            sizes = {pid: c.num_examples for pid, c in self.clients.items()}
            self.results.write_run_info(
                {
                    "num_clients": len(self.clients),
                    "partition_sizes": sizes,
                    "partition_label_counts": partition_label_counts(self.config, len(self.clients)),
                    "client_batch_size": self.client_batch_size,
                    "steps_per_epoch": steps_per_epoch(list(sizes.values()), self.client_batch_size),
                    "device": str(next(self.model.parameters()).device),
                    **model_facts(self.config, self.model.client, self.model.server),
                }
            )
        initial = wire.tensors_to_record(trainable_arrays(self.model))
        self.start(grid, initial, num_rounds=self.config.num_epochs, timeout=self.config.step_timeout_s, evaluate_fn=self.evaluate)
        return self.history

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.tally = EpochTally()
        chosen = select_partitions(sorted(self.clients), self.config.fraction_train, self.config.seed, server_round)
        content = RecordDict(
            {
                ARRAYS: arrays,
                CONFIG: ConfigRecord({"server-round": server_round, "client-batch-size": self.client_batch_size}),
            }
        )
        self.tally.bytes_down = wire.payload_bytes(content) * len(chosen)
        log(INFO, "[%s] round %d: %d of %d clients", self.config.method, server_round, len(chosen), len(self.clients))
        return [Message(content, dst_node_id=self.clients[pid].node_id, message_type="train") for pid in chosen]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the valid replies; a client with an error or malformed arrays is left out, logged."""
        valid = []
        for reply in replies:
            reason = self._problem(reply)
            if reason:
                log(WARNING, "[%s] round %d: node %d left out: %s", self.config.method, server_round, reply.metadata.src_node_id, reason)
                self.tally.dropped += 1
                continue
            valid.append(reply)
            metrics = reply.content[METRICS]
            self.tally.bytes_up += wire.payload_bytes(reply.content)
            self.tally.add_client_loss(float(metrics["loss-sum"]), int(metrics["correct"]), int(metrics["num-examples"]))
            self.tally.client_compute_s += float(metrics["compute-s"])
            self.tally.steps = max(self.tally.steps, int(metrics["steps"]))  # local steps of the longest client
        self.aggregated_clients = len(valid)
        return super().aggregate_train(server_round, valid)

    def _problem(self, reply: Message) -> str | None:
        if reply.has_error():
            return f"client error: {reply.error.reason}"
        content = reply.content
        if ARRAYS not in content or METRICS not in content:
            return f"reply lacks its {ARRAYS!r} or {METRICS!r} record"
        missing = [key for key in LOCAL_METRICS if key not in content[METRICS]]
        if missing:
            return f"reply lacks metrics {missing}"
        return wire.check_arrays(wire.record_to_arrays(content[ARRAYS]), self.expected, "trained weights")

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Central evaluation of the averaged model on the test split; writes the round's record."""
        if server_round == 0:
            return None
        load_trainable(self.model, wire.record_to_arrays(arrays))
        lr = step_lr(self.config.learning_rate, self.config.lr_step_size, self.config.lr_gamma, server_round - 1)
        record = evaluated_record(
            self.config, server_round - 1, lr, self.tally, self.model.client, self.model.server, self.test, self.aggregated_clients
        )
        self.history.append(record)
        log(INFO, "[%s] %s", self.config.method, format_epoch(record, self.config.num_epochs))
        if self.results:
            self.results.log_epoch(record)
            self.results.save_model(self.model.server, self.model.client, server_round)
        return MetricRecord({"test_accuracy": record["test_accuracy"], "test_loss": record["test_loss"]})
