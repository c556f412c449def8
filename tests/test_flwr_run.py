"""One real `flwr run` of the default app: a real SuperLink, 10 simulated SuperNodes, Ray.

The test owns everything it starts: its own FLWR_HOME and ports, a SuperLink in its own
process group. The SuperLink's ServerApp runner (flower-superexec) starts the simulation and
Ray in a *separate* session, and they outlive a killed SuperLink, so the teardown kills the
whole process tree, found both by parentage and by a token in the environment, by PID, and
fails if anything is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mpsl_flower.results import read_metrics
from tasks.registry import load_task_data

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv running pytest: flwr, flower-superlink, flower-superexec
NUM_SUPERNODES = 10
MPSL_RUN_CONFIG = "nr-of-epochs=3 batch-size=250"  # 25 samples per client per step
SEED = 2024  # passed as random-seed; the chance level is computed for the same seed
MARGIN_OVER_CHANCE = 0.15
RUN_TIMEOUT_S = 900
TOKEN_VAR = "MPSL_FLWR_RUN_TEST_TOKEN"  # inherited by everything the SuperLink starts, Ray workers included


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(flwr_home: Path, token: str) -> dict:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the SuperLink spawns flower-superexec from PATH
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        TOKEN_VAR: token,
    }


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as error:
        return f"<{path}: {error}>"


def _wait_healthy(port: int, superlink: subprocess.Popen, log_path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if superlink.poll() is not None:
            raise RuntimeError(f"SuperLink exited with {superlink.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"SuperLink on port {port} not healthy within {timeout_s} s:\n{_tail(log_path)}")


# ---- process cleanup (Linux /proc) ---------------------------------------------------------


def _live_pids() -> list[int]:
    proc = Path("/proc")
    return [int(p.name) for p in proc.iterdir() if p.name.isdigit()] if proc.is_dir() else []


def _parent_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in _live_pids():
        info = _parent_and_state(pid)
        if info:
            children.setdefault(info[0], []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _tagged(token: str) -> set[int]:
    """Live (non-zombie) processes whose environment carries this test's token."""
    marker = f"{TOKEN_VAR}={token}".encode()
    found = set()
    for pid in _live_pids():
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        info = _parent_and_state(pid)
        if marker in environ.split(b"\0") and info and info[1] != "Z":
            found.add(pid)
    return found


def _signal_all(pids: set[int], sig: int) -> None:
    own_group = os.getpgrp()
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    for group in groups - {own_group}:  # `flwr run` shares pytest's group: never signal that one
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass


def _stop_all(superlink: subprocess.Popen, token: str) -> list[str]:
    """Kill the SuperLink and everything it started; return what survived (should be nothing)."""
    for sig, grace_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        pids = {superlink.pid} | _descendants(superlink.pid) | _tagged(token)
        _signal_all(pids, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if superlink.poll() is not None and not _tagged(token):
                return []
            time.sleep(0.25)
    superlink.poll()
    return [f"{pid}: {_command_line(pid)}" for pid in sorted(_tagged(token))]


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:150].decode(errors="replace")
    except OSError:
        return "?"


@contextlib.contextmanager
def _running_superlink(tmp_path: Path, extra_env: dict | None = None) -> Iterator[tuple[dict, Path]]:
    """A simulation SuperLink on a free port, and the environment (FLWR_HOME) that points `flwr` at it."""
    port = _free_port()
    flwr_home = tmp_path / "flwr-home"
    flwr_home.mkdir()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    token = uuid.uuid4().hex
    env = {**_environment(flwr_home, token), **(extra_env or {})}
    log_path = tmp_path / "superlink.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--simulation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--database",
                str(tmp_path / "state.db"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(port, process, log_path)
        yield env, log_path
    finally:
        leftovers = _stop_all(process, token)
    assert not leftovers, "processes started by the test survived its teardown:\n" + "\n".join(leftovers)


@pytest.fixture
def superlink(tmp_path):
    with _running_superlink(tmp_path) as started:
        yield started


@contextlib.contextmanager
def _ray_cluster() -> Iterator[tuple[str, Path]]:
    """A one-node Ray cluster on loopback (`ray start --head`), as README's 'Beyond one machine' starts it;
    stopped by the PIDs of its processes, which carry a token of their own."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must stay under 108 bytes
    port, token = _free_port(), uuid.uuid4().hex
    command = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=4", f"--temp-dir={temp}"]
    command += ["--include-dashboard=false", "--disable-usage-stats"]
    started = subprocess.run(command, env={**os.environ, TOKEN_VAR: token}, capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"127.0.0.1:{port}", temp
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _signal_all(_tagged(token), sig)
            deadline = time.monotonic() + 10
            while _tagged(token) and time.monotonic() < deadline:
                time.sleep(0.25)
        leftovers = [f"{pid}: {_command_line(pid)}" for pid in sorted(_tagged(token))]
        shutil.rmtree(temp, ignore_errors=True)
        assert not leftovers, "Ray cluster processes survived:\n" + "\n".join(leftovers)


# ---- flwr run ------------------------------------------------------------------------------


def _flwr_run(env: dict, superlink_log: Path, run_config: str, status: str = "finished:completed") -> tuple[str, str]:
    """`flwr run` the app; assert the run ended with `status`; return its stream and diagnostics."""
    command = [
        str(BIN / "flwr"),
        "run",
        str(REPO),
        "test",
        "--stream",
        "--federation-config",
        f"num-supernodes={NUM_SUPERNODES} client-resources-num-cpus=1",
        "--run-config",
        run_config,
    ]
    run_log = superlink_log.with_name("flwr-run.log")
    started = time.monotonic()
    with open(run_log, "w") as log:
        try:
            returncode = subprocess.run(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S
            ).returncode
        except subprocess.TimeoutExpired:
            returncode = None
    stdout = run_log.read_text(errors="replace")
    print(f"\nflwr run ({run_config}) took {time.monotonic() - started:.0f} s")

    def diagnostics(extra: str = "") -> str:
        return (
            f"flwr run --stream (exit {returncode}), {run_log}:\n{stdout[-6000:]}\n"
            f"superlink log {superlink_log}:\n{_tail(superlink_log)}\n{extra}"
        )

    assert returncode is not None, f"flwr run did not finish within {RUN_TIMEOUT_S} s\n" + diagnostics()
    assert returncode == 0, diagnostics()
    # `flwr run --stream` exits 0 even when the run failed: the status tells.
    # The SuperLink is this test's own, so its runs are this test's runs; narrow to the started one when named.
    started_run = re.search(r"Successfully started run (\d+)", stdout)
    run_id = ["--run-id", started_run.group(1)] if started_run else []
    list_command = [str(BIN / "flwr"), "list", "test", *run_id, "--format", "json"]
    deadline = time.monotonic() + 60
    while True:
        listing = subprocess.run(list_command, env=env, capture_output=True, text=True, timeout=60)
        try:
            statuses = [r["status"] for r in json.loads(listing.stdout)["runs"]]
        except (ValueError, KeyError):
            statuses = []
        if (statuses and all(s.startswith("finished") for s in statuses)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert statuses == [status], diagnostics(f"flwr list:\n{listing.stdout}\n{listing.stderr}")
    return stdout, diagnostics()


def _chance(seed: int = SEED) -> float:
    """Accuracy of always predicting the most frequent test label."""
    labels = load_task_data("shapes-qa", seed).test.labels.tolist()
    return Counter(labels).most_common(1)[0][1] / len(labels)


@pytest.mark.integration
def test_flwr_run_trains_mpsl_to_well_above_chance(superlink, tmp_path):
    env, superlink_log = superlink
    output_dir = tmp_path / "results"
    _, diagnostics = _flwr_run(env, superlink_log, f"{MPSL_RUN_CONFIG} random-seed={SEED} output-dir='{output_dir}'")
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
    stream, diagnostics = _flwr_run(
        env, superlink_log, f"method='{method}' nr-of-epochs=1 batch-size=100 output-dir='{output_dir}'"
    )
    (folder,) = output_dir.iterdir()
    (record,) = read_metrics(folder)
    assert json.loads((folder / "config.json").read_text())["method"] == method
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["train_loss"] > 0, diagnostics
    assert f"[{method}] epoch 1/1: train loss" in stream, diagnostics  # our per-epoch line reaches the stream


@pytest.mark.integration
def test_a_bad_run_config_value_fails_the_run_with_one_clean_line(superlink, tmp_path):
    env, superlink_log = superlink
    stream, diagnostics = _flwr_run(env, superlink_log, f"dataset='mnist' output-dir='{tmp_path}'", "finished:failed")
    errors = [line for line in stream.splitlines() if "dataset='mnist' is not supported" in line]
    assert len(errors) == 1 and "allowed values: shapes-qa" in errors[0], diagnostics
    assert "Traceback" not in stream, diagnostics


@pytest.mark.integration
def test_flwr_run_on_an_existing_ray_cluster(tmp_path):
    """The SuperLink started with RAY_ADDRESS: the simulation joins that cluster instead of starting its own."""
    with _ray_cluster() as (address, ray_temp):
        with _running_superlink(tmp_path, {"RAY_ADDRESS": address}) as (env, superlink_log):
            output_dir = tmp_path / "results"
            _, diagnostics = _flwr_run(env, superlink_log, f"nr-of-epochs=1 batch-size=100 output-dir='{output_dir}'")
            (folder,) = output_dir.iterdir()
            assert [r["epoch"] for r in read_metrics(folder)] == [1], diagnostics
        drivers = list(ray_temp.glob("session_*/logs/python-core-driver-*"))
        assert drivers, "the simulation did not connect to the cluster: " + str(
            sorted(ray_temp.glob("session_*/logs/*"))
        )
