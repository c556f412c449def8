"""The centralized baseline from the command line, without Flower's runtime (no SuperLink, no Ray).

    python -m mpsl_flower.app.run_centralized --run-config "nr-of-epochs=3 output-dir='/tmp/results'"

It runs the same `Centralized` strategy that `flwr run` runs with `method='centralized'`.
"""

from __future__ import annotations

import argparse
import sys

from flwr.common.config import parse_config_args

from mpsl_flower.app.server_app import log_task_defaults, train
from mpsl_flower.config import parse_run_config
from mpsl_flower.logs import show_project_logs


def main() -> None:
    parser = argparse.ArgumentParser(description="Centralized baseline, without Flower's runtime.")
    parser.add_argument(
        "--run-config", default="", help='overrides as in flwr run: "nr-of-epochs=3 start-lr=0.001" or a .toml file'
    )
    args = parser.parse_args()
    show_project_logs()
    try:  # the same parser and the same checks as `flwr run --run-config`
        overrides = {**parse_config_args([args.run_config]), "method": "centralized"}
        config = parse_run_config(overrides)
    except Exception as error:  # noqa: BLE001 - any parse failure is the user's input: one line, no traceback
        sys.exit(f"Invalid run config: {error}")
    log_task_defaults(config, overrides)
    _, results = train(config, grid=None)
    print(f"results in {results.folder}")


if __name__ == "__main__":
    main()
