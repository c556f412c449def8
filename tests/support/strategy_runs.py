"""Run any of our strategies as the ServerApp does, and read its Flower `Result` back as epoch records."""

from __future__ import annotations

import torch
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from mpsl_flower.app.server_app import STRATEGIES, start
from mpsl_flower.config import RunConfig

CPU = torch.device("cpu")


def run_strategy(config: RunConfig, grid: Grid | None) -> tuple[Strategy, Result]:
    """`config.method`'s strategy (no results folder), started as the ServerApp starts it; it and its `Result`."""
    strategy = STRATEGIES[config.method](config, CPU)
    return strategy, start(strategy, config, grid, CPU)


def epoch_records(result: Result) -> list[dict]:
    """One dict per epoch: the training metrics and the central evaluation metrics of the `Result`."""
    return [
        {**result.train_metrics_clientapp[epoch], **result.evaluate_metrics_serverapp.get(epoch, {})}
        for epoch in sorted(result.train_metrics_clientapp)
    ]
