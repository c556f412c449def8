"""The centralized baseline behind Flower's strategy API: the ServerApp trains alone.

Same model, trainable set, global batch, optimizer, schedule, evaluation and results format as
MPSL, on the task's whole training split. The SuperNodes stay idle; `grid` is not used, so
`start` also runs without Flower's runtime (`python -m mpsl_flower.app.run_centralized`).
"""

from __future__ import annotations

from logging import INFO

import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from mpsl_flower import wire
from mpsl_flower.config import RunConfig
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.models.trainable import load_trainable, trainable_arrays
from mpsl_flower.node.partitions import label_counts
from mpsl_flower.runs.facts import run_info
from mpsl_flower.runs.record import EpochTally
from mpsl_flower.runs.writer import RunResults
from mpsl_flower.split.local_epoch import train_local_epoch
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.optimizer import epoch_lr, new_optimizer
from strategies.epoch_report import EpochReport
from strategies.global_model import EvaluateFn
from strategies.loop_strategy import LoopStrategy


class Centralized(LoopStrategy):
    """Trains the unsplit model on all training data; `start` returns Flower's `Result`.

    Flower's round hooks have no meaning without clients and raise.
    """

    def __init__(self, config: RunConfig, device: torch.device, results: RunResults | None = None) -> None:
        self.config = config
        self.device = device
        self.results = results

    def start(
        self,
        grid: Grid | None,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> Result:
        """Train `num_rounds` epochs from `initial_arrays`, evaluating after each with `evaluate_fn`.

        `grid` and `timeout` are not used (nothing is sent); `train_config` and
        `evaluate_config` must be empty: settings come from the run config.
        """
        if train_config or evaluate_config:
            raise ValueError("the centralized baseline sends no per-round config: put settings in the run config")
        log(INFO, "[centralized] trains in the ServerApp alone; the SuperNodes stay idle")
        self.summary()
        train = load_inputs(self.config).train
        model = new_full_model(self.config).to(self.device)
        load_trainable(model, wire.record_to_arrays(initial_arrays))
        optimizer = new_optimizer(model, self.config.learning_rate)
        if self.results:
            counts = {0: label_counts(self.config, train.labels)}
            info = run_info(self.config, model, {0: len(train)}, counts, self.config.batch_size, self.device)
            self.results.write_run_info(info)
        report = EpochReport("centralized", num_rounds, self.results)
        for epoch in range(num_rounds):
            tally = EpochTally()
            lr = epoch_lr(self.config, epoch)
            stats = train_local_epoch(model, optimizer, train, self.config.batch_size, lr, self.config.seed, 0, epoch)
            tally.add_client_loss(stats.loss_sum, stats.correct, stats.num_examples)
            tally.steps = stats.steps
            arrays = wire.tensors_to_record(trainable_arrays(model))
            report.close(tally.train_record(epoch, lr, clients_aggregated=1), arrays, evaluate_fn, model)
        return report.result

    def summary(self) -> None:
        log(
            INFO,
            "\t└── %s, %s encoder, batch %d, start-lr %g, on %s",
            self.config.dataset,
            self.config.encoder_size,
            self.config.batch_size,
            self.config.learning_rate,
            self.device,
        )
