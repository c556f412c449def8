"""The ServerApp: read the run config, build the method's strategy, start it, report where results went."""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO

import torch
from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result, Strategy

from mpsl_flower.app.dispatch_index import index_dispatch
from mpsl_flower.config import RunConfig, parse_run_config, task_defaults
from mpsl_flower.logs import show_project_logs
from mpsl_flower.models.factory import resolve_device
from mpsl_flower.models.pretrained import require_weight_files
from mpsl_flower.runs.writer import RunResults
from mpsl_flower.split.model_inputs import load_inputs
from strategies.centralized import Centralized
from strategies.fedavg import FederatedAveraging
from strategies.global_model import central_evaluation, initial_arrays
from strategies.mpsl import MpslStrategy
from tasks.registry import EMBEDDED

STRATEGIES = {
    "mpsl": MpslStrategy,
    "fedavg": FederatedAveraging,
    "fedclip": FederatedAveraging,
    "centralized": Centralized,
}

show_project_logs()
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = parse_run_config(context.run_config)
    log_task_defaults(config, context.run_config)
    index_dispatch(grid)
    train(config, grid, run_label=str(grid.run.run_id))


def log_task_defaults(config: RunConfig, run_config: Mapping[str, object]) -> None:
    """Say which of the task-dependent settings nobody chose, and the values they took (`config.task_defaults`)."""
    defaults = task_defaults(run_config)
    if defaults:
        origin = "fast CPU settings" if config.dataset in EMBEDDED else "the original's example command"
        chosen = ", ".join(f"{key}={value!r}" for key, value in defaults.items())
        log(INFO, "[%s] %s's defaults (%s): %s", config.method, config.dataset, origin, chosen)


def train(config: RunConfig, grid: Grid | None, run_label: str = "") -> tuple[Result, RunResults]:
    """Train with `config.method` over the nodes of `grid` (None: centralized without Flower's runtime)."""
    require_weight_files(config)
    device = resolve_device(config)
    results = RunResults(config, run_label)
    log(
        INFO,
        "[%s] dataset %s, encoder %s on %s; results in %s",
        config.method,
        config.dataset,
        config.encoder_size,
        device,
        results.folder,
    )
    result = start(STRATEGIES[config.method](config, device, results), config, grid, device)
    log(INFO, "[%s] done; metrics and model in %s", config.method, results.folder)
    return result, results


def start(strategy: Strategy, config: RunConfig, grid: Grid | None, device: torch.device) -> Result:
    """Start `strategy` with Flower's arguments: one round per epoch, central evaluation on the test split."""
    return strategy.start(
        grid=grid,
        initial_arrays=initial_arrays(config),
        num_rounds=config.num_epochs,
        timeout=config.step_timeout_s,
        evaluate_fn=central_evaluation(config, load_inputs(config).test, device),
    )
