"""An MPSL client's state lives in one store; a message that runs where that store is not fails loudly, and a Ray
cluster whose machines see different `client-state-dir` folders is refused before training."""

from __future__ import annotations

import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray
from support.flwr_harness import ray_cluster
from support.inprocess_grid import InProcessGrid
from support.strategy_runs import epoch_records, run_strategy

from mpsl_flower import wire
from mpsl_flower.app import client_app as client_module
from mpsl_flower.app.simulation import simulate
from mpsl_flower.config import ConfigError, parse_run_config
from mpsl_flower.node import progress as node_progress
from mpsl_flower.node.state_store import store_folder, store_id
from strategies.opening import check_client_state_shared

NUM_CLIENTS = 4
MOVED = 1  # the partition whose messages stop finding its store
FROM_STEP = 2  # ... from this step of epoch 0 on


def test_a_store_root_has_one_id_however_many_processes_ask_at_once(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: store_id(str(tmp_path / "a")), range(32)))
    assert len(ids) == 1 and ids == {store_id(str(tmp_path / "a"))}
    assert store_id(str(tmp_path / "b")) not in ids
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["store-id"]  # no private copy left behind


class LosingGrid(InProcessGrid):
    """From epoch 0, step FROM_STEP, partition MOVED's messages find no store of its own, in one of three ways:
    they run on another machine (another folder), its store folder was emptied, or its state files were lost.
    Each message runs as in a fresh process (no cache). Every (message, reply) of that partition is kept."""

    def __init__(self, how: str, other_folder: Path, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.how, self.other_folder, self.after = how, other_folder, []

    def _handle(self, message):
        node_progress.live_clients.clear()
        context = self.contexts[message.metadata.dst_node_id]
        step = message.content.config_records.get(wire.STEP)  # None for a query
        index = step.get(wire.STEP_INDEX, node_progress.END_OF_EPOCH) if step else -1
        if message.metadata.dst_node_id != self.node_ids[MOVED] or index < FROM_STEP:
            return super()._handle(message)
        config = parse_run_config(context.run_config)
        store = store_folder(config.client_state_dir, node_progress.progress(context)[wire.STATE_STORE_KEY])
        if self.how == "emptied":
            shutil.rmtree(store, ignore_errors=True)
        elif self.how == "files lost":
            for revision in store.glob("revision-*.npz"):
                revision.unlink()
        here = context.run_config
        if self.how == "another machine":
            context.run_config = {**here, "client-state-dir": str(self.other_folder)}
        try:
            reply = super()._handle(message)
        finally:
            context.run_config = here
        self.after.append((message.metadata.message_type, reply))
        return reply


@pytest.mark.parametrize(
    ("how", "raised"),
    [
        ("another machine", "ClientStateElsewhere: this node's client state is not in this client-state-dir"),
        ("emptied", "ClientStateElsewhere: this node's client state is not in this client-state-dir"),
        ("files lost", r"ClientStateMissing: client state revision \d+ is not readable"),
    ],
)
def test_a_client_whose_state_is_not_where_its_message_runs_fails_every_message_and_never_restarts(
    fast_run_config, tmp_path, how, raised
):
    run_config = {**fast_run_config, "client-state-dir": str(tmp_path / "here")}
    grid = LosingGrid(how, tmp_path / "elsewhere", client_module.app, NUM_CLIENTS, run_config)
    (record,) = epoch_records(run_strategy(parse_run_config(run_config), grid)[1])

    assert record["clients_aggregated"] == NUM_CLIENTS - 1, record  # its end_epoch failed too
    forwards = [reply for kind, reply in grid.after if kind == wire.FORWARD]
    assert forwards and len(forwards) == record["dropped_client_steps"], record
    for kind, reply in grid.after:
        assert reply.has_error(), f"{kind} of the moved client answered: it went on without its state"
        assert re.search(raised, reply.error.reason), reply.error.reason
        assert "set client-state-dir to a folder every machine shares" in reply.error.reason
    assert not (tmp_path / "elsewhere").exists()  # nothing was started anew on the other machine


def test_a_run_without_ray_is_not_checked(fast_config, tmp_path, monkeypatch):
    """Deployment (or a grid in this process): every node's messages run on its own machine."""
    ray.shutdown()  # a simulation earlier in this process leaves its Ray connected
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    check_client_state_shared(fast_config)
    assert not (tmp_path / "mpsl-flower-client-state").exists()  # no store was even looked at


@pytest.mark.integration
def test_a_simulation_on_two_machines_with_node_local_client_state_stops_before_training(
    fast_run_config, tmp_path, monkeypatch
):
    """Each node's default `client-state-dir` is its own temp folder: the ServerApp stops at the start and says
    what to set; a folder both nodes share passes the same check."""
    with ray_cluster(num_cpus=1, node_temp_dirs=(tmp_path / "machine-a", tmp_path / "machine-b")) as (address, _):
        monkeypatch.setenv("RAY_ADDRESS", address)
        try:
            with pytest.raises(ConfigError, match=r"client-state-dir='' is not one folder on the 2 nodes") as refused:
                simulate(2, fast_run_config, backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0}})
            message = str(refused.value)
            assert "machine-a/mpsl-flower-client-state" in message and "machine-b/mpsl-flower-client-state" in message
            assert "set client-state-dir to a folder every machine shares" in message
            assert not any(path.read_text().strip() for path in (tmp_path / "results").glob("*/metrics.jsonl"))
            shared = parse_run_config({**fast_run_config, "client-state-dir": str(tmp_path / "shared")})
            check_client_state_shared(shared)
        finally:
            ray.shutdown()
