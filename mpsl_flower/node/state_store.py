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

Resume: at the end of every epoch a node also writes a snapshot of its state (weights and Adam
state, `after-epoch-<k>.npz`, the last two kept). A resumed run tells each node the epoch it
restarts from, and a node with no state yet loads that snapshot. The snapshots stay on the
node's disk: the server never holds a client's optimizer state, which (for the head of the
U-shaped mode above all) carries gradient statistics of the client's labels.

Every file of a run lies under `<client-state-dir>/<run key>/` (the run key is the results
folder's name): delete that folder once the run is finished and will not be resumed.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import numpy as np

from tasks.atomic import atomic_file

STORE_FOLDER = "mpsl-flower-client-state"
KEPT_REVISIONS = 2  # this one and the previous one, for a retried message


class ClientStateMissing(RuntimeError):
    """The state file a node's `context.state` names is not in its store."""


class StaleMessage(RuntimeError):
    """The node already handled a later message: this one's context is out of date."""


POSITION_FILE = "position.json"


def new_store_key(run_key: str) -> str:
    """A key no other node, and no other attempt of the run, shares (run ids repeat across SuperLinks)."""
    return f"{check_run_key(run_key)}/{uuid.uuid4().hex}"


def check_run_key(run_key: str) -> str:
    """`run_key`, if it is one plain folder name (it comes from the server, so it is checked)."""
    if not run_key or Path(run_key).name != run_key or run_key in (".", ".."):
        raise ValueError(f"run key {run_key!r} from the server is not a plain folder name")
    return run_key


def store_root(state_dir: str) -> Path:
    return Path(state_dir).expanduser() if state_dir else Path(tempfile.gettempdir()) / STORE_FOLDER


def store_folder(state_dir: str, store_key: str) -> Path:
    return store_root(state_dir) / store_key


def _path(folder: Path, revision: int) -> Path:
    return folder / f"revision-{revision}.npz"


def save_state(state_dir: str, store_key: str, revision: int, arrays: dict[str, np.ndarray]) -> None:
    """Write revision `revision`, then drop all but this one and the previous one."""
    _write_kept(_path(store_folder(state_dir, store_key), revision), arrays, "revision-*.npz", revision)


def load_state(state_dir: str, store_key: str, revision: int) -> dict[str, np.ndarray]:
    path = _path(store_folder(state_dir, store_key), revision)
    fix = "on a multi-machine Ray cluster set client-state-dir to a folder every machine shares"
    return _read(path, f"client state revision {revision}", fix)


def claim_position(state_dir: str, store_key: str, position: tuple[int, ...]) -> None:
    """Record that the node's handling has reached `position` (epoch, step, phase), refusing a message older
    than one it already handled.

    Why: Flower's simulation may run a message whose reply the server stopped waiting for (a client that
    hung past `step-timeout-s`) while the node's next messages run on another actor; when the late one
    ends, Flower writes its out-of-date `context.state` back over the newer one. A handler that raises
    `StaleMessage` writes nothing back, so the node keeps its newer state.
    """
    check_position(state_dir, store_key, position)
    with atomic_file(store_folder(state_dir, store_key) / POSITION_FILE) as partial:
        partial.write_text(json.dumps(list(position)))


def check_position(state_dir: str, store_key: str, position: tuple[int, ...]) -> None:
    """Raise `StaleMessage` when the node has handled a message later than `position`."""
    path = store_folder(state_dir, store_key) / POSITION_FILE
    try:
        reached = tuple(json.loads(path.read_text()))
    except FileNotFoundError:
        return
    if reached > tuple(position):
        raise StaleMessage(
            f"message at (epoch, step, phase) {tuple(position)} arrived after the node handled {reached}: "
            "refused, so its out-of-date state is not kept (it was answered too late, e.g. past step-timeout-s)"
        )


def _snapshot_path(state_dir: str, run_key: str, partition: int, epochs_done: int) -> Path:
    return store_root(state_dir) / check_run_key(run_key) / f"partition-{partition}" / f"after-epoch-{epochs_done}.npz"


def save_snapshot(
    state_dir: str, run_key: str, partition: int, epochs_done: int, arrays: dict[str, np.ndarray]
) -> None:
    """The state of `partition`'s client after `epochs_done` epochs, for a resumed run (the last two kept)."""
    _write_kept(_snapshot_path(state_dir, run_key, partition, epochs_done), arrays, "after-epoch-*.npz", epochs_done)


def latest_snapshot(
    state_dir: str, run_key: str, partition: int, at_most: int
) -> tuple[int, dict[str, np.ndarray]] | None:
    """(epochs, state) of `partition`'s newest snapshot after at most `at_most` epochs, or None."""
    folder = _snapshot_path(state_dir, run_key, partition, at_most).parent
    done = [int(p.stem.rsplit("-", 1)[1]) for p in folder.glob("after-epoch-*.npz")]
    usable = [epochs for epochs in done if epochs <= at_most]
    if not usable:
        return None
    return max(usable), load_snapshot(state_dir, run_key, partition, max(usable))


def load_snapshot(state_dir: str, run_key: str, partition: int, epochs_done: int) -> dict[str, np.ndarray]:
    path = _snapshot_path(state_dir, run_key, partition, epochs_done)
    fix = (
        "a resumed run needs the node's own client-state-dir of the interrupted run, and the node must have "
        "finished that epoch; without it this client cannot rejoin"
    )
    return _read(path, f"the snapshot of partition {partition} after epoch {epochs_done}", fix)


def _write_kept(path: Path, arrays: dict[str, np.ndarray], pattern: str, number: int) -> None:
    """Write `path` atomically (a reader never sees half a file), then drop the files of `pattern` whose
    number (after the last '-') is `KEPT_REVISIONS` or more below `number`."""
    with atomic_file(path, keep_suffix=True) as partial:
        np.savez(partial, **arrays)
    for old in path.parent.glob(pattern):
        if int(old.stem.rsplit("-", 1)[1]) <= number - KEPT_REVISIONS:
            old.unlink(missing_ok=True)


def _read(path: Path, what: str, fix: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as error:  # missing, or a truncated zip
        raise ClientStateMissing(f"{what} is not readable at {path} ({error}); {fix}") from error
