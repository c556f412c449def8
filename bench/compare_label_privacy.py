"""What `label-privacy` costs and what a curious server still learns: accuracy and attack scores per mode.

    python bench/compare_label_privacy.py --clients 10 --epochs 6

Runs MPSL on each embedded task in both modes through Flower's Simulation Engine (real
ClientApps on Ray), with `label-attack-report=true`, and prints a Markdown table (the README's):
the final test accuracy, and the label-inference scores of the first and the last epoch
(`mpsl_flower.measure.label_attacks`) against the majority-class rate.
"""

from __future__ import annotations

import argparse
import logging
import tempfile

from mpsl_flower.app.simulation import simulate
from mpsl_flower.config import LABEL_PRIVACY_MODES
from mpsl_flower.runs.readers import complete_runs, read_metrics
from tasks.registry import EMBEDDED


def run(dataset: str, mode: str, num_clients: int, epochs: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as output_dir:
        overrides = {
            "dataset": dataset,
            "label-privacy": mode,
            "label-attack-report": True,
            "nr-of-epochs": epochs,
            "output-dir": output_dir,
        }
        simulate(num_clients, overrides)
        (folder,) = complete_runs(output_dir)
        return read_metrics(folder)


def _score(record: dict, key: str) -> str:
    return f"{record[key]:.3f}" if key in record else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=6)
    arguments = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    print(
        "| task | label-privacy | test accuracy | direct attack | norm attack | cosine attack | majority rate |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    for dataset in EMBEDDED:
        for mode in LABEL_PRIVACY_MODES:
            records = run(dataset, mode, arguments.clients, arguments.epochs)
            first, last = records[0], records[-1]
            scores = [
                f"{_score(first, key)} / {_score(last, key)}"
                for key in ("label_attack_direct", "label_attack_norm", "label_attack_cosine")
            ]
            print(
                f"| {dataset} | {mode} | {last['test_accuracy']:.3f} | {' | '.join(scores)} | "
                f"{last['label_attack_majority']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
