"""MPSL's server half of a resumable run: what it saves after each epoch, and how it loads that back.

Each client's state (weights, Adam moments) stays on its own node as a snapshot
(`node.state_store`); the server keeps only its own weights, its Adam state, the run key that
names the nodes' snapshots, and the number of clients (a resumed run needs the same ones).
"""

from __future__ import annotations

import torch

from mpsl_flower.config import ConfigError
from mpsl_flower.models.trainable import load_trainable, trainable_arrays
from mpsl_flower.split.server_side import ServerSide


def resume_state(server: ServerSide, run_key: str, num_clients: int) -> dict:
    """What the server needs to continue after this epoch (`RunResults.log_epoch` adds the records)."""
    return {
        "method": "mpsl",
        "run_key": run_key,
        "num_clients": num_clients,
        "server": {k: torch.from_numpy(v) for k, v in trainable_arrays(server.model).items()},
        "optimizer": server.optimizer.state_dict(),
    }


def restore(server: ServerSide, state: dict) -> tuple[str, int]:
    """Load the interrupted run's server weights and Adam state; returns its run key and finished epochs."""
    try:
        load_trainable(server.model, {k: v.numpy() for k, v in state["server"].items()})
        server.optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, RuntimeError) as error:
        raise ConfigError(f"resume-from: the resume state does not fit this run's server model: {error}") from error
    return state["run_key"], int(state["epoch"])
