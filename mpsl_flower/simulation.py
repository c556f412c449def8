"""Run the app in Flower's Simulation Engine inside this Python process, with run-config overrides.

`flwr.simulation.run_simulation` takes no run config; benchmarks and notebooks need the
overrides that `flwr run --run-config` would apply, fused with pyproject's defaults the same
way. Relies on flwr 1.42 internals (the version is pinned).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import ServerApp
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.constant import NOOP_FEDERATION_ID
from flwr.supercore.run import Run
from flwr.supercore.telemetry import EventType
from flwr.supercore.task_identity import TaskIdentity

APP_DIR = Path(__file__).resolve().parents[1]


def simulate(
    num_supernodes: int,
    run_config_overrides: dict | None = None,
    server_app: ServerApp | None = None,
    client_app: ClientApp | None = None,
    num_cpus_per_client: float = 1.0,
) -> None:
    """Run `server_app` (default: ours) against `num_supernodes` simulated ClientApps.

    Raises whatever the ServerApp raised, so a failed run never looks like a finished one.
    """
    if server_app is None:
        from mpsl_flower.server_app import app as server_app
    if client_app is None:
        from mpsl_flower.client_app import app as client_app
    overrides = dict(run_config_overrides or {})
    run_id = secrets.randbits(63)
    run = Run.create_empty(run_id=run_id)
    run.override_config = overrides
    run.primary_task_id = secrets.randbits(63)
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    context = Context(
        run_id=run_id,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=get_fused_config_from_dir(APP_DIR, overrides),
    )
    _run_simulation(
        num_supernodes=num_supernodes,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client_app,
        server_app=server_app,
        backend_config={"client_resources": {"num_cpus": num_cpus_per_client, "num_gpus": 0.0}},
        server_app_context=context,
        app_dir=str(APP_DIR),
        run=run,
    )
