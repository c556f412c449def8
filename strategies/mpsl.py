"""MPSL as a Flower strategy: the server side of parallel split learning over a `Grid`.

Per step, two round trips to every participating client: `train.forward` (carrying the
cut-layer gradient of the client's previous step) returns smashed activations; all of them
go through ONE server forward; `train.loss_grad` sends each client its logits and returns
dL/dlogits; ONE backward and optimizer step follow. A client that errs, times out or sends
malformed arrays is dropped from that step with a logged reason; the rest carry on.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from mpsl_flower import wire
from mpsl_flower.client_data import partition_label_counts
from mpsl_flower.config import RunConfig
from mpsl_flower.results import RunResults, model_facts
from mpsl_flower.split.build import new_client_model
from mpsl_flower.split.epoch import EpochTally, close_epoch, format_epoch
from mpsl_flower.split.schedule import num_batches, steps_per_epoch
from mpsl_flower.split.server_side import ServerSide
from strategies.discovery import ClientInfo, discover_clients
from strategies.exchange import Exchange, exchange
from tasks.data import SplitData


class MpslStrategy:
    """Drives MPSL training over the nodes of a Flower `Grid`; holds the one server model."""

    def __init__(self, config: RunConfig, server: ServerSide, test: SplitData, results: RunResults | None = None) -> None:
        self.config = config
        self.server = server
        self.test = test
        self.results = results
        self.template = new_client_model(config)
        self.stream_shapes = self.template.stream_shapes()
        self.client_weight_shapes = {n: tuple(p.shape) for n, p in self.template.named_parameters() if p.requires_grad}
        self.output_shape = server.model.output_shape
        self.pending_cut_grads: dict[int, tuple[dict[str, torch.Tensor], int, int]] = {}
        self.history: list[dict] = []

    # ---- run ----------------------------------------------------------------------------

    def start(self, grid: Grid) -> list[dict]:
        """Discover clients, train for `nr-of-epochs`, return the per-epoch records."""
        clients = discover_clients(grid, self.config.step_timeout_s)
        self.config.check_num_clients(len(clients))
        m = self.config.client_batch_size(len(clients))
        steps = steps_per_epoch([c.num_examples for c in clients], m)
        log(INFO, "[MPSL] %d clients, %d samples/client/step, %d steps/epoch", len(clients), m, steps)
        if self.results:
            self.results.write_run_info(self.run_info(clients, m, steps))
        for epoch in range(self.config.num_epochs):
            tally = EpochTally()
            for step in range(steps):
                self.run_step(grid, clients, epoch, step, m, tally)
                if (step + 1) % max(1, steps // 4) == 0 and step + 1 < steps:
                    log(INFO, "[MPSL] epoch %d: step %d/%d", epoch + 1, step + 1, steps)
            record = self.finish_epoch(grid, clients, epoch, tally)
            self.history.append(record)
            log(INFO, "[MPSL] %s", format_epoch(record, self.config.num_epochs))
        return self.history

    def run_info(self, clients: list[ClientInfo], client_batch_size: int, steps: int) -> dict:
        return {
            "num_clients": len(clients),
            "partition_sizes": {c.partition_id: c.num_examples for c in clients},
            "partition_label_counts": partition_label_counts(self.config, len(clients)),
            "client_batch_size": client_batch_size,
            "steps_per_epoch": steps,
            "device": str(self.server.device),
            **model_facts(self.config, self.template, self.server.model),
        }

    # ---- one step -----------------------------------------------------------------------

    def run_step(self, grid: Grid, clients: list[ClientInfo], epoch: int, step: int, m: int, tally: EpochTally) -> None:
        """One MPSL step over every client that still has data in this epoch."""
        active = [c for c in clients if step < num_batches(c.num_examples, m)]
        sizes = {c.node_id: min(m, c.num_examples - step * m) for c in active}
        step_info = {"epoch": epoch, "step": step, "client-batch-size": m}
        requests = {c.node_id: self._with_pending_cut_grad(c.node_id, {wire.STEP: wire.step_record(**step_info)}) for c in active}
        forward = exchange(grid, requests, wire.FORWARD, self.config.step_timeout_s, group_id=f"{epoch}.{step}")
        self._count(forward, tally)
        smashed = {}
        for c in active:
            reason = self._forward_problem(forward, c.node_id, sizes[c.node_id])
            if reason:
                self._drop(c, epoch, step, reason, tally)
            else:
                smashed[c.node_id] = wire.record_to_tensors(forward.replies[c.node_id][wire.SMASHED])
                tally.client_compute_s += float(forward.replies[c.node_id][wire.CLIENT_METRICS]["compute-s"])
        if not smashed:
            log(WARNING, "[MPSL] epoch %d step %d: no client sent activations; step skipped", epoch + 1, step)
            return

        started = time.perf_counter()
        logits = dict(zip(smashed, self.server.forward(list(smashed.values()))))
        tally.server_compute_s += time.perf_counter() - started

        total = sum(sizes[node] for node in smashed)
        requests = {
            node: RecordDict(
                {
                    wire.LOGITS: wire.tensors_to_record({"logits": part}),
                    wire.STEP: wire.step_record(epoch=epoch, step=step, **{"total-batch": total}),
                }
            )
            for node, part in logits.items()
        }
        backward = exchange(grid, requests, wire.LOSS_GRAD, self.config.step_timeout_s, group_id=f"{epoch}.{step}")
        self._count(backward, tally)
        logit_grads = []
        for node in smashed:
            reason = self._loss_grad_problem(backward, node, sizes[node])
            if reason:
                self._drop(next(c for c in active if c.node_id == node), epoch, step, reason, tally)
                logit_grads.append(None)
                continue
            reply = backward.replies[node]
            metrics = reply[wire.CLIENT_METRICS]
            tally.add_client_loss(float(metrics["loss-sum"]), int(metrics["correct"]), int(metrics["num-examples"]))
            tally.client_compute_s += float(metrics["compute-s"])
            logit_grads.append(wire.record_to_tensors(reply[wire.LOGIT_GRAD])["logit_grad"])

        started = time.perf_counter()
        cut_grads = self.server.backward(logit_grads)
        tally.server_compute_s += time.perf_counter() - started
        for node, cut_grad in zip(smashed, cut_grads):
            if cut_grad is not None:
                self.pending_cut_grads[node] = (cut_grad, epoch, step)
        tally.steps += 1

    def _with_pending_cut_grad(self, node: int, records: dict) -> RecordDict:
        """Piggy-back the node's last cut-layer gradient on its next message."""
        if node in self.pending_cut_grads:
            cut_grad, epoch, step = self.pending_cut_grads.pop(node)
            records[wire.CUT_GRAD] = wire.tensors_to_record(cut_grad)
            records[wire.CUT_GRAD_STEP] = wire.step_record(epoch=epoch, step=step)
        return RecordDict(records)

    @staticmethod
    def _missing(result: Exchange, node: int, arrays_key: str, metric_keys: tuple[str, ...]) -> str | None:
        """Why a node's reply is absent or lacks its arrays or metrics; None when complete."""
        if node in result.failures:
            return result.failures[node]
        reply = result.replies[node]
        if arrays_key not in reply or wire.CLIENT_METRICS not in reply:
            return f"reply lacks its {arrays_key!r} arrays or its metrics"
        missing = [key for key in metric_keys if key not in reply[wire.CLIENT_METRICS]]
        return f"reply lacks metrics {missing}" if missing else None

    def _forward_problem(self, result: Exchange, node: int, size: int) -> str | None:
        if reason := self._missing(result, node, wire.SMASHED, ("compute-s",)):
            return reason
        reply = result.replies[node]
        expected = {name: (size, *shape) for name, shape in self.stream_shapes.items()}
        return wire.check_arrays(wire.record_to_arrays(reply[wire.SMASHED]), expected, "smashed activations")

    def _loss_grad_problem(self, result: Exchange, node: int, size: int) -> str | None:
        if reason := self._missing(result, node, wire.LOGIT_GRAD, ("loss-sum", "correct", "num-examples", "compute-s")):
            return reason
        reply = result.replies[node]
        if not np.isfinite(float(reply[wire.CLIENT_METRICS]["loss-sum"])):
            return "client reported a non-finite loss"
        expected = {"logit_grad": (size, *self.output_shape)}
        return wire.check_arrays(wire.record_to_arrays(reply[wire.LOGIT_GRAD]), expected, "loss gradient")

    def _drop(self, client: ClientInfo, epoch: int, step: int, reason: str, tally: EpochTally) -> None:
        tally.dropped += 1
        log(WARNING, "[MPSL] epoch %d step %d: client %d (node %d) dropped: %s", epoch + 1, step, client.partition_id, client.node_id, reason)

    @staticmethod
    def _count(result: Exchange, tally: EpochTally) -> None:
        tally.bytes_up += result.bytes_up
        tally.bytes_down += result.bytes_down

    # ---- end of epoch -------------------------------------------------------------------

    def finish_epoch(self, grid: Grid, clients: list[ClientInfo], epoch: int, tally: EpochTally) -> dict:
        """Deliver the last cut gradients, average client weights, evaluate, save."""
        requests = {c.node_id: self._with_pending_cut_grad(c.node_id, {wire.STEP: wire.step_record(epoch=epoch)}) for c in clients}
        result = exchange(grid, requests, wire.END_EPOCH, self.config.step_timeout_s, group_id=f"{epoch}.end")
        self._count(result, tally)
        states, weights = [], []
        for c in clients:
            reason = result.failures.get(c.node_id)
            if reason is None:
                arrays = wire.record_to_arrays(result.replies[c.node_id].get(wire.CLIENT_MODEL, {}))
                reason = wire.check_arrays(arrays, self.client_weight_shapes, "client weights")
            if reason:
                log(WARNING, "[MPSL] epoch %d: client %d left out of the average: %s", epoch + 1, c.partition_id, reason)
                continue
            states.append(arrays)
            weights.append(c.num_examples)
        if not states:
            raise RuntimeError(f"epoch {epoch + 1}: no client returned valid weights, nothing to evaluate")
        record, client_model = close_epoch(self.config, epoch, self.server, states, weights, self.test, tally)
        if self.results:
            self.results.log_epoch(record)
            self.results.save_model(self.server.model, client_model, epoch + 1)
        return record
