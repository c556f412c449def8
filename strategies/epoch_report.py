"""What every strategy does when an epoch (MPSL, centralized) or a round (FedAvg, FedCLIP) ends.

Evaluate the global model through Flower's `evaluate_fn(server_round, arrays)` (and, with
`validate-only-aggregated-model=false`, each client's own model as well), log one line, append
the record to `metrics.jsonl`, save the model, and keep the metrics in a Flower `Result`: the
training half under `train_metrics_clientapp`, the test metrics under
`evaluate_metrics_serverapp`, both keyed by epoch (from 1).
"""

from __future__ import annotations

import statistics
from logging import INFO

from flwr.app import ArrayRecord, MetricRecord
from flwr.common import log
from flwr.serverapp.strategy import Result

from mpsl_flower.models.full_model import FullModel
from mpsl_flower.runs import record as record_keys
from mpsl_flower.runs.record import format_epoch, with_evaluation
from mpsl_flower.runs.writer import RunResults
from strategies.global_model import EvaluateFn


class EpochReport:
    """Closes each epoch of one run and collects its `Result`."""

    def __init__(self, method: str, num_epochs: int, results: RunResults | None) -> None:
        self.method = method
        self.num_epochs = num_epochs
        self.results = results
        self.result = Result()

    def close(
        self,
        train_record: dict,
        arrays: ArrayRecord,
        evaluate_fn: EvaluateFn | None,
        model: FullModel,
        client_arrays: dict[int, ArrayRecord] | None = None,
        resume_state: dict | None = None,
    ) -> dict:
        """Evaluate `arrays`, log, write and keep the epoch's record; save `model` (which holds `arrays`).

        `client_arrays` (partition id -> that client's own full arrays) are evaluated one by one
        too, as the original's `--validate_only_aggregated_model False` does. `resume_state` (the
        strategy's, see `RunResults.log_epoch`) is saved with the record.
        """
        epoch = train_record[record_keys.EPOCH]

        def evaluate() -> dict:
            metrics = dict(evaluate_fn(epoch, arrays) or {}) if evaluate_fn else {}
            if evaluate_fn and client_arrays:
                partitions = sorted(client_arrays)
                accuracies = [
                    float(evaluate_fn(epoch, client_arrays[p])[record_keys.TEST_ACCURACY]) for p in partitions
                ]
                metrics |= {
                    record_keys.CLIENT_TEST_PARTITIONS: partitions,
                    record_keys.CLIENT_TEST_ACCURACY: accuracies,
                    record_keys.CLIENT_TEST_ACCURACY_MEAN: statistics.fmean(accuracies),
                }
            return metrics

        record = with_evaluation(train_record, evaluate)
        self.result.arrays = arrays
        self._keep(record)
        log(INFO, "[%s] %s", self.method, format_epoch(record, self.num_epochs))
        if self.results:
            self.results.log_epoch(record, resume_state)
            self.results.save_model(model, epoch, last=epoch == self.num_epochs)
        return record

    def replay(self, records: list[dict]) -> None:
        """Put the records of the epochs an interrupted run finished into the `Result`, as if run here."""
        for record in records:
            self._keep(record)

    def _keep(self, record: dict) -> None:
        """The record in the `Result`: its test half apart from its training half."""
        epoch = record[record_keys.EPOCH]
        test_metrics = record_keys.test_half(record)
        self.result.train_metrics_clientapp[epoch] = MetricRecord(record_keys.training_half(record))
        if set(test_metrics) - {record_keys.EVAL_S}:  # `evaluate_fn` was given and returned metrics
            self.result.evaluate_metrics_serverapp[epoch] = MetricRecord(test_metrics)
