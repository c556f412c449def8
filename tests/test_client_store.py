"""The node-local store of MPSL client state: revisions, retries, and what a missing file says."""

from __future__ import annotations

import numpy as np
import pytest

from mpsl_flower.config import ConfigError, parse_run_config
from mpsl_flower.node.state_store import (
    ClientStateMissing,
    StaleMessage,
    claim_position,
    load_snapshot,
    load_state,
    new_store_key,
    save_snapshot,
    save_state,
    store_folder,
)


def test_a_revision_reads_back_exactly_and_only_the_previous_one_is_kept(tmp_path):
    key = new_store_key("run")
    for revision in range(1, 5):
        save_state(str(tmp_path), key, revision, {"w": np.full(3, revision, dtype=np.float32)})
    assert sorted(p.name for p in store_folder(str(tmp_path), key).iterdir()) == ["revision-3.npz", "revision-4.npz"]
    np.testing.assert_array_equal(load_state(str(tmp_path), key, 3)["w"], [3, 3, 3])  # a retried message's state
    with pytest.raises(ClientStateMissing, match=r"revision 2 is not readable at .*set client-state-dir to a folder"):
        load_state(str(tmp_path), key, 2)


def test_the_store_folder_must_be_absolute(tmp_path):
    assert parse_run_config({"client-state-dir": str(tmp_path)}).client_state_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="client-state-dir='state' must be an absolute path"):
        parse_run_config({"client-state-dir": "state"})


def test_epoch_snapshots_keep_the_last_two_and_a_missing_one_names_the_fix(tmp_path):
    for epochs_done in (1, 2, 3):
        save_snapshot(str(tmp_path), "run-a", 4, epochs_done, {"w": np.full(2, epochs_done, dtype=np.float32)})
    folder = tmp_path / "run-a" / "partition-4"
    assert sorted(p.name for p in folder.iterdir()) == ["after-epoch-2.npz", "after-epoch-3.npz"]
    np.testing.assert_array_equal(load_snapshot(str(tmp_path), "run-a", 4, 2)["w"], [2, 2])
    with pytest.raises(ClientStateMissing, match=r"snapshot of partition 4 after epoch 1 is not readable.*own"):
        load_snapshot(str(tmp_path), "run-a", 4, 1)
    with pytest.raises(ValueError, match="is not a plain folder name"):
        save_snapshot(str(tmp_path), "../elsewhere", 4, 1, {})


def test_a_message_older_than_one_the_node_handled_is_refused(tmp_path):
    key = new_store_key("run-a")
    claim_position(str(tmp_path), key, (0, 3, 1))
    claim_position(str(tmp_path), key, (0, 3, 1))  # the same message again (a retry) is fine
    with pytest.raises(StaleMessage, match=r"\(0, 3, 0\) arrived after the node handled \(0, 3, 1\)"):
        claim_position(str(tmp_path), key, (0, 3, 0))
    claim_position(str(tmp_path), key, (1, 0, 0))
