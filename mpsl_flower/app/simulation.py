"""Run the app in Flower's Simulation Engine inside this Python process, with run-config overrides.

Why this exists: notebooks, benchmarks and tests want a simulation in their own process (to
share objects with the ServerApp, time it, or catch its exception), but
`flwr.simulation.run_simulation` takes no run config. `simulate` applies overrides the way
`flwr run --run-config` does: fused with pyproject's `[tool.flwr.app.config]`, unknown keys
refused, and the same fused config given to the ServerApp and to every ClientApp. It uses
flwr 1.42 internals (`_run_simulation` with `run=`, `server_app_context=`, `app_dir=`); the
version is pinned in pyproject.toml.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid, ServerApp
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.constant import NOOP_FEDERATION_ID
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.telemetry import EventType

APP_DIR = Path(__file__).resolve().parents[2]  # holds pyproject.toml
DEFAULT_CLIENT_RESOURCES = {"num_cpus": 1.0, "num_gpus": 0.0}  # 2 actors on 2 cores


def simulate(
    num_supernodes: int,
    run_config_overrides: dict | None = None,
    server_app: ServerApp | None = None,
    client_app: ClientApp | None = None,
    backend_config: dict | None = None,
) -> Context:
    """Run `server_app` (default: ours) with `num_supernodes` ClientApps (default: ours) on Ray.

    `run_config_overrides` holds `[tool.flwr.app.config]` keys, e.g. `{"nr-of-epochs": 1}`.
    `backend_config` is Flower's (`client_resources`, `init_args`, `actor`); client resources
    default to 1 CPU and no GPU each. Raises what the ServerApp raised, so a failed run never
    passes for a finished one; returns the ServerApp's final `Context`.
    """
    if server_app is None:
        from mpsl_flower.app.server_app import app as server_app
    if client_app is None:
        from mpsl_flower.app.client_app import app as client_app
    overrides = dict(run_config_overrides or {})
    run_config = get_fused_config_from_dir(APP_DIR, overrides)  # ValueError on an unknown key
    backend_config = dict(backend_config or {})
    backend_config.setdefault("client_resources", dict(DEFAULT_CLIENT_RESOURCES))

    run_id = secrets.randbits(63)
    run = Run.create_empty(run_id=run_id)
    run.override_config = overrides  # every node fuses it with APP_DIR's pyproject (is_app=True)
    run.primary_task_id = secrets.randbits(63)
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    context = Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)

    # Flower re-raises an Exception from the ServerApp thread, but a SystemExit there (e.g.
    # flwr_exit) just ends the thread: only a main that returned counts as finished.
    finished = []
    watched = ServerApp()

    @watched.main()
    def _main(grid: Grid, server_context: Context) -> None:
        server_app(grid=grid, context=server_context)
        finished.append(True)

    result = _run_simulation(
        num_supernodes=num_supernodes,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client_app,
        server_app=watched,
        backend_config=backend_config,
        server_app_context=context,
        app_dir=str(APP_DIR),
        run=run,
        is_app=True,
    )
    if not finished:
        raise RuntimeError("the ServerApp did not finish; see the log above")
    return result.context
