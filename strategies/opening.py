"""How every federated strategy opens a run: find the clients, check that they fit the config (and, for MPSL on
a Ray cluster of several machines, that every machine sees one client-state folder), write the run's facts and
start the epoch report."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from logging import INFO

import torch
from flwr.common import log
from flwr.serverapp import Grid

from mpsl_flower.config import ConfigError, RunConfig
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.node.partitions import partition_label_counts
from mpsl_flower.node.state_store import SHARED_FOLDER_FIX, store_location
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
    devices = Counter(c.device or "unknown" for c in clients)
    log(INFO, "clients compute on %s", ", ".join(f"{device} ({n})" for device, n in sorted(devices.items())))
    if expected_clients is not None and expected_clients != len(clients):
        raise ConfigError(
            f"resume-from: the run had {expected_clients} clients and {len(clients)} are connected; "
            "start the same SuperNodes (num-supernodes) as the interrupted run"
        )
    if config.method == "mpsl":  # the only method whose clients keep a store (FedAvg's Adam is in context.state)
        check_client_state_shared(config)
    batch = config.client_batch_size(len(clients))
    if results:
        sizes = {c.partition_id: c.num_examples for c in clients}
        label_counts = partition_label_counts(config, len(clients))
        results.write_run_info(run_info(config, model, sizes, label_counts, batch, device))
    return Opening(clients, batch, EpochReport(method, num_rounds, results))


STATE_PROBE_TIMEOUT_S = 120.0  # a Ray worker per machine: starting one takes seconds


def check_client_state_shared(config: RunConfig) -> None:
    """Refuse an MPSL simulation on a Ray cluster of several machines whose `client-state-dir` is not one folder.

    A virtual client's messages run on any machine of the cluster, its state in the store of the machine
    that ran its first one: every other machine would refuse it (`state_store.check_store_here`). So before
    training, one task on each machine reads the id of the store root it sees (`state_store.store_location`);
    more than one id stops the run. The ServerApp runs in the simulation's Ray driver; with no Ray here
    (deployment, a grid in this process), every node's messages run on its own machine and nothing is checked.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    if len(nodes) < 2:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(store_location)
    where = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)) for n in nodes]
    locations = ray.get([task.remote(config.client_state_dir) for task in where], timeout=STATE_PROBE_TIMEOUT_S)
    if len({store for store, _, _ in locations}) > 1:
        seen = "; ".join(f"{host}: {root} (store {store[:8]})" for store, host, root in locations)
        raise ConfigError(
            f"client-state-dir={config.client_state_dir!r} is not one folder on the {len(nodes)} nodes of this Ray "
            f"cluster ({seen}): a virtual client's state would stay on the machine of its first message while its "
            f"next ones run elsewhere; {SHARED_FOLDER_FIX}"
        )
