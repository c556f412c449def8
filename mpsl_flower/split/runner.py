"""Drive the MPSL core over N simulated clients in one process: no Flower, no Ray.

Unit tests use it as the reference the Flower path must match; benchmarks use it as the
cost of the method itself, without orchestration.
"""

from __future__ import annotations

import time

import torch

from mpsl_flower.config import RunConfig
from mpsl_flower.measure.accounting import mpsl_bytes_per_sample
from mpsl_flower.models.factory import resolve_device
from mpsl_flower.models.trainable import trainable_arrays
from mpsl_flower.runs.record import EpochTally, with_evaluation
from mpsl_flower.split.aggregation import averaged_client_model
from mpsl_flower.split.client_side import loss_gradient, new_client_side
from mpsl_flower.split.evaluation import evaluate, evaluation_draws
from mpsl_flower.split.optimizer import epoch_lr
from mpsl_flower.split.precision import transmitted
from mpsl_flower.split.schedule import StepSchedule, step_batch
from mpsl_flower.split.server_side import new_server_side
from tasks.data import SplitData, TaskData
from tasks.partitioning import partition_rows

OUTPUT = "output"  # the one array of an output or output-gradient message


class InProcessRunner:
    """MPSL with every client and the server as plain objects in this process."""

    def __init__(self, config: RunConfig, data: TaskData, num_clients: int, device=None) -> None:
        config.check_num_clients(num_clients)
        self.config = config
        self.test = data.test
        rows = partition_rows(
            data.train,
            config.task.num_classes,
            config.split_type,
            num_clients,
            config.dirichlet_alpha,
            config.seed,
            config.min_partition_size,
        )
        self.partitions: list[SplitData] = [data.train.subset(r) for r in rows]
        self.clients = [new_client_side(config) for _ in range(num_clients)]
        self.server = new_server_side(config, device or resolve_device(config))
        self.schedule = StepSchedule(config, {i: len(p) for i, p in enumerate(self.partitions)})
        self.client_batch_size = self.schedule.client_batch_size
        self.aggregated_client_model = None
        shapes, output_shape = self.clients[0].model.stream_shapes(), self.server.model.output_shape
        self.bytes_per_sample = mpsl_bytes_per_sample(shapes, output_shape, config.activation_precision)

    def run_step(self, epoch: int, step: int, tally: EpochTally) -> None:
        """One MPSL step over the step's clients (`StepSchedule`), each with the mini-batch it names."""
        takes = self.schedule.takes(epoch, step)
        active = list(takes)
        batches = [
            step_batch(self.partitions[i], self.client_batch_size, self.config.seed, i, epoch, step, takes[i])
            for i in active
        ]
        lr = epoch_lr(self.config, epoch)

        started = time.perf_counter()
        smashed = [self.clients[i].smashed(b.inputs) for i, b in zip(active, batches)]
        tally.client_compute_s += time.perf_counter() - started
        smashed = [self._send(s, tally, up=True) for s in smashed]

        started = time.perf_counter()
        logits = self.server.forward(smashed)
        tally.server_compute_s += time.perf_counter() - started
        logits = [self._send({OUTPUT: part}, tally, up=False)[OUTPUT] for part in logits]

        started = time.perf_counter()
        total = sum(len(b) for b in batches)
        logit_grads = []
        objective = self.server.model.objective
        for i, part, b in zip(active, logits, batches):
            if self.config.head_on_client:  # the client's own head scores the server's features
                grad, loss_sum, correct = self.clients[i].head_gradient(objective, part, b.labels, total, lr)
            else:
                grad, loss_sum, correct = loss_gradient(objective, part, b.labels, total)
            tally.add_client_loss(loss_sum, correct, len(b))
            tally.bytes_analytic += len(b) * self.bytes_per_sample
            logit_grads.append(grad)
        tally.client_compute_s += time.perf_counter() - started
        logit_grads = [self._send({OUTPUT: grad}, tally, up=True)[OUTPUT] for grad in logit_grads]

        started = time.perf_counter()
        cut_grads = self.server.backward(logit_grads)
        tally.server_compute_s += time.perf_counter() - started
        cut_grads = [self._send(grad, tally, up=False) for grad in cut_grads]

        started = time.perf_counter()
        for i, b, cut_grad in zip(active, batches, cut_grads):
            self.clients[i].apply_cut_grad(b.inputs, cut_grad, lr)
        tally.client_compute_s += time.perf_counter() - started
        tally.steps += 1

    def _send(self, tensors: dict[str, torch.Tensor], tally: EpochTally, up: bool) -> dict[str, torch.Tensor]:
        """`tensors` as a message at `activation-precision` would deliver them; their bytes are counted."""
        arrived, size = transmitted(tensors, self.config.activation_precision)
        if up:
            tally.bytes_up += size
        else:
            tally.bytes_down += size
        return arrived

    def run_epoch(self, epoch: int) -> dict:
        """All steps of one epoch, then aggregation of the client weights and evaluation."""
        tally = EpochTally()
        lr = epoch_lr(self.config, epoch)
        self.server.set_lr(lr)
        for step in range(self.schedule.num_steps):
            self.run_step(epoch, step, tally)
        states = [trainable_arrays(client.model) for client in self.clients]
        model = averaged_client_model(self.config, states, [len(p) for p in self.partitions])
        self.aggregated_client_model = model
        draws = evaluation_draws(self.config, epoch + 1)
        return with_evaluation(
            tally.train_record(epoch, lr, len(states)),
            lambda: evaluate(
                model,
                self.server.model,
                self.test,
                self.config.eval_batch_size,
                draws,
                accuracy_batch_size=self.config.batch_size,
            ),
        )
