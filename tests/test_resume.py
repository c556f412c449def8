"""A run killed mid-epoch and resumed with `resume-from` ends exactly as if it had never stopped.

Real ClientApp and MPSL strategy over in-process grids: the "killed" run's grid raises in the
middle of an epoch; the resumed run gets fresh node contexts and an empty ClientApp cache, as
new processes would, and only the results folder and each node's client-state folder survive.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.common.config import parse_config_args
from support.inprocess_grid import InProcessGrid

from mpsl_flower import wire
from mpsl_flower.app import client_app as client_module
from mpsl_flower.app import server_app
from mpsl_flower.config import ConfigError, parse_run_config
from mpsl_flower.node import progress as node_progress
from mpsl_flower.runs.folder import RESUME_CONFIG_FILE, RESUME_STATE_FILE
from mpsl_flower.runs.readers import read_metrics
from mpsl_flower.runs.saved_model import load_saved_model

NUM_CLIENTS = 4
KILLED_AT = (1, 3)  # (epoch from 0, step): mid-way through the second epoch
TIMING_KEYS = ("train_wall_s", "eval_s", "client_compute_s", "server_compute_s")


class Killed(BaseException):
    """The ServerApp's process dying: nothing in the app may catch it."""


class KillingGrid(InProcessGrid):
    def push_messages(self, messages):
        messages = list(messages)
        for message in messages:
            step = message.content.config_records.get(wire.STEP)
            if message.metadata.message_type == wire.FORWARD and (step[wire.EPOCH], step[wire.STEP_INDEX]) == KILLED_AT:
                raise Killed
        return super().push_messages(messages)


def _train(run_config: dict, grid: InProcessGrid, label: str):
    node_progress.live_clients.clear()  # a new ClientApp process remembers nothing
    return server_app.train(parse_run_config(run_config), grid, run_label=label)


def _without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in records]


@pytest.fixture
def resumable_config(fast_run_config, tmp_path) -> dict:
    # the rate drops after epoch 1, so a resumed epoch 2 must get its schedule right
    return {**fast_run_config, "nr-of-epochs": 2, "lr-step-size": 1, "client-state-dir": str(tmp_path / "state")}


@pytest.mark.parametrize("label_privacy", ["none", "u-shaped"])
def test_a_run_killed_mid_epoch_and_resumed_ends_exactly_as_an_uninterrupted_one(resumable_config, label_privacy):
    run_config = {**resumable_config, "label-privacy": label_privacy}
    whole_grid = InProcessGrid(client_module.app, NUM_CLIENTS, run_config)
    _, whole = _train(run_config, whole_grid, "whole")  # labels of one length: the run key travels in messages

    with pytest.raises(Killed):
        _train(run_config, KillingGrid(client_module.app, NUM_CLIENTS, run_config), "kill5")
    (killed,) = [f for f in whole.folder.parent.iterdir() if f.name.endswith("-kill5")]
    assert len(read_metrics(killed)) == 1 and (killed / RESUME_STATE_FILE).is_file()

    resumed_config = {**run_config, "resume-from": str(killed)}
    resumed_grid = InProcessGrid(client_module.app, NUM_CLIENTS, resumed_config)
    result, resumed = _train(resumed_config, resumed_grid, "resumed")
    assert resumed.folder == killed  # the same folder goes on

    assert _without_timings(read_metrics(killed)) == _without_timings(read_metrics(whole.folder))
    assert sorted(result.train_metrics_clientapp) == [1, 2]  # the Flower Result holds both epochs
    whole_model, resumed_model = (torch.load(f / "mpsl_model.pt") for f in (whole.folder, killed))
    for half in ("server", "client"):
        for name, tensor in whole_model[half].items():
            assert torch.equal(resumed_model[half][name], tensor), f"{half}.{name}"
    config = parse_run_config(run_config)
    for node in whole_grid.node_ids:  # every client's own weights and Adam state, bit for bit
        expected = node_progress.stored_client_state(whole_grid.contexts[node], config)
        got = node_progress.stored_client_state(resumed_grid.contexts[node], config)
        assert sorted(got) == sorted(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_resume_refuses_what_it_cannot_continue(resumable_config, tmp_path):
    run_config = {**resumable_config, "nr-of-epochs": 1}
    _, results = _train(run_config, InProcessGrid(client_module.app, NUM_CLIENTS, run_config), "one")
    folder = results.folder

    # the folder's resume.toml, read as `flwr run --run-config <file>` reads it, is the run's config
    overrides = parse_config_args([str(folder / RESUME_CONFIG_FILE)])
    assert parse_run_config(overrides) == parse_run_config({**run_config, "resume-from": str(folder)})

    def refused(match: str, **changes) -> None:
        config = {**run_config, "nr-of-epochs": 2, "resume-from": str(folder), **changes}
        with pytest.raises(ConfigError, match=match):
            _train(config, InProcessGrid(client_module.app, NUM_CLIENTS, config), "refused")

    refused(r"has finished 1 of nr-of-epochs=1; to train on, set nr-of-epochs above 1", **{"nr-of-epochs": 1})
    refused(
        r"differs from the interrupted run's \(batch-size: run 400, now 200\).*--run-config .*resume.toml",
        **{"batch-size": 200},
    )
    refused("is not a results folder of mpsl-flower", **{"resume-from": str(tmp_path)})
    with pytest.raises(ConfigError, match="resume-from='state' must be an absolute path"):
        parse_run_config({"resume-from": "state"})
    with pytest.raises(ConfigError, match="resume-from continues MPSL runs only"):
        parse_run_config({"method": "fedavg", "resume-from": str(folder)})
    state = (folder / RESUME_STATE_FILE).read_bytes()
    (folder / RESUME_STATE_FILE).write_bytes(state[: len(state) // 2])
    refused(r"resume_state.pt is not a readable resume state \(truncated, or not written by mpsl-flower\)")


def test_a_saved_model_loads_back_and_a_foreign_or_damaged_one_fails_clearly(fast_run_config, tmp_path):
    _, results = _train(fast_run_config, InProcessGrid(client_module.app, NUM_CLIENTS, fast_run_config), "saved")
    model, epoch = load_saved_model(results.folder)
    saved = torch.load(results.model_path)
    assert epoch == 1 and all(torch.equal(model.server.state_dict()[k], v) for k, v in saved["server"].items())
    assert load_saved_model(results.model_path, parse_run_config(fast_run_config))[1] == 1

    other = parse_run_config({**fast_run_config, "encoder-size": "vit-ti16"})
    with pytest.raises(ConfigError, match=r"saved by a run with another model: encoder-size='tiny-default'"):
        load_saved_model(results.folder, other)
    stripped = {k: v for k, v in saved.items() if k != "config"}  # a file without its config, e.g. copied alone
    torch.save(stripped, tmp_path / "alone.pt")
    with pytest.raises(
        ConfigError, match=r"client.image.cls_token has shape \(96,\), this model.s is \(192,\).*another encoder size"
    ):
        load_saved_model(tmp_path / "alone.pt", other)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(results.model_path.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=r"cut.pt is not a readable saved model \(truncated"):
        load_saved_model(cut)
    (tmp_path / "notes.pt").write_text(json.dumps({"epoch": 1}))
    with pytest.raises(ConfigError, match="notes.pt is not a readable saved model"):
        load_saved_model(tmp_path / "notes.pt")
