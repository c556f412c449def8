"""MPSL as a Flower strategy: the server side of parallel split learning over a `Grid`.

Per step, two round trips to every participating client (every client, or with `clients-per-step`
a seeded draw of them: `split.schedule.StepSchedule`): `train.forward` (carrying the
cut-layer gradient of the client's previous step) returns smashed activations; all of them
go through ONE server forward; `train.loss_grad` sends each client its logits and returns
dL/dlogits; ONE backward and optimizer step follow. A client that errs, times out or sends
malformed arrays is dropped from that step with a logged reason; the rest carry on.

With `label-privacy='u-shaped'` the server sends pooled features instead of logits and gets
dL/dfeatures back: the head and the loss stay with the clients. With `label-attack-report`
the server attacks the labels in a sample of the gradients it received (`gradient_sample`)
and adds the scores to each epoch's record. After every epoch it keeps a resume state in the
results folder (`mpsl_resume`); a run started with `resume-from` continues from it.
"""

from __future__ import annotations

import time
import uuid
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from mpsl_flower import wire
from mpsl_flower.config import RunConfig
from mpsl_flower.measure.accounting import mpsl_bytes_per_sample
from mpsl_flower.models.factory import new_client_model
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.models.trainable import load_trainable, trainable_arrays
from mpsl_flower.runs.record import EpochTally
from mpsl_flower.runs.writer import RunResults
from mpsl_flower.split.aggregation import averaged_client_model
from mpsl_flower.split.optimizer import epoch_lr
from mpsl_flower.split.schedule import StepSchedule, batch_length
from mpsl_flower.split.server_side import new_server_side
from strategies.discovery import ClientInfo
from strategies.exchange import Exchange, exchange
from strategies.global_model import EvaluateFn
from strategies.gradient_sample import GradientSample
from strategies.loop_strategy import LoopStrategy
from strategies.mpsl_resume import restore, resume_state
from strategies.opening import open_federation

CLIENT_PREFIX, SERVER_PREFIX = "client.", "server."  # FullModel's names for the two halves


class MpslStrategy(LoopStrategy):
    """Drives MPSL training over the nodes of a Flower `Grid`; holds the one server model.

    Called like Flower's own strategies: `start(grid, initial_arrays, num_rounds, timeout,
    evaluate_fn=...)` returns a `Result`. One round is one epoch. MPSL has no per-round
    broadcast and aggregation: an epoch is many steps of two round trips each, so Flower's
    round hooks (`configure_train`, `aggregate_train`, `configure_evaluate`,
    `aggregate_evaluate`) have no meaning here and raise; `start` runs the steps itself.
    """

    def __init__(self, config: RunConfig, device: torch.device, results: RunResults | None = None) -> None:
        self.config = config
        self.results = results
        self.server = new_server_side(config, device)
        self.precision = config.activation_precision
        self.template = new_client_model(config)  # the initial client model every client builds
        self.stream_shapes = self.template.stream_shapes()
        self.client_weight_shapes = {n: tuple(p.shape) for n, p in self.template.named_parameters() if p.requires_grad}
        self.output_shape = self.server.model.output_shape
        self.bytes_per_sample = mpsl_bytes_per_sample(self.stream_shapes, self.output_shape, self.precision)
        self.pending_cut_grads: dict[int, tuple[dict[str, torch.Tensor], int, int]] = {}
        self.run_key = results.run_key if results else uuid.uuid4().hex
        self.resumed_after = 0  # epochs finished before this start (resume-from)
        self.gradient_sample = GradientSample(config)
        self._schedule: StepSchedule | None = None  # of the federation `run_step` last served

    # ---- run ----------------------------------------------------------------------------

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
        """Discover clients, train `num_rounds` epochs, evaluate after each; return Flower's `Result`.

        `initial_arrays`: the trainable set of the unsplit model (`strategies.global_model.
        initial_arrays`). Its server half initialises the server; its client half must equal
        what the clients build from the run config, since MPSL sends no weights down.
        `timeout`: how long each exchange waits for a client's reply. `train_config` and
        `evaluate_config` must be empty: clients read their settings from the run config.
        `evaluate_fn(epoch, arrays)` gets the aggregated client half plus the server half.
        """
        if train_config or evaluate_config:
            raise ValueError("MPSL sends no per-round config: put settings in the run config")
        self._load_initial_arrays(initial_arrays)
        log(INFO, "Starting %s strategy:", type(self).__name__)
        self.summary()
        resumed = self.results.resumed if self.results else None
        opening = open_federation(
            "MPSL",
            grid,
            self.config,
            timeout,
            num_rounds,
            self.results,
            FullModel(self.template, self.server.model),
            self.server.device,
            expected_clients=resumed.get("num_clients", 0) if resumed else None,
        )
        clients, m, report = opening.clients, opening.client_batch_size, opening.report
        steps = self.schedule(clients).num_steps
        log(
            INFO,
            "[MPSL] %d clients, %d of them per step, %d samples/client/step, %d steps/epoch",
            len(clients),
            self.config.step_clients(len(clients)),
            m,
            steps,
        )
        if resumed:
            self.run_key, self.resumed_after = restore(self.server, resumed)
            report.replay(self.results.records)
            log(INFO, "[MPSL] resuming %s after epoch %d", self.results.folder, self.resumed_after)
        for epoch in range(self.resumed_after, num_rounds):
            lr = epoch_lr(self.config, epoch)
            self.server.set_lr(lr)
            tally = EpochTally()
            for step in range(steps):
                self.run_step(grid, clients, epoch, step, m, timeout, tally)
                if (step + 1) % max(1, steps // 4) == 0 and step + 1 < steps:
                    log(INFO, "[MPSL] epoch %d: step %d/%d", epoch + 1, step + 1, steps)
            if not tally.steps:  # every client dropped out of every step: nothing trained, nothing to report
                raise RuntimeError(
                    f"[MPSL] epoch {epoch + 1}: no step ran, every client dropped out of every step (the drop "
                    "lines above give each reason); fix what they name and start the run again"
                )
            states = self.collect_client_states(grid, clients, epoch, timeout, tally)
            weights = {c.partition_id: c.num_examples for c in clients}
            client_model = averaged_client_model(self.config, list(states.values()), [weights[p] for p in states])
            model = FullModel(client_model, self.server.model)
            own = None if self.config.validate_only_aggregated else self._own_arrays(states)
            attack_figures = self.gradient_sample.attack_figures(len(clients), m)
            train_record = {**tally.train_record(epoch, lr, len(states)), **attack_figures}
            state = resume_state(self.server, self.run_key, len(clients))
            report.close(train_record, _full_arrays(model), evaluate_fn, model, own, state)
        return report.result

    def _own_arrays(self, states: dict[int, dict[str, np.ndarray]]) -> dict[int, ArrayRecord]:
        """Each client's own tokenizers with the server half: the models `validate-only-aggregated-model` skips."""
        server = {SERVER_PREFIX + k: v for k, v in trainable_arrays(self.server.model).items()}
        return {
            partition: wire.tensors_to_record({**{CLIENT_PREFIX + k: v for k, v in state.items()}, **server})
            for partition, state in states.items()
        }

    def summary(self) -> None:
        log(
            INFO,
            "\t├── %s, %s encoder, last %d blocks trained",
            self.config.dataset,
            self.config.encoder_size,
            self.config.finetune_blocks,
        )
        log(
            INFO,
            "\t└── global batch %d, start-lr %g, server on %s",
            self.config.batch_size,
            self.config.learning_rate,
            self.server.device,
        )

    def _load_initial_arrays(self, arrays: ArrayRecord) -> None:
        named = wire.record_to_arrays(arrays)
        server = {k[len(SERVER_PREFIX) :]: v for k, v in named.items() if k.startswith(SERVER_PREFIX)}
        client = {k[len(CLIENT_PREFIX) :]: v for k, v in named.items() if k.startswith(CLIENT_PREFIX)}
        if len(server) + len(client) != len(named):
            strays = sorted(k for k in named if not k.startswith((SERVER_PREFIX, CLIENT_PREFIX)))
            raise ValueError(f"initial_arrays holds arrays outside the model's halves: {strays}")
        load_trainable(self.server.model, server)
        expected = trainable_arrays(self.template)
        if set(client) != set(expected) or any(not np.array_equal(client[k], expected[k]) for k in expected):
            raise ValueError(
                "the client half of initial_arrays differs from the initial client model the run config "
                "gives: MPSL clients build their own tokenizers (same seed, same weight files) and no "
                "weights are sent to them; start from strategies.global_model.initial_arrays(config)"
            )

    # ---- one step -----------------------------------------------------------------------

    def run_step(
        self, grid: Grid, clients: list[ClientInfo], epoch: int, step: int, m: int, timeout: float, tally: EpochTally
    ) -> None:
        """One MPSL step over the step's clients: every client that still has data in this epoch, or the
        `clients-per-step` drawn for it; each takes the mini-batch the schedule names."""
        takes = self.schedule(clients).takes(epoch, step)
        active = [c for c in clients if c.partition_id in takes]
        batch = {c.node_id: takes[c.partition_id] for c in active}
        sizes = {c.node_id: batch_length(c.num_examples, m, batch[c.node_id]) for c in active}
        step_info = {wire.EPOCH: epoch, wire.STEP_INDEX: step, wire.CLIENT_BATCH_SIZE: m, **self._run(epoch)}
        requests = {
            c.node_id: self._with_pending_cut_grad(
                c.node_id, {wire.STEP: ConfigRecord({**step_info, wire.BATCH_INDEX: batch[c.node_id]})}
            )
            for c in active
        }
        problems: dict[int, str | None] = {}

        def stage(node: int, content: RecordDict) -> None:
            """As each reply arrives: check it, and start copying its activations to the device while the
            other clients' replies are still on their way."""
            expected = {name: (sizes[node], *shape) for name, shape in self.stream_shapes.items()}
            problems[node] = wire.reply_problem(
                content, wire.SMASHED, expected, wire.CLIENT_METRICS, wire.FORWARD_METRICS, self.precision
            )
            if problems[node] is None:
                self.server.stage(node, wire.read_activations(content[wire.SMASHED], self.precision, upcast=False))

        forward = exchange(grid, requests, wire.FORWARD, timeout, group_id=f"{epoch}.{step}", on_reply=stage)
        self._count(forward, tally)
        smashed = []  # the nodes whose activations are staged, in the order of `active`
        for c in active:
            reason = forward.failures.get(c.node_id) or problems.get(c.node_id)
            if reason:
                self._drop(c, epoch, step, reason, tally)
            else:
                smashed.append(c.node_id)
                tally.client_compute_s += float(forward.replies[c.node_id][wire.CLIENT_METRICS][wire.COMPUTE_S])
        if not smashed:
            log(WARNING, "[MPSL] epoch %d step %d: no client sent activations; step skipped", epoch + 1, step)
            return

        started = time.perf_counter()
        logits = dict(zip(smashed, self.server.forward_staged(smashed)))
        tally.server_compute_s += time.perf_counter() - started

        total = sum(sizes[node] for node in smashed)
        loss_step = ConfigRecord({wire.EPOCH: epoch, wire.STEP_INDEX: step, wire.TOTAL_BATCH: total})
        requests = {
            node: RecordDict(
                {wire.LOGITS: wire.encode_activations({wire.LOGITS: part}, self.precision), wire.STEP: loss_step}
            )
            for node, part in logits.items()
        }
        backward = exchange(grid, requests, wire.LOSS_GRAD, timeout, group_id=f"{epoch}.{step}")
        self._count(backward, tally)
        logit_grads = []
        for node in smashed:
            expected = {wire.LOGIT_GRAD: (sizes[node], *self.output_shape)}
            reason = _reply_problem(backward, node, wire.LOGIT_GRAD, expected, wire.LOSS_GRAD_METRICS, self.precision)
            if reason:
                self._drop(next(c for c in active if c.node_id == node), epoch, step, reason, tally)
                logit_grads.append(None)
                continue
            reply = backward.replies[node]
            metrics = reply[wire.CLIENT_METRICS]
            tally.add_client_loss(
                float(metrics[wire.LOSS_SUM]), int(metrics[wire.CORRECT]), int(metrics[wire.NUM_EXAMPLES])
            )
            tally.bytes_analytic += int(metrics[wire.NUM_EXAMPLES]) * self.bytes_per_sample
            tally.client_compute_s += float(metrics[wire.COMPUTE_S])
            logit_grads.append(wire.read_activations(reply[wire.LOGIT_GRAD], self.precision)[wire.LOGIT_GRAD])
            partition = next(c.partition_id for c in active if c.node_id == node)
            # `step_batch` finds the gradient's labels from the batch index (and cycles it like the client)
            self.gradient_sample.observe(partition, epoch, batch[node], logit_grads[-1])

        started = time.perf_counter()
        cut_grads = self.server.backward(logit_grads)
        tally.server_compute_s += time.perf_counter() - started
        for node, cut_grad in zip(smashed, cut_grads):
            if cut_grad is not None:
                self.pending_cut_grads[node] = (cut_grad, epoch, step)
        tally.steps += 1

    def schedule(self, clients: list[ClientInfo]) -> StepSchedule:
        """The step schedule of the federation `clients`, kept while it stays the same."""
        sizes = {c.partition_id: c.num_examples for c in clients}
        if self._schedule is None or self._schedule.partition_sizes != sizes:
            self._schedule = StepSchedule(self.config, sizes)
        return self._schedule

    def _run(self, epoch: int) -> dict:
        """The run's key and finished epochs, for the STEP records of forward and end_epoch messages."""
        return {wire.RUN_KEY: self.run_key, wire.EPOCHS_DONE: epoch}

    def _with_pending_cut_grad(self, node: int, records: dict) -> RecordDict:
        """Piggy-back the node's last cut-layer gradient on its next message."""
        if node in self.pending_cut_grads:
            cut_grad, epoch, step = self.pending_cut_grads.pop(node)
            records[wire.CUT_GRAD] = wire.encode_activations(cut_grad, self.precision)
            records[wire.CUT_GRAD_STEP] = ConfigRecord({wire.EPOCH: epoch, wire.STEP_INDEX: step})
        return RecordDict(records)

    def _drop(self, client: ClientInfo, epoch: int, step: int, reason: str, tally: EpochTally) -> None:
        tally.dropped += 1
        log(
            WARNING,
            "[MPSL] epoch %d step %d: client %d (node %d) dropped: %s",
            epoch + 1,
            step,
            client.partition_id,
            client.node_id,
            reason,
        )

    @staticmethod
    def _count(result: Exchange, tally: EpochTally) -> None:
        tally.bytes_up += result.bytes_up
        tally.bytes_down += result.bytes_down

    # ---- end of epoch -------------------------------------------------------------------

    def collect_client_states(
        self, grid: Grid, clients: list[ClientInfo], epoch: int, timeout: float, tally: EpochTally
    ) -> dict[int, dict[str, np.ndarray]]:
        """Deliver the last cut gradients; return each answering client's trainable weights, by partition."""
        requests = {
            c.node_id: self._with_pending_cut_grad(
                c.node_id, {wire.STEP: ConfigRecord({wire.EPOCH: epoch, **self._run(epoch)})}
            )
            for c in clients
        }
        result = exchange(grid, requests, wire.END_EPOCH, timeout, group_id=f"{epoch}.end")
        self._count(result, tally)
        states = {}
        for c in clients:
            reason = _reply_problem(
                result, c.node_id, wire.CLIENT_MODEL, self.client_weight_shapes, wire.END_EPOCH_METRICS
            )
            if reason:
                log(
                    WARNING, "[MPSL] epoch %d: client %d left out of the average: %s", epoch + 1, c.partition_id, reason
                )
                continue
            states[c.partition_id] = wire.record_to_arrays(result.replies[c.node_id][wire.CLIENT_MODEL])
        if not states:
            raise RuntimeError(f"epoch {epoch + 1}: no client returned valid weights, nothing to evaluate")
        return states


def _reply_problem(
    result: Exchange,
    node: int,
    arrays_key: str,
    expected: dict,
    metric_names: tuple[str, ...],
    precision: str | None = None,
) -> str | None:
    """Why a node's reply of this exchange cannot be used: absent, failed or malformed."""
    if node in result.failures:
        return result.failures[node]
    return wire.reply_problem(result.replies[node], arrays_key, expected, wire.CLIENT_METRICS, metric_names, precision)


def _full_arrays(model: FullModel) -> ArrayRecord:
    return wire.tensors_to_record(trainable_arrays(model))
