"""The training samples of the node a message runs on: the simulation's share, or a device's own partition.

Flower's simulation runs many virtual clients in a few Ray workers on one machine: they take
their partitions out of the machine-wide data (`node.partitions`), loaded once per worker. A
SuperNode is one device with a ClientApp process per message: it holds only its own partition
(`node.device_partition`), built on its first message and memory-mapped by every later one.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from mpsl_flower import wire
from mpsl_flower.config import RunConfig
from mpsl_flower.node.device_partition import NODE_DATA_DIR, device_partition
from tasks.data import SplitData
from tasks.preprocess import user_path


def node_partition(node_config: Mapping[str, object], config: RunConfig) -> SplitData:
    """This node's training samples, as its node config (`partition-id`, `num-partitions`, `data-dir`) says."""
    for key in (wire.PARTITION_ID, wire.NUM_PARTITIONS):
        if key not in node_config:
            raise ValueError(
                f"node config has no {key!r}: start the SuperNode with "
                f"--node-config '{wire.PARTITION_ID}=<i> {wire.NUM_PARTITIONS}=<n>'"
            )
    partition, num_partitions = int(node_config[wire.PARTITION_ID]), int(node_config[wire.NUM_PARTITIONS])
    if simulated():
        from mpsl_flower.node.partitions import client_partition  # the partitioner and decoders, once per Ray worker

        return client_partition(config, partition, num_partitions)
    own_data_dir = node_config.get(NODE_DATA_DIR)
    return device_partition(config, partition, num_partitions, user_path(own_data_dir) if own_data_dir else None)


def simulated() -> bool:
    """Whether Flower's simulation runs this client: its virtual clients live in Ray actors (a SuperNode's
    ClientApp process never imports Ray)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()
