"""Find the connected clients: node id, data partition, training-set size and device of each."""

from __future__ import annotations

import time
from dataclasses import dataclass
from logging import INFO, WARNING

from flwr.app import RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from mpsl_flower import wire
from mpsl_flower.config import ConfigError
from strategies.exchange import NO_REPLY, exchange

DISCOVERY_POLL_S = 0.5


@dataclass(frozen=True)
class ClientInfo:
    """A connected client: its node, its data partition, how many samples it holds and the device it computes
    on ("" when its reply does not say)."""

    node_id: int
    partition_id: int
    num_examples: int
    device: str = ""


def discover_clients(grid: Grid, timeout_s: float, wait_s: float | None = None) -> list[ClientInfo]:
    """Ask every node for its partition; wait until all `num-partitions` have answered, or `wait_s` has passed.

    A node that does not answer within `timeout_s` (one query's wait) is asked again while `wait_s`
    (default: `timeout_s`) lasts: a device may still be starting, or building its data cache, and
    must not be left out of the whole run for that. Only a node that answers with an error or a
    malformed reply is left out; when every node there is left out for one same reason, the run stops at
    once with it. Progress is logged after every round that leaves nodes waiting.
    A node that cannot compute on the `device` asked for stops the run (`ConfigError`, its reason).
    """
    started = time.monotonic()
    deadline = started + (timeout_s if wait_s is None else max(wait_s, timeout_s))
    known: dict[int, ClientInfo] = {}
    refused: dict[int, str] = {}  # node -> why it was left out
    expected = 0
    while True:
        asked = [n for n in grid.get_node_ids() if n not in known and n not in refused]
        if asked:
            result = exchange(grid, {n: RecordDict() for n in asked}, wire.PARTITION_INFO, timeout_s)
            for node, reason in result.failures.items():
                if not reason.startswith(NO_REPLY):
                    log(WARNING, "node %d left out: %s", node, reason)
                    refused[node] = reason
            for node, content in result.replies.items():
                info = content.get(wire.INFO, {})
                missing = [key for key in wire.INFO_METRICS if key not in info]
                if missing:
                    refused[node] = f"its partition info lacks {missing}"
                    log(WARNING, "node %d left out: %s", node, refused[node])
                    continue
                partition, facts = int(info[wire.PARTITION_ID]), content.get(wire.NODE, {})
                if wire.DEVICE_PROBLEM in facts:
                    raise ConfigError(f"partition {partition}: {facts[wire.DEVICE_PROBLEM]}")
                device = str(facts.get(wire.CLIENT_DEVICE, ""))
                known[node] = ClientInfo(node, partition, int(info[wire.NUM_EXAMPLES]), device)
                expected = max(expected, int(info[wire.NUM_PARTITIONS]))
        if expected and len(known) >= expected:
            break
        if not known and _all_refused_alike(grid, refused):
            raise RuntimeError(
                f"no client could take part: all {len(refused)} nodes answered with the same error: "
                f"{next(iter(refused.values()))}"
            )
        if time.monotonic() > deadline:
            if not known and refused:
                raise RuntimeError(
                    f"no client could take part: {len(refused)} nodes answered with an error, the first: "
                    f"{next(iter(refused.values()))}"
                )
            if not known:
                raise RuntimeError(
                    f"no client answered within {deadline - started:.0f} s: are SuperNodes connected? "
                    "(discovery-timeout-s sets how long to wait)"
                )
            log(WARNING, "only %d of %d clients connected; training with those", len(known), expected)
            break
        if asked:
            waiting = len([n for n in asked if n not in known and n not in refused])
            log(
                INFO,
                "waiting for clients: %d answered, %d still starting, %.0f s left",
                len(known),
                waiting,
                max(0.0, deadline - time.monotonic()),
            )
        time.sleep(DISCOVERY_POLL_S)
    return sorted(known.values(), key=lambda c: c.partition_id)


def _all_refused_alike(grid: Grid, refused: dict[int, str]) -> bool:
    """Every node there is refused, for one reason: a problem of the run's config that waiting cannot mend
    (a partition that cannot be drawn, a missing dataset), so the run stops now instead of at the deadline."""
    return bool(refused) and set(grid.get_node_ids()) <= set(refused) and len(set(refused.values())) == 1
