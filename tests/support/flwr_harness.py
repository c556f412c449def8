"""Process harness for tests that run the app with a real `flwr run`: a real SuperLink, simulated SuperNodes, Ray.

A test owns everything it starts: its own FLWR_HOME and ports, a SuperLink in its own process
group. The SuperLink's ServerApp runner (flower-superexec) starts the simulation and Ray in a
*separate* session, and they outlive a killed SuperLink, so the teardown kills the whole
process tree, found both by parentage and by a token in the environment, by PID, and fails if
anything is left.

    with running_superlink(tmp_path) as (env, superlink_log):
        run = flwr_run(env, superlink_log, "nr-of-epochs=1 output-dir='...'")  # waits, checks the status
        started = start_flwr_run(env, superlink_log, "...")  # or: returns at once (a `StartedRun`)
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
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mpsl_flower.tools.deployment import (
    DEFAULT_PORT,
    Deployment,
    federation_entry,
    wait_for_superlink,
    write_deployment,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv running pytest: flwr, flower-superlink, flower-superexec
NUM_SUPERNODES = 10
RUN_TIMEOUT_S = 900
TOKEN_VAR = "MPSL_FLWR_RUN_TEST_TOKEN"  # inherited by everything the SuperLink starts, Ray workers included
APP_PARTS = ("pyproject.toml", "mpsl_flower", "strategies", "tasks")  # what the FAB of this app is built from


def free_port() -> int:
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


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as error:
        return f"<{path}: {error}>"


def _wait_healthy(
    port: int, superlink: subprocess.Popen, log_path: Path, timeout_s: float = 60, ca_file: Path | None = None
) -> None:
    """`wait_for_superlink`, with the SuperLink's log in the error."""
    try:
        wait_for_superlink(port, ca_file, timeout_s, superlink)
    except (RuntimeError, TimeoutError) as error:
        raise RuntimeError(f"{error}:\n{tail(log_path)}") from error


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


# ---- SuperLink, Ray cluster ----------------------------------------------------------------


@contextlib.contextmanager
def running_superlink(tmp_path: Path, extra_env: dict | None = None) -> Iterator[tuple[dict, Path]]:
    """A simulation SuperLink on a free port; yields the environment (FLWR_HOME) that points `flwr`
    at it, as federation "test", and the SuperLink's log file."""
    port = free_port()
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


@contextlib.contextmanager
def ray_cluster(num_cpus: int = 4, node_temp_dirs: tuple[Path, ...] = ()) -> Iterator[tuple[str, Path]]:
    """A Ray cluster on loopback (`ray start --head`), as README's 'Beyond one machine' starts it; stopped by the
    PIDs of its processes, which carry a token of their own. With `node_temp_dirs`, one node per folder (the head
    first), each with its own TMPDIR there, as separate machines have."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must stay under 108 bytes
    port, token = free_port(), uuid.uuid4().hex
    head = ["--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false"]
    nodes = [(head, None)]
    if node_temp_dirs:
        nodes = [(head, node_temp_dirs[0])] + [([f"--address=127.0.0.1:{port}"], d) for d in node_temp_dirs[1:]]
    try:
        for options, node_temp in nodes:
            env = {**os.environ, TOKEN_VAR: token}
            if node_temp is not None:
                node_temp.mkdir(parents=True, exist_ok=True)
                env["TMPDIR"] = str(node_temp)
            command = [str(BIN / "ray"), "start", *options, f"--num-cpus={num_cpus}", "--disable-usage-stats"]
            started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
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


# ---- the app -------------------------------------------------------------------------------


def copy_app(dest: Path, clientapp: str | None = None, extra_files: dict[str, Path] | None = None) -> Path:
    """A copy of the app (what its FAB is built from, no caches) in `dest`, to run a modified app.

    `clientapp`: another `module:attribute` for the copy's `[tool.flwr.app.components] clientapp`.
    `extra_files`: name in the copy -> file to copy there (a `*.py`, `*.json`, ... the FAB includes;
    never `test_*.py`, which Flower leaves out of a FAB).
    """
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in APP_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=ignore)
        else:
            shutil.copy2(source, dest / part)
    if clientapp is not None:
        pyproject = (dest / "pyproject.toml").read_text()
        line = re.compile(r'^clientapp = ".*"$', re.MULTILINE)
        assert len(line.findall(pyproject)) == 1, "pyproject.toml: expected one `clientapp = ...` line"
        (dest / "pyproject.toml").write_text(line.sub(f'clientapp = "{clientapp}"', pyproject))
    for name, source in (extra_files or {}).items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name)
    return dest


# ---- flwr run ------------------------------------------------------------------------------


@dataclass
class StartedRun:
    """A `flwr run --stream` in progress: its process, and its output as it arrives, each line with the
    seconds since the start at which it arrived (the output is unbuffered, the stream polled every ~0.5 s)."""

    process: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    lines: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log_path, "w") as log:
            for line in self.process.stdout:
                self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))
                log.write(line)
                log.flush()

    def stream(self) -> str:
        return "".join(line + "\n" for _, line in list(self.lines))

    def run_id(self, timeout_s: float = 120) -> int:
        """The id of the started run, once `flwr run` has printed it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(r"Successfully started run (\d+)", self.stream())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"flwr run printed no run id within {timeout_s} s:\n{self.stream()[-4000:]}")

    def wait(self, timeout_s: float = RUN_TIMEOUT_S) -> int | None:
        """The exit code of `flwr run`, or None when it was still running after `timeout_s` (then killed)."""
        try:
            returncode = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            returncode = None
        self._reader.join(timeout=30)
        return returncode


def start_flwr_run(
    env: dict,
    log_path: Path,
    run_config: str,
    app: Path = REPO,
    num_supernodes: int | None = NUM_SUPERNODES,
) -> StartedRun:
    """Start `flwr run <app> test --stream` on the SuperLink `env` points at; return at once.
    `num_supernodes=None`: a deployment SuperLink, whose SuperNodes are real processes."""
    command = [str(BIN / "flwr"), "run", str(app), "test", "--stream", "--run-config", run_config]
    if num_supernodes is not None:
        command += ["--federation-config", f"num-supernodes={num_supernodes} client-resources-num-cpus=1"]
    process = subprocess.Popen(
        command,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    return StartedRun(process, log_path)


def run_statuses(env: dict, run_id: int | None = None) -> tuple[list[str], str]:
    """(`flwr list` statuses of the SuperLink's runs, or of run `run_id`; the raw listing)."""
    command = [str(BIN / "flwr"), "list", "test", "--format", "json"]
    if run_id is not None:
        command += ["--run-id", str(run_id)]
    listing = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    try:
        statuses = [r["status"] for r in json.loads(listing.stdout)["runs"]]
    except (ValueError, KeyError):
        statuses = []
    return statuses, listing.stdout + listing.stderr


def wait_until_finished(env: dict, run_id: int | None = None, timeout_s: float = 60) -> tuple[list[str], str]:
    """`run_statuses`, polled until every listed run has finished or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses, listing = run_statuses(env, run_id)
        if (statuses and all(s.startswith("finished") for s in statuses)) or time.monotonic() > deadline:
            return statuses, listing
        time.sleep(1)


@dataclass
class FinishedRun:
    stream: str  # what `flwr run --stream` printed: the ServerApp's log
    diagnostics: str  # the stream's and the SuperLink log's tails, for assertion messages
    lines: list[tuple[float, str]]  # the stream's lines, each with the seconds since the start it arrived at
    run_id: int | None


def flwr_run(
    env: dict,
    superlink_log: Path,
    run_config: str,
    status: str = "finished:completed",
    app: Path = REPO,
    num_supernodes: int | None = NUM_SUPERNODES,
) -> FinishedRun:
    """`flwr run` the app (or a copy, `app`) to its end; assert the run ended with `status`."""
    run_log = superlink_log.with_name("flwr-run.log")
    run = start_flwr_run(env, run_log, run_config, app, num_supernodes)
    returncode = run.wait(RUN_TIMEOUT_S)
    stdout = run.stream()
    print(f"\nflwr run ({run_config}) took {time.monotonic() - run.started:.0f} s")

    def diagnostics(extra: str = "") -> str:
        return (
            f"flwr run --stream (exit {returncode}), {run_log}:\n{stdout[-6000:]}\n"
            f"superlink log {superlink_log}:\n{tail(superlink_log)}\n{extra}"
        )

    assert returncode is not None, f"flwr run did not finish within {RUN_TIMEOUT_S} s\n" + diagnostics()
    assert returncode == 0, diagnostics()
    # `flwr run --stream` exits 0 even when the run failed: the status tells.
    # The SuperLink is the test's own, so its runs are the test's runs; narrow to the started one when named.
    started_run = re.search(r"Successfully started run (\d+)", stdout)
    run_id = int(started_run.group(1)) if started_run else None
    statuses, listing = wait_until_finished(env, run_id)
    assert statuses == [status], diagnostics(f"flwr list:\n{listing}")
    return FinishedRun(stdout, diagnostics(), list(run.lines), run_id)


# ---- a secure Deployment Engine federation on loopback ---------------------------------------


@dataclass
class SecureFederation:
    """A deployment SuperLink with TLS and SuperNode authentication, and what a test needs to drive it."""

    deployment: Deployment
    env: dict  # points `flwr` at the SuperLink as federation "test" (TLS, the CA)
    superlink_log: Path
    logs: Path

    def command(self, command: list[str]) -> list[str]:
        """A printed command (`flower-supernode ...`) with its program taken from this test's venv."""
        return [str(BIN / command[0]), *command[1:]]

    def start(self, command: list[str], name: str) -> subprocess.Popen:
        """Start `command` in its own session, logging to `<logs>/<name>.log`; the teardown stops it by PID."""
        with open(self.logs / f"{name}.log", "w") as log:
            return subprocess.Popen(
                self.command(command), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self, name: str) -> str:
        return tail(self.logs / f"{name}.log", 20000)


SERVER_ADDRESS = "127.0.0.2"  # loopback too, but not the address the SuperLink reaches itself at


@contextlib.contextmanager
def secure_federation(tmp_path: Path, devices: int) -> Iterator[SecureFederation]:
    """The README's secure deployment on loopback, by its own commands (`mpsl_flower.tools.deployment`): keys,
    a SuperLink with TLS and SuperNode authentication, every device's key registered with `flwr supernode
    register`, and one SuperNode process per device. Port 9093 as the README says, unless it is taken;
    each SuperNode gets its own Runtime API port, since they share one machine. Devices and `flwr` reach the
    SuperLink at `SERVER_ADDRESS`, not at 127.0.0.1 where its own SuperExec does, as on separate machines."""
    port = DEFAULT_PORT if _port_is_free(DEFAULT_PORT) else free_port()
    deployment = write_deployment(tmp_path / "keys", [SERVER_ADDRESS], devices, port, federation="test")
    flwr_home, logs = tmp_path / "flwr-home", tmp_path / "logs"
    flwr_home.mkdir()
    logs.mkdir()
    (flwr_home / "config.toml").write_text('[superlink]\ndefault = "test"\n\n' + federation_entry(deployment))
    token = uuid.uuid4().hex
    federation = SecureFederation(deployment, _environment(flwr_home, token), logs / "superlink.log", logs)
    superlink = federation.start(deployment.superlink_command(database=tmp_path / "state.db"), "superlink")
    try:
        _wait_healthy(port, superlink, federation.superlink_log, ca_file=deployment.folder / "ca.crt")
        for device in range(devices):
            command = federation.command(deployment.register_command(device))
            registered = subprocess.run(command, env=federation.env, capture_output=True, text=True, timeout=120)
            assert registered.returncode == 0, registered.stdout + registered.stderr
            federation.start(deployment.supernode_command(device, runtime_port=free_port()), f"supernode-{device}")
        yield federation
    finally:
        leftovers = _stop_all(superlink, token)
    assert not leftovers, "processes started by the test survived its teardown:\n" + "\n".join(leftovers)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
