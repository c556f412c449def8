"""Find the connected clients: node id, data partition and training-set size of each."""

from __future__ import annotations

import time
from dataclasses import dataclass
from logging import WARNING

from flwr.app import RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from mpsl_flower import wire
from strategies.exchange import exchange

DISCOVERY_POLL_S = 0.5


@dataclass(frozen=True)
class ClientInfo:
    """A connected client: its node, its data partition and how many samples it holds."""

    node_id: int
    partition_id: int
    num_examples: int


def discover_clients(grid: Grid, timeout_s: float) -> list[ClientInfo]:
    """Ask every node for its partition; wait until all `num-partitions` have answered."""
    deadline = time.monotonic() + timeout_s
    known: dict[int, ClientInfo] = {}
    refused: set[int] = set()
    expected = 0
    while True:
        new = [n for n in grid.get_node_ids() if n not in known and n not in refused]
        if new:
            result = exchange(grid, {n: RecordDict() for n in new}, wire.PARTITION_INFO, timeout_s)
            for node, reason in result.failures.items():
                log(WARNING, "node %d left out: %s", node, reason)
                refused.add(node)
            for node, content in result.replies.items():
                info = content.get(wire.INFO, {})
                missing = [key for key in wire.INFO_METRICS if key not in info]
                if missing:
                    log(WARNING, "node %d left out: its partition info lacks %s", node, missing)
                    refused.add(node)
                    continue
                known[node] = ClientInfo(node, int(info[wire.PARTITION_ID]), int(info[wire.NUM_EXAMPLES]))
                expected = max(expected, int(info[wire.NUM_PARTITIONS]))
        if expected and len(known) >= expected:
            break
        if time.monotonic() > deadline:
            if not known:
                raise RuntimeError(f"no client answered within {timeout_s:g} s: are SuperNodes connected?")
            log(WARNING, "only %d of %d clients connected; training with those", len(known), expected)
            break
        time.sleep(DISCOVERY_POLL_S)
    return sorted(known.values(), key=lambda c: c.partition_id)
