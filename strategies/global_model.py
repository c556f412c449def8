"""The global model as Flower's strategy API sees it, for every method.

`initial_arrays` and a `Result`'s `arrays` hold the trainable set of the unsplit model in its
own names (`client.*` for the tokenizers, `server.*` for the encoder blocks, adapters and
head), so the same arrays load into a `FullModel` whatever method trained them. Frozen weights
never travel: they are rebuilt from the run config (same seed, same weight files).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import ArrayRecord, MetricRecord

from mpsl_flower import wire
from mpsl_flower.config import RunConfig
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.models.trainable import load_trainable, trainable_arrays
from mpsl_flower.split.evaluation import evaluate, evaluation_draws
from tasks.data import SplitData

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def initial_arrays(config: RunConfig) -> ArrayRecord:
    """The trainable set of the initial model: what every strategy's `start` takes."""
    return wire.tensors_to_record(trainable_arrays(new_full_model(config)))


def central_evaluation(config: RunConfig, test: SplitData, device: torch.device) -> EvaluateFn:
    """Flower's `evaluate_fn`: test metrics of the global model on the ServerApp's test split.

    The model is built once; each call loads the round's arrays into it.
    """
    model = new_full_model(config).to(device)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        load_trainable(model, wire.record_to_arrays(arrays))
        draws = evaluation_draws(config, server_round)
        metrics = evaluate(
            model.client, model.server, test, config.eval_batch_size, draws, accuracy_batch_size=config.batch_size
        )
        return MetricRecord(metrics)

    return evaluate_fn
