"""The per-node dispatch index (`mpsl_flower.app.dispatch_index`) hands out exactly what Flower's own
`InMemoryLinkState.get_message_ins` does, on real Flower states, grids and messages."""

from __future__ import annotations

import secrets
import time

import flwr
import pytest
from flwr.app import Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from mpsl_flower.app.dispatch_index import index_dispatch

RUN_ID = 7


@pytest.fixture(autouse=True)
def serverapp_identity(monkeypatch):
    """Messages take their run and source from the process's task identity, which `simulate` sets for a ServerApp."""
    for name, value in (("_task_id", 1), ("_run_id", RUN_ID), ("_node_id", SUPERLINK_NODE_ID)):
        monkeypatch.setattr(TaskIdentity, name, value)


def simulation_grid(num_nodes: int) -> tuple[InMemoryGrid, list[int]]:
    """A grid over a fresh in-memory LinkState with one run and `num_nodes` nodes, as `run_simulation` sets it up."""
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    run = Run.create_empty(run_id=RUN_ID)
    run.federation_id = NOOP_FEDERATION_ID
    run.primary_task_id = secrets.randbits(63)
    state = factory.state()
    state.run_ids[run.run_id] = RunRecord(run=run)
    state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id, run_id=run.run_id)
    nodes = list(_register_nodes(num_nodes, factory))
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    return grid, nodes


def push(grid: InMemoryGrid, nodes: list[int], tag: str, ttl: float = 60.0) -> list[str]:
    messages = [Message(RecordDict(), dst_node_id=node, message_type=f"query.{tag}", ttl=ttl) for node in nodes]
    return list(grid.push_messages(messages))


def sweep(grid: InMemoryGrid, nodes: list[int]) -> list[tuple[int, str]]:
    """What Flower's dispatcher thread does every 0.1 s: each node's next message, node after node.
    Returns (the node's position, the message's type), as node ids are drawn at random."""
    handed = []
    for position, node in enumerate(nodes):
        for message in grid.state.get_message_ins(node_id=node, limit=1):
            handed.append((position, message.metadata.message_type))
    return handed


def scenario(indexed: bool) -> list:
    """Several messages per node, one expired, one node pulled twice per sweep; what every sweep hands out."""
    grid, nodes = simulation_grid(5)
    if indexed:
        assert index_dispatch(grid)
    push(grid, nodes, "first")
    push(grid, nodes[:3], "second")
    push(grid, nodes[3:], "short", ttl=0.05)
    time.sleep(0.1)  # the short ones expire before anyone asks for them
    push(grid, nodes[::2], "third")
    sweeps = [sweep(grid, nodes) for _ in range(4)]
    state = grid.state
    return [
        sweeps,
        state.num_message_ins(),
        sorted(state.message_ins_store[i].metadata.message_type for i in state.message_ins_store),
    ]


def test_the_index_hands_out_what_flower_does():
    flower, indexed = scenario(indexed=False), scenario(indexed=True)
    assert indexed == flower
    sweeps = flower[0]
    assert [kind for _, kind in sweeps[0]] == ["query.first"] * 5  # oldest first, one per node per sweep
    assert not any(kind == "query.short" for sweep_ in sweeps for _, kind in sweep_)  # expired: dropped
    assert sweeps[-1] == []


def test_replies_still_reach_the_server_after_indexed_dispatch():
    grid, nodes = simulation_grid(3)
    index_dispatch(grid)
    ids = push(grid, nodes, "ping")
    for node in nodes:
        (message,) = grid.state.get_message_ins(node_id=node, limit=None)
        reply = Message(RecordDict(), reply_to=message)
        reply.metadata.__dict__["_message_id"] = secrets.token_hex(16)
        assert grid.state.store_message_res(reply) is not None
    assert {reply.metadata.reply_to_message_id for reply in grid.pull_messages(ids)} == set(ids)
    assert grid.state.num_message_ins() == 0


def test_a_sweep_costs_linear_time_with_the_index():
    """The point of the index: a sweep over 1,000 nodes with one message each validates 1,000 messages, not 10⁶."""
    grid, nodes = simulation_grid(1000)
    index_dispatch(grid)
    push(grid, nodes, "step")
    calls = []
    check = grid.state._check_stored_messages
    grid.state._check_stored_messages = lambda ids, run_id=None: (calls.append(len(ids)), check(ids, run_id))[1]
    assert len(sweep(grid, nodes)) == 1000
    assert sum(calls) == 1000


def test_other_states_and_versions_are_left_alone(monkeypatch):
    assert not index_dispatch(object())  # a deployment grid has no in-memory state
    grid, nodes = simulation_grid(2)
    monkeypatch.setattr(flwr, "__version__", "1.99.0")
    assert not index_dispatch(grid)
    assert "get_message_ins" not in vars(grid.state)
    monkeypatch.setattr(flwr, "__version__", "1.42.0")
    assert index_dispatch(grid) and index_dispatch(grid)  # twice is harmless


@pytest.mark.parametrize("limit", [0, -1])
def test_a_bad_limit_is_refused_as_flower_does(limit):
    grid, nodes = simulation_grid(1)
    index_dispatch(grid)
    with pytest.raises(AssertionError, match="limit"):
        grid.state.get_message_ins(node_id=nodes[0], limit=limit)
