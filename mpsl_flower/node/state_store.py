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

Where the state is: a node's message that runs where its store is not (another machine of a Ray
cluster, a folder emptied mid-run) is refused (`ClientStateElsewhere`, `check_store_here`) before
it reads or writes anything, never started again from scratch. Each store root holds a `store-id`
file, a random id written once (`store_id`), so that a server can tell whether the machines of a
Ray cluster see one folder or several (`store_location`).

Resume: at the end of every epoch a node also writes a snapshot of its state (weights and Adam
state, `after-epoch-<k>.npz`, the last two kept). A resumed run tells each node the epoch it
restarts from, and a node with no state yet loads that snapshot. The snapshots stay on the
node's disk: the server never holds a client's optimizer state, which (for the head of the
U-shaped mode above all) carries gradient statistics of the client's labels.

Every file of a run lies under `<client-state-dir>/<run key>/` (the run key is the results
folder's name): delete that folder once the run is finished and will not be resumed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import uuid
from pathlib import Path

import numpy as np

from tasks.atomic import atomic_file

STORE_FOLDER = "mpsl-flower-client-state"
KEPT_REVISIONS = 2  # this one and the previous one, for a retried message


class ClientStateMissing(RuntimeError):
    """The state file a node's `context.state` names is not in its store."""


class ClientStateElsewhere(ClientStateMissing):
    """The node's store is not in this process's `client-state-dir`: its earlier messages ran elsewhere."""


class StaleMessage(RuntimeError):
    """The node already handled a later message: this one's context is out of date."""


POSITION_FILE = "position.json"
STORE_ID_FILE = "store-id"
SHARED_FOLDER_FIX = (
    "on a Ray cluster of several machines set client-state-dir to a folder every machine shares "
    "(e.g. an NFS mount at the same path)"
)


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
    return _read(path, f"client state revision {revision}", SHARED_FOLDER_FIX)


def check_store_here(state_dir: str, store_key: str, last_position: tuple[int, ...]) -> None:
    """Raise `ClientStateElsewhere` unless this `client-state-dir` holds the node's store as its last message
    (at `last_position`, from its `context.state`) left it.

    Every message records its position in the store (`claim_position`), so the store that handled the
    node's last message has reached at least `last_position` (later: a retry, or a message refused as
    stale). A store that has not is another one: another machine's folder, or one emptied since.
    """
    reached = _reached(state_dir, store_key)
    if reached is None or reached < tuple(last_position):
        seen = "has no record of this node" if reached is None else f"last saw this node at {reached}"
        raise ClientStateElsewhere(
            f"this node's client state is not in this client-state-dir: {store_folder(state_dir, store_key)} on "
            f"host {socket.gethostname()} {seen}, but its last message (epoch, step, phase) {tuple(last_position)} "
            f"ran where a folder held it (another machine's, or this one before it was emptied); {SHARED_FOLDER_FIX}"
        )


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
    reached = _reached(state_dir, store_key)
    if reached is not None and reached > tuple(position):
        raise StaleMessage(
            f"message at (epoch, step, phase) {tuple(position)} arrived after the node handled {reached}: "
            "refused, so its out-of-date state is not kept (it was answered too late, e.g. past step-timeout-s)"
        )


def _reached(state_dir: str, store_key: str) -> tuple[int, ...] | None:
    """The position of the latest message this store handled for the node, or None (none here)."""
    try:
        return tuple(json.loads((store_folder(state_dir, store_key) / POSITION_FILE).read_text()))
    except FileNotFoundError:
        return None


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


def store_id(state_dir: str) -> str:
    """The random id of this store root, written once by the first process that asks: a hard link publishes it
    complete, and fails for all but one of the processes (of one machine or of several sharing the folder)
    that write theirs at the same time."""
    path = store_root(state_dir) / STORE_ID_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        mine = path.with_name(f".{STORE_ID_FILE}.{uuid.uuid4().hex}")
        try:
            mine.write_text(uuid.uuid4().hex)
            with contextlib.suppress(FileExistsError):
                os.link(mine, path)
        finally:
            mine.unlink(missing_ok=True)
    return path.read_text().strip()


def store_location(state_dir: str) -> tuple[str, str, str]:
    """(store id, host name, store root) of `client-state-dir` as this process sees it."""
    return store_id(state_dir), socket.gethostname(), str(store_root(state_dir))


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
