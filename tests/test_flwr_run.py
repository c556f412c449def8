"""One real `flwr run` of the default app: a real SuperLink, 10 simulated SuperNodes, Ray.

The test owns everything it starts: its own FLWR_HOME and ports, a SuperLink in its own
process group, killed by PID at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from mpsl_flower.results import read_metrics
from tasks.registry import load_task_data

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NUM_SUPERNODES = 10
MPSL_RUN_CONFIG = "nr-of-epochs=3 batch-size=100"  # 10 samples per client per step


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(flwr_home: Path) -> dict:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the SuperLink spawns flower-superexec
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }


def _wait_healthy(port: int, superlink: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if superlink.poll() is not None:
            raise RuntimeError(f"SuperLink exited with {superlink.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"SuperLink on port {port} not healthy within {timeout_s} s")


@pytest.fixture
def superlink(tmp_path):
    """A simulation SuperLink on a free port, and the FLWR_HOME that points `flwr` at it."""
    port = _free_port()
    flwr_home = tmp_path / "flwr-home"
    flwr_home.mkdir()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = _environment(flwr_home)
    log_path = tmp_path / "superlink.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port),
             "--database", str(tmp_path / "state.db")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_healthy(port, process)
        yield env, log_path
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group of `process`, SIGKILL it if it lingers."""
    for sig, grace_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace_s)
            break
        except subprocess.TimeoutExpired:
            continue


def _flwr_run(env: dict, superlink_log: Path, run_config: str) -> str:
    """`flwr run` the app; assert the run completed; return diagnostics for later asserts."""
    run = subprocess.run(
        [str(BIN / "flwr"), "run", str(REPO), "test", "--stream",
         "--federation-config", f"num-supernodes={NUM_SUPERNODES} client-resources-num-cpus=1",
         "--run-config", run_config],
        env=env, capture_output=True, text=True, timeout=900,
    )
    diagnostics = f"flwr run:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}\nsuperlink:\n{superlink_log.read_text()[-4000:]}"
    assert run.returncode == 0, diagnostics
    listing = subprocess.run([str(BIN / "flwr"), "list", "test", "--format", "json"], env=env, capture_output=True, text=True, timeout=60)
    statuses = [r["status"] for r in json.loads(listing.stdout)["runs"]]
    assert statuses and set(statuses) == {"finished:completed"}, diagnostics + listing.stdout
    return diagnostics


@pytest.mark.integration
def test_flwr_run_trains_mpsl_to_well_above_chance(superlink, tmp_path):
    env, superlink_log = superlink
    output_dir = tmp_path / "results"
    diagnostics = _flwr_run(env, superlink_log, f"{MPSL_RUN_CONFIG} output-dir='{output_dir}'")
    (folder,) = output_dir.iterdir()
    records = read_metrics(folder)
    assert [r["epoch"] for r in records] == [1, 2, 3], diagnostics
    assert json.loads((folder / "run_info.json").read_text())["num_clients"] == NUM_SUPERNODES
    assert (folder / "mpsl_model.pt").is_file()
    test_labels = load_task_data("shapes-qa", 2024).test.labels.tolist()
    chance = Counter(test_labels).most_common(1)[0][1] / len(test_labels)
    assert records[-1]["test_accuracy"] >= chance + 0.15, (records[-1], chance)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["fedavg", "fedclip", "centralized"])
def test_flwr_run_trains_each_baseline(superlink, tmp_path, method):
    env, superlink_log = superlink
    output_dir = tmp_path / "results"
    diagnostics = _flwr_run(env, superlink_log, f"method='{method}' nr-of-epochs=1 batch-size=100 output-dir='{output_dir}'")
    (folder,) = output_dir.iterdir()
    (record,) = read_metrics(folder)
    assert json.loads((folder / "config.json").read_text())["method"] == method
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["train_loss"] > 0, diagnostics
