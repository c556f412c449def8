"""The ServerApp: read the run config, then run the chosen method (MPSL strategy or centralized)."""

from __future__ import annotations

from logging import ERROR, INFO

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from mpsl_flower.centralized import run_centralized
from mpsl_flower.config import ConfigError, parse_run_config
from mpsl_flower.results import RunResults
from mpsl_flower.split.build import new_server_side, resolve_device
from strategies.mpsl import MpslStrategy
from tasks.registry import load_task_data

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        run(grid, context)
    except ConfigError as error:
        log(ERROR, "Invalid run config: %s", error)
        raise


def run(grid: Grid, context: Context) -> None:
    """Train with the run config of `context` over the nodes of `grid`."""
    config = parse_run_config(context.run_config)
    if config.method == "centralized":
        log(INFO, "[centralized] trains in the ServerApp alone; the SuperNodes stay idle")
        _, results = run_centralized(config, run_label=str(grid.run.run_id))
        log(INFO, "[centralized] done; metrics and model in %s", results.folder)
        return
    device = resolve_device(config)
    results = RunResults(config, run_label=str(grid.run.run_id))
    log(INFO, "[MPSL] dataset %s, encoder %s on %s; results in %s", config.dataset, config.encoder_size, device, results.folder)
    test = load_task_data(config.dataset, config.seed).test
    strategy = MpslStrategy(config, new_server_side(config, device), test, results)
    strategy.start(grid)
    log(INFO, "[MPSL] done; metrics and model in %s", results.folder)
