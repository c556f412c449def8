"""The node-local store of MPSL client state: revisions, retries, and what a missing file says."""

from __future__ import annotations

import numpy as np
import pytest

from mpsl_flower.client_store import ClientStateMissing, load_state, new_store_key, save_state, store_folder
from mpsl_flower.config import ConfigError, parse_run_config


def test_a_revision_reads_back_exactly_and_only_the_previous_one_is_kept(tmp_path):
    key = new_store_key()
    for revision in range(1, 5):
        save_state(str(tmp_path), key, revision, {"w": np.full(3, revision, dtype=np.float32)})
    assert sorted(p.name for p in store_folder(str(tmp_path), key).iterdir()) == ["revision-3.npz", "revision-4.npz"]
    np.testing.assert_array_equal(load_state(str(tmp_path), key, 3)["w"], [3, 3, 3])  # a retried message's state
    with pytest.raises(ClientStateMissing, match=r"revision 2 is not at .*set client-state-dir to a folder every"):
        load_state(str(tmp_path), key, 2)


def test_the_store_folder_must_be_absolute(tmp_path):
    assert parse_run_config({"client-state-dir": str(tmp_path)}).client_state_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="client-state-dir='state' must be an absolute path"):
        parse_run_config({"client-state-dir": "state"})
