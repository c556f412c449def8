"""Real `flwr run`s of the default app: a real SuperLink, 10 simulated SuperNodes, Ray.

The process harness (own FLWR_HOME and ports, teardown of every process by PID) is in
`support/flwr_harness.py`.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import torch
from support.flwr_harness import NUM_SUPERNODES, flwr_run, ray_cluster, running_superlink, start_flwr_run

from mpsl_flower.runs.folder import RESUME_CONFIG_FILE
from mpsl_flower.runs.readers import read_metrics
from tasks.registry import load_task_data

MPSL_RUN_CONFIG = "nr-of-epochs=3 batch-size=250"  # 25 samples per client per step
SEED = 2024  # passed as random-seed; the chance level is computed for the same seed
MARGIN_OVER_CHANCE = 0.15


@pytest.fixture
def superlink(tmp_path):
    with running_superlink(tmp_path) as started:
        yield started


def _chance(seed: int = SEED) -> float:
    """Accuracy of always predicting the most frequent test label."""
    labels = load_task_data("shapes-qa", seed).test.labels.tolist()
    return Counter(labels).most_common(1)[0][1] / len(labels)


@pytest.mark.integration
def test_flwr_run_trains_mpsl_to_well_above_chance(superlink, tmp_path):
    env, superlink_log = superlink
    output_dir = tmp_path / "results"
    run = flwr_run(env, superlink_log, f"{MPSL_RUN_CONFIG} random-seed={SEED} output-dir='{output_dir}'")
    diagnostics = run.diagnostics
    folders = list(output_dir.glob("mpsl_model-*"))
    assert len(folders) == 1, (sorted(output_dir.iterdir()), diagnostics)
    (folder,) = folders
    records = read_metrics(folder)
    assert [r["epoch"] for r in records] == [1, 2, 3], diagnostics
    config = json.loads((folder / "config.json").read_text())
    assert (config["method"], config["batch-size"], config["nr-of-epochs"]) == ("mpsl", 250, 3)
    assert config["output-dir"] == str(output_dir)
    run_info = json.loads((folder / "run_info.json").read_text())
    assert run_info["num_clients"] == NUM_SUPERNODES, run_info
    model = torch.load(folder / "mpsl_model.pt", map_location="cpu")
    assert model["epoch"] == 3 and model["server"] and model["client"], sorted(model)
    accuracies = [round(r["test_accuracy"], 3) for r in records]
    chance = _chance()
    print(f"test accuracy per epoch {accuracies}; chance (most frequent label) {chance:.3f}")
    assert records[-1]["test_accuracy"] >= chance + MARGIN_OVER_CHANCE, (accuracies, chance, diagnostics)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["fedavg", "fedclip", "centralized"])
def test_flwr_run_trains_each_baseline(superlink, tmp_path, method):
    env, superlink_log = superlink
    output_dir = tmp_path / "results"
    run = flwr_run(env, superlink_log, f"method='{method}' nr-of-epochs=1 batch-size=100 output-dir='{output_dir}'")
    stream, diagnostics = run.stream, run.diagnostics
    (folder,) = output_dir.iterdir()
    (record,) = read_metrics(folder)
    assert json.loads((folder / "config.json").read_text())["method"] == method
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["train_loss"] > 0, diagnostics
    assert f"[{method}] epoch 1/1: train loss" in stream, diagnostics  # our per-epoch line reaches the stream


@pytest.mark.integration
def test_a_bad_run_config_value_fails_the_run_with_one_clean_line(superlink, tmp_path):
    env, superlink_log = superlink
    run = flwr_run(env, superlink_log, f"dataset='mnist' output-dir='{tmp_path}'", "finished:failed")
    stream, diagnostics = run.stream, run.diagnostics
    errors = [line for line in stream.splitlines() if "dataset='mnist' is not supported" in line]
    assert len(errors) == 1 and "allowed values: shapes-qa" in errors[0], diagnostics
    assert "Traceback" not in stream, diagnostics


@pytest.mark.integration
def test_flwr_run_on_an_existing_ray_cluster(tmp_path):
    """The SuperLink started with RAY_ADDRESS: the simulation joins that cluster instead of starting its own."""
    with ray_cluster() as (address, ray_temp):
        with running_superlink(tmp_path, {"RAY_ADDRESS": address}) as (env, superlink_log):
            output_dir = tmp_path / "results"
            run = flwr_run(env, superlink_log, f"nr-of-epochs=1 batch-size=100 output-dir='{output_dir}'")
            diagnostics = run.diagnostics
            (folder,) = output_dir.iterdir()
            assert [r["epoch"] for r in read_metrics(folder)] == [1], diagnostics
        drivers = list(ray_temp.glob("session_*/logs/python-core-driver-*"))
        assert drivers, "the simulation did not connect to the cluster: " + str(
            sorted(ray_temp.glob("session_*/logs/*"))
        )


@pytest.mark.integration
def test_a_run_whose_superlink_is_killed_mid_epoch_resumes_with_one_command(tmp_path):
    """Kill the SuperLink (and all it started, by PID) during epoch 2, start a new one, and continue the run
    with `flwr run . <federation> --run-config <results folder>/resume.toml`, as the README says."""
    output_dir, state_dir = tmp_path / "results", tmp_path / "client-state"
    run_config = f"nr-of-epochs=2 batch-size=250 output-dir='{output_dir}' client-state-dir='{state_dir}'"
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    with running_superlink(tmp_path / "first") as (env, superlink_log):
        run = start_flwr_run(env, superlink_log.with_name("flwr-run.log"), run_config)
        deadline = time.monotonic() + 600
        while not any("[MPSL] epoch 2: step" in line for _, line in list(run.lines)):
            assert time.monotonic() < deadline and run.process.poll() is None, run.stream()[-4000:]
            time.sleep(0.5)
    run.wait(60)  # leaving the block killed the SuperLink and everything it started, mid-epoch 2
    (folder,) = output_dir.iterdir()
    assert [r["epoch"] for r in read_metrics(folder)] == [1], run.stream()[-4000:]

    with running_superlink(tmp_path / "second") as (env, superlink_log):
        resumed = flwr_run(env, superlink_log, str(folder / RESUME_CONFIG_FILE))
    assert f"resuming {folder} after epoch 1" in resumed.stream, resumed.diagnostics
    records = read_metrics(folder)
    assert [r["epoch"] for r in records] == [1, 2], resumed.diagnostics
    assert records[1]["clients_aggregated"] == NUM_SUPERNODES and records[1]["dropped_client_steps"] == 0
    assert torch.load(folder / "mpsl_model.pt", map_location="cpu")["epoch"] == 2
