"""The ServerApp `bench/bench_deployment.py` runs on a real (deployment) SuperLink: floor, then MPSL steps.

On the same nodes of the same run: Flower's floor, two round trips of empty `query.ping`
messages (what one MPSL step would cost if nobody computed anything), then MPSL steps of
`MpslStrategy`, each timed, with the server's and the clients' own compute from the step's
tally. The figures go, as JSON, to the file named by the environment variable
`MPSL_BENCH_OUT` (the SuperLink passes its environment on to the ServerApp process).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import torch
from flwr.app import Context, RecordDict
from flwr.serverapp import Grid, ServerApp

from mpsl_flower import wire
from mpsl_flower.config import parse_run_config
from mpsl_flower.runs.record import EpochTally
from strategies.discovery import discover_clients
from strategies.exchange import exchange
from strategies.mpsl import MpslStrategy

PINGS = 3  # floor measurements
STEPS = 3  # MPSL steps measured (the first includes no cut gradient; the others do)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = parse_run_config(context.run_config)
    timeout = config.step_timeout_s
    clients = discover_clients(grid, timeout, config.discovery_timeout_s)
    nodes = {c.node_id: RecordDict() for c in clients}
    floors = []
    for _ in range(PINGS):
        started = time.perf_counter()
        for _ in range(2):
            result = exchange(grid, nodes, wire.PING, timeout)
            assert not result.failures, result.failures
        floors.append(time.perf_counter() - started)
    strategy = MpslStrategy(config, torch.device("cpu"))
    m = config.client_batch_size(len(clients))
    steps = []
    for step in range(STEPS):
        tally = EpochTally()
        started = time.perf_counter()
        strategy.run_step(grid, clients, 0, step, m, timeout, tally)
        steps.append(
            {
                "wall_s": time.perf_counter() - started,
                "server_compute_s": tally.server_compute_s,
                "client_handler_s": tally.client_compute_s / len(clients),  # per client, both its messages
                "dropped": tally.dropped,
            }
        )
    figures = {
        "clients": len(clients),
        "samples_per_client": m,
        "floor_s": floors,
        "floor_median_s": statistics.median(floors),
        "steps": steps,
    }
    with open(os.environ["MPSL_BENCH_OUT"], "w", encoding="utf-8") as stream:
        json.dump(figures, stream, indent=2)
