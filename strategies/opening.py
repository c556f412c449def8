"""How every federated strategy opens a run: find the clients, check that they fit the config, write the run's
facts and start the epoch report."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from flwr.serverapp import Grid

from mpsl_flower.config import ConfigError, RunConfig
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.node.partitions import partition_label_counts
from mpsl_flower.runs.facts import run_info
from mpsl_flower.runs.writer import RunResults
from strategies.discovery import ClientInfo, discover_clients
from strategies.epoch_report import EpochReport


@dataclass(frozen=True)
class Opening:
    """The federation a run trains over, each client's mini-batch, and the report that closes its epochs."""

    clients: list[ClientInfo]
    client_batch_size: int
    report: EpochReport


def open_federation(
    method: str,
    grid: Grid,
    config: RunConfig,
    timeout: float,
    num_rounds: int,
    results: RunResults | None,
    model: FullModel,
    device: torch.device,
    expected_clients: int | None = None,
) -> Opening:
    """Discover the clients (`timeout`: one query's wait), refuse a federation the config cannot serve (or, with
    `expected_clients`, one of another size than the interrupted run's), and write `run_info.json`."""
    clients = discover_clients(grid, timeout, config.discovery_timeout_s)
    config.check_num_clients(len(clients))
    if expected_clients is not None and expected_clients != len(clients):
        raise ConfigError(
            f"resume-from: the run had {expected_clients} clients and {len(clients)} are connected; "
            "start the same SuperNodes (num-supernodes) as the interrupted run"
        )
    batch = config.client_batch_size(len(clients))
    if results:
        sizes = {c.partition_id: c.num_examples for c in clients}
        label_counts = partition_label_counts(config, len(clients))
        results.write_run_info(run_info(config, model, sizes, label_counts, batch, device))
    return Opening(clients, batch, EpochReport(method, num_rounds, results))
