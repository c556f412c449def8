"""What an MPSL step costs on the Deployment Engine, against Flower's own floor on the same nodes.

    python bench/bench_deployment.py [--devices 3] [--batch-size 150]

Starts the README's secure federation on loopback (`mpsl_flower.tools.deployment`: a SuperLink with TLS
and SuperNode authentication, one SuperNode process per device), then `flwr run`s a copy of the
app whose ServerApp is `bench/deployment_serverapp.py`: on the same nodes of the same run it
times Flower's floor (two round trips of empty `query.ping` messages) and then MPSL steps on the
embedded task. Prints the floor, the step, their ratio, and where a step's time goes: the
server's compute, the clients' handlers (from entry to reply), and the rest (Flower's message
path, including the fresh ClientApp process every message starts in deployment, and its
imports); the import times of Flower's ClientApp module and of ours are measured apart.
Everything started is stopped at the end, found by a token in its environment. Figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from mpsl_flower.tools.deployment import federation_entry, wait_for_superlink, write_deployment

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
APP_PARTS = ("pyproject.toml", "mpsl_flower", "strategies", "tasks")
TOKEN_VAR = "MPSL_BENCH_DEPLOYMENT_TOKEN"  # inherited by every process the federation starts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_app(folder: Path) -> Path:
    """A copy of the app whose ServerApp is the bench's."""
    folder.mkdir()
    for part in APP_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / part)
    shutil.copy2(REPO / "bench" / "deployment_serverapp.py", folder / "deployment_serverapp.py")
    pyproject = folder / "pyproject.toml"
    text = re.sub(r'^serverapp = ".*"$', 'serverapp = "deployment_serverapp:app"', pyproject.read_text(), flags=re.M)
    pyproject.write_text(text)
    return folder


def import_seconds(module: str, repeats: int = 3) -> float:
    """Median wall time of a fresh Python process that imports `module` (what each ClientApp process pays)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=REPO)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_bench(devices: int, batch_size: int, work: Path) -> dict:
    deployment = write_deployment(work / "keys", ["127.0.0.1"], devices, free_port(), federation="bench")
    home = work / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "bench"\n\n' + federation_entry(deployment))
    out = work / "figures.json"
    token = uuid.uuid4().hex
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "MPSL_BENCH_OUT": str(out),
        TOKEN_VAR: token,
    }

    def start(command: list[str], name: str) -> subprocess.Popen:
        with open(work / f"{name}.log", "w") as log:
            return subprocess.Popen(
                [str(BIN / command[0]), *command[1:]],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    try:
        start(deployment.superlink_command("127.0.0.1", work / "state.db"), "superlink")
        wait_for_superlink(deployment.port, deployment.folder / "ca.crt")
        for device in range(devices):
            register = [str(BIN / "flwr"), *deployment.register_command(device)[1:]]
            subprocess.run(register, env=env, check=True, capture_output=True, timeout=120)
            start(deployment.supernode_command(device, runtime_port=free_port()), f"supernode-{device}")
        app = bench_app(work / "app")
        run_config = f"batch-size={batch_size} dataset-split-type='iid' output-dir='{work / 'results'}'"
        command = [str(BIN / "flwr"), "run", str(app), "bench", "--stream", "--run-config", run_config]
        subprocess.run(command, env=env, timeout=1800, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if not out.is_file():
            raise RuntimeError(f"the bench ServerApp wrote no figures; logs in {work}")
        return json.loads(out.read_text())
    finally:
        stop_tagged(token)


def stop_tagged(token: str) -> None:
    """Stop every process whose environment carries `token`: what the bench started, and what those started
    in sessions of their own (SuperExec, ServerApp and ClientApp processes)."""
    marker = f"{TOKEN_VAR}={token}".encode()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]:
            try:
                if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    os.kill(pid, sig)
            except (OSError, ProcessLookupError):
                pass
        time.sleep(2)


def report(figures: dict, imports: dict[str, float]) -> str:
    floor = figures["floor_median_s"]
    steps = figures["steps"][1:] or figures["steps"]  # the first step carries no cut gradient
    wall = statistics.median(s["wall_s"] for s in steps)
    server = statistics.median(s["server_compute_s"] for s in steps)
    handler = statistics.median(s["client_handler_s"] for s in steps)
    rest = wall - server - handler
    return "\n".join(
        [
            f"{figures['clients']} SuperNodes, {figures['samples_per_client']} samples per client per step",
            "",
            "| | seconds |",
            "|---|---:|",
            f"| Flower's floor: two empty round trips (`query.ping`) | {floor:.2f} |",
            f"| one MPSL step (two round trips) | {wall:.2f} |",
            f"| step / floor | {wall / floor:.2f}x |",
            f"| of the step: server compute | {server:.2f} |",
            f"| of the step: a client's handlers (both messages, entry to reply) | {handler:.2f} |",
            f"| of the step: the rest (message path, ClientApp processes, imports) | {rest:.2f} |",
            *(f"| a fresh process importing `{module}` | {seconds:.2f} |" for module, seconds in imports.items()),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=150)
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mpsl-bench-deployment-"))
    try:
        figures = run_bench(arguments.devices, arguments.batch_size, work)
    except Exception:
        print(f"logs kept in {work}")
        raise
    modules = ("flwr.clientapp", "mpsl_flower.app.client_app", "torch", "mpsl_flower.app.client_handlers")
    print(report(figures, {module: import_seconds(module) for module in modules}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
