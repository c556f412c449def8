"""Compare MPSL with its baselines on the embedded task: same seed, data, model and budget.

    python bench/compare_methods.py --clients 20 --epochs 3
    python bench/compare_methods.py --clients 100 --epochs 6 --seeds 2024 2025 2026

Runs `mpsl`, `fedavg` and `fedclip` under Flower simulation (one SuperNode per client, so
bytes are measured on the real messages) and `centralized` without Flower, then prints a
Markdown table: final test accuracy, client forward FLOPs per sample, bytes per client per
epoch (MPSL) or round (FL), and wall time. With several `--seeds` (each fixes partitioning,
sampling, initialisation and the embedded pretraining) it also prints each method's final test
accuracy per seed with their mean: one seed's gap between two methods can be within the noise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mpsl_flower.app.server_app import train
from mpsl_flower.app.simulation import simulate
from mpsl_flower.config import RunConfig, parse_run_config
from mpsl_flower.measure.accounting import CLIENT, analytic_parts, method_costs
from mpsl_flower.runs.readers import read_metrics

METHODS = ("mpsl", "fedavg", "fedclip", "centralized")


def client_forward_flops(config: RunConfig) -> float:
    """FLOPs (2 x MACs) of one sample's forward pass on a client: tokenizers for MPSL, the whole model for FL."""
    return 2 * method_costs(config.method, analytic_parts(config))[CLIENT].forward


def run_method(method: str, num_clients: int, overrides: dict, output_root: Path) -> dict:
    overrides = {**overrides, "method": method, "output-dir": str(output_root / method)}
    config = parse_run_config(overrides)
    started = time.perf_counter()
    if method == "centralized":
        train(config, grid=None)
    else:
        simulate(num_clients, overrides)
    wall_s = time.perf_counter() - started
    (folder,) = config.resolved_path("output_dir").iterdir()
    records = read_metrics(folder)
    clients = 1 if method == "centralized" else num_clients
    traffic = sum(r["bytes_up"] + r["bytes_down"] for r in records) / len(records) / clients
    return {
        "method": method,
        "test_accuracy": records[-1]["test_accuracy"],
        "client_gflops": client_forward_flops(config) / 1e9,
        "mb_per_client": traffic / 1e6,
        "wall_s": wall_s,
    }


def print_table(rows: list[dict], clients: int, epochs: int, seed: int) -> None:
    print(f"\nshapes-qa, {clients} clients, {epochs} epochs/rounds, seed {seed}, defaults of pyproject.toml\n")
    print(
        "| method | test accuracy | client forward GFLOPs / sample | MB per client per epoch or round | wall time (s) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['test_accuracy']:.3f} | {r['client_gflops']:.4f} | "
            f"{r['mb_per_client']:.2f} | {r['wall_s']:.0f} |"
        )


def print_seed_table(rows_by_seed: dict[int, list[dict]]) -> None:
    """Final test accuracy of each method under each seed, with the mean and the range over the seeds."""
    seeds = list(rows_by_seed)
    methods = [r["method"] for r in rows_by_seed[seeds[0]]]
    print("\n| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | min–max |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for index, method in enumerate(methods):
        accuracies = [rows_by_seed[s][index]["test_accuracy"] for s in seeds]
        cells = " | ".join(f"{a:.3f}" for a in accuracies)
        print(
            f"| {method} | {cells} | {statistics.mean(accuracies):.3f} | {min(accuracies):.3f}–{max(accuracies):.3f} |"
        )


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[parse_run_config({}).seed], help="default: pyproject.toml's seed"
    )
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < len(args.seeds):  # a repeated seed repeats a run and would count twice in the mean
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    return args


def main() -> None:
    args = parse_arguments()
    rows_by_seed = {}
    for seed in args.seeds:
        overrides = {"nr-of-epochs": args.epochs, "random-seed": seed}
        rows = []
        with tempfile.TemporaryDirectory(prefix="mpsl-compare-") as output_root:
            for method in args.methods:
                rows.append(run_method(method, args.clients, overrides, Path(output_root)))
                print(f"finished {method}, seed {seed}: {rows[-1]}", flush=True)
        print_table(rows, args.clients, args.epochs, seed)
        rows_by_seed[seed] = rows
    if len(args.seeds) > 1:
        print_seed_table(rows_by_seed)


if __name__ == "__main__":
    main()
