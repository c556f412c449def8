"""Where an MPSL node keeps its client state between messages: on its own disk, not in `context.state`.

Flower ships a node's whole `context.state` with every message (in simulation, to a Ray actor and
back). Client weights and Adam state there made every message of a step carry a few hundred kB
both ways, so the floor of a step grew as soon as training started. Here `context.state` holds
only a small progress record (the revision and a store key); the state itself is one `.npz` file
per revision under `client-state-dir` (default: the system's temp folder), keyed by a random
store key of the run's node.

Guarantees: a fresh process (deployment) or another actor (simulation) of the node loads its
exact state from the file of the revision its `context.state` names; the previous revision is
kept too, so a message that Flower retries with the previous `context.state` still finds its
state. In simulation all actors share the machine's disk; on a multi-machine Ray cluster,
point `client-state-dir` at a folder every machine shares.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import numpy as np

STORE_FOLDER = "mpsl-flower-client-state"
KEPT_REVISIONS = 2  # this one and the previous one, for a retried message


class ClientStateMissing(RuntimeError):
    """The state file a node's `context.state` names is not in its store."""


def new_store_key() -> str:
    """A key no other node or run shares (run ids repeat across SuperLinks)."""
    return uuid.uuid4().hex


def store_folder(state_dir: str, store_key: str) -> Path:
    root = Path(state_dir).expanduser() if state_dir else Path(tempfile.gettempdir()) / STORE_FOLDER
    return root / store_key


def _path(folder: Path, revision: int) -> Path:
    return folder / f"revision-{revision}.npz"


def save_state(state_dir: str, store_key: str, revision: int, arrays: dict[str, np.ndarray]) -> None:
    """Write revision `revision` (atomically: a reader never sees half a file), then drop the old ones."""
    folder = store_folder(state_dir, store_key)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".revision-{revision}.{os.getpid()}.partial.npz"
    np.savez(partial, **arrays)
    os.replace(partial, _path(folder, revision))
    for old in folder.glob("revision-*.npz"):
        if int(old.stem.split("-")[1]) <= revision - KEPT_REVISIONS:
            old.unlink(missing_ok=True)


def load_state(state_dir: str, store_key: str, revision: int) -> dict[str, np.ndarray]:
    path = _path(store_folder(state_dir, store_key), revision)
    try:
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    except OSError as error:
        raise ClientStateMissing(
            f"client state revision {revision} is not at {path} ({error}); on a multi-machine Ray cluster set "
            "client-state-dir to a folder every machine shares"
        ) from error
