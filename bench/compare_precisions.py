"""What `activation-precision` saves and costs: bytes and final accuracy of MPSL per setting, one run each.

    python bench/compare_precisions.py --clients 10 --epochs 6

Runs the embedded task with the run config's defaults through the in-process runner, which
codes every activation and gradient exactly as the messages do (`mpsl_flower.split.precision`)
and counts the bytes of the coded arrays, then prints a Markdown table (the README's).
"""

from __future__ import annotations

import argparse
import logging

from mpsl_flower.config import ACTIVATION_PRECISIONS, parse_run_config
from mpsl_flower.models.factory import resolve_device
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner


def run(precision: str, num_clients: int, epochs: int) -> dict:
    config = parse_run_config({"activation-precision": precision, "nr-of-epochs": epochs})
    runner = InProcessRunner(config, load_inputs(config), num_clients, resolve_device(config))
    records = [runner.run_epoch(epoch) for epoch in range(epochs)]
    traffic = sum(r["bytes_up"] + r["bytes_down"] for r in records) / epochs / num_clients
    return {"precision": precision, "test_accuracy": records[-1]["test_accuracy"], "mb": traffic / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=6)
    arguments = parser.parse_args()
    logging.getLogger("mpsl_flower").setLevel(logging.ERROR)
    rows = [run(precision, arguments.clients, arguments.epochs) for precision in ACTIVATION_PRECISIONS]
    full = rows[0]["mb"]
    accuracy = f"test accuracy after {arguments.epochs} epochs"
    print(f"| activation-precision | MB per client per epoch | vs float32 | {accuracy} |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| `{row['precision']}` | {row['mb']:.2f} | {row['mb'] / full:.2f} | {row['test_accuracy']:.3f} |")


if __name__ == "__main__":
    main()
