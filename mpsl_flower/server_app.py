"""The ServerApp: read the run config, then run the chosen method (MPSL, FedAvg or centralized)."""

from __future__ import annotations

from logging import ERROR, INFO

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from mpsl_flower.centralized import run_centralized
from mpsl_flower.config import ConfigError, parse_run_config
from mpsl_flower.model_inputs import load_inputs
from mpsl_flower.results import RunResults
from mpsl_flower.split.build import new_server_side, resolve_device
from strategies.discovery import discover_clients
from strategies.fedavg import FederatedAveraging
from strategies.mpsl import MpslStrategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        run(grid, context)
    except ConfigError as error:
        log(ERROR, "Invalid run config: %s", error)
        raise


def run(grid: Grid, context: Context) -> None:
    """Train with the method and settings of the run config over the nodes of `grid`."""
    config = parse_run_config(context.run_config)
    if config.method == "centralized":
        log(INFO, "[centralized] trains in the ServerApp alone; the SuperNodes stay idle")
        _, results = run_centralized(config, run_label=str(grid.run.run_id))
    else:
        device = resolve_device(config)
        results = RunResults(config, run_label=str(grid.run.run_id))
        log(INFO, "[%s] dataset %s, encoder %s on %s; results in %s", config.method, config.dataset, config.encoder_size, device, results.folder)
        test = load_inputs(config).test
        if config.method in ("fedavg", "fedclip"):
            clients = discover_clients(grid, config.step_timeout_s)
            config.check_num_clients(len(clients))
            FederatedAveraging(config, clients, test, device, results).run(grid)
        else:
            MpslStrategy(config, new_server_side(config, device), test, results).start(grid)
    log(INFO, "[%s] done; metrics and model in %s", config.method, results.folder)
