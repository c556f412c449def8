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
from mpsl_flower.results import RunResults
from mpsl_flower.split.epoch import format_epoch, with_evaluation
from strategies.global_model import EvaluateFn

CLIENT_ACCURACY, CLIENT_PARTITIONS = "client_test_accuracy", "client_test_partitions"


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
    ) -> dict:
        """Evaluate `arrays`, log, write and keep the epoch's record; save `model` (which holds `arrays`).

        `client_arrays` (partition id -> that client's own full arrays) are evaluated one by one
        too, as the original's `--validate_only_aggregated_model False` does.
        """
        epoch = train_record["epoch"]

        def evaluate() -> dict:
            metrics = dict(evaluate_fn(epoch, arrays) or {}) if evaluate_fn else {}
            if evaluate_fn and client_arrays:
                partitions = sorted(client_arrays)
                accuracies = [float(evaluate_fn(epoch, client_arrays[p])["test_accuracy"]) for p in partitions]
                metrics |= {CLIENT_PARTITIONS: partitions, CLIENT_ACCURACY: accuracies}
                metrics[f"{CLIENT_ACCURACY}_mean"] = statistics.fmean(accuracies)
            return metrics

        record = with_evaluation(train_record, evaluate)
        self.result.arrays = arrays
        self.result.train_metrics_clientapp[epoch] = MetricRecord({key: record[key] for key in train_record})
        test_metrics = {key: value for key, value in record.items() if key not in train_record}
        if set(test_metrics) - {"eval_s"}:  # `evaluate_fn` was given and returned metrics
            self.result.evaluate_metrics_serverapp[epoch] = MetricRecord(test_metrics)
        log(INFO, "[%s] %s", self.method, format_epoch(record, self.num_epochs))
        if self.results:
            self.results.log_epoch(record)
            self.results.save_model(model, epoch, last=epoch == self.num_epochs)
        return record
