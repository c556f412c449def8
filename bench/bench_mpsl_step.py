"""Cost of an MPSL step: in-process runner vs Flower simulation, against Flower's own floor.

Runs the same MPSL epoch on the embedded task (a) with every client in this process (no
Flower, no Ray) and (b) under Flower simulation with one SuperNode per client. In (b), the
ServerApp first measures Flower's floor on the same nodes: two round trips with an empty
payload, which is what one MPSL step would cost if clients and server computed nothing.

    python bench/bench_mpsl_step.py [--clients 100] [--epochs 1] [--pings 10]

Prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from flwr.app import Context, RecordDict
from flwr.serverapp import Grid, ServerApp

from mpsl_flower import wire
from mpsl_flower.config import parse_run_config
from mpsl_flower.simulation import simulate
from mpsl_flower.split.build import new_server_side, resolve_device
from mpsl_flower.split.runner import InProcessRunner
from strategies.exchange import exchange
from strategies.mpsl import MpslStrategy
from tasks.registry import load_task_data


def run_in_process(overrides: dict, num_clients: int, epochs: int) -> list[dict]:
    config = parse_run_config(overrides)
    runner = InProcessRunner(config, load_task_data(config.dataset, config.seed), num_clients)
    return [runner.run_epoch(epoch) for epoch in range(epochs)]


def run_under_flower(overrides: dict, num_clients: int, pings: int) -> tuple[list[dict], list[float], list[float]]:
    """Simulation with `num_clients` SuperNodes: ping floor first, then the MPSL epochs."""
    found: dict = {}
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = parse_run_config(context.run_config)
        while len(list(grid.get_node_ids())) < num_clients:
            time.sleep(0.1)
        empty = {node: RecordDict() for node in grid.get_node_ids()}
        exchange(grid, empty, wire.PING, config.step_timeout_s)  # warm the actors up
        found["floors"] = two_round_trips(grid, empty, pings, config.step_timeout_s)
        strategy = MpslStrategy(config, new_server_side(config, resolve_device(config)), load_task_data(config.dataset, config.seed).test)
        found["records"] = strategy.start(grid)
        # The same pings once every node's context.state holds its client weights and Adam state.
        found["floors_after"] = two_round_trips(grid, empty, pings, config.step_timeout_s)

    simulate(num_clients, overrides, server_app=app)
    return found["records"], found["floors"], found["floors_after"]


def two_round_trips(grid: Grid, empty: dict, repeats: int, timeout_s: float) -> list[float]:
    """Seconds for two consecutive empty exchanges with every node, `repeats` times."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(2):
            result = exchange(grid, empty, wire.PING, timeout_s)
            assert not result.failures, result.failures
        times.append(time.perf_counter() - started)
    return times


def per_step(records: list[dict]) -> dict[str, float]:
    steps = sum(r["steps"] for r in records)
    wall = sum(r["train_wall_s"] for r in records)
    client = sum(r["client_compute_s"] for r in records)
    server = sum(r["server_compute_s"] for r in records)
    return {
        "wall": wall / steps,
        "client": client / steps,
        "server": server / steps,
        "rest": (wall - server - client) / steps,
        "bytes_up": sum(r["bytes_up"] for r in records) / steps,
        "bytes_down": sum(r["bytes_down"] for r in records) / steps,
        "test_accuracy": records[-1]["test_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pings", type=int, default=10)
    args = parser.parse_args()
    output_dir = tempfile.mkdtemp(prefix="mpsl-bench-")
    overrides = {"nr-of-epochs": args.epochs, "output-dir": output_dir}
    torch.set_num_threads(2)

    started = time.perf_counter()
    local = per_step(run_in_process(overrides, args.clients, args.epochs))
    print(f"(a) in-process runner: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    records, floors, floors_after = run_under_flower(overrides, args.clients, args.pings)
    flower = per_step(records)
    print(f"(b) Flower simulation: {time.perf_counter() - started:.1f} s (Ray start-up included)")

    floor = statistics.median(floors)
    n = args.clients
    print(f"\nMPSL on shapes-qa, {n} clients, {args.epochs} epoch(s), defaults of pyproject.toml; seconds per step")
    print(f"{'':38}{'(a) in-process':>16}{'(b) Flower':>14}")
    print(f"{'wall time per step':38}{local['wall']:16.3f}{flower['wall']:14.3f}")
    print(f"{'  server compute':38}{local['server']:16.3f}{flower['server']:14.3f}")
    print(f"{'  client compute (summed over clients)':38}{local['client']:16.3f}{flower['client']:14.3f}")
    print(f"{'  wall - server - summed client':38}{local['rest']:16.3f}{flower['rest']:14.3f}")
    print(f"{'bytes up per client per step':38}{local['bytes_up'] / n:16.0f}{flower['bytes_up'] / n:14.0f}")
    print(f"{'bytes down per client per step':38}{local['bytes_down'] / n:16.0f}{flower['bytes_down'] / n:14.0f}")
    print(f"{'test accuracy after the run':38}{local['test_accuracy']:16.3f}{flower['test_accuracy']:14.3f}")
    print(f"\n(b) / (a), wall per step: {flower['wall'] / local['wall']:.2f}x")
    print(f"Flower floor, two empty round trips to the same {n} nodes: median {floor:.3f} s "
          f"(min {min(floors):.3f}, max {max(floors):.3f}, {len(floors)} runs)")
    print(f"MPSL step / Flower floor: {flower['wall'] / floor:.2f}x (target <= 1.25x)")
    print(f"same pings after training, contexts holding client state: median {statistics.median(floors_after):.3f} s")
    print(f"MPSL step - floor - server compute: {flower['wall'] - floor - flower['server']:.3f} s "
          f"(client work, larger payloads, context.state shipped to the actors)")
    print("(a) counts raw tensor bytes; (b) counts the serialized message contents, headers and metrics included.")
    print("Client compute in (b) runs on the simulation's actors in parallel; in (a) clients run one after another.")


if __name__ == "__main__":
    main()
