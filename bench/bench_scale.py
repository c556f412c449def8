"""MPSL under Flower's Simulation Engine at 10, 100 and 1,000 clients: step, Flower's floor, memory per process.

    python bench/bench_scale.py [--sizes 10 100 1000] [--samples-per-client 20] [--pings 5] [--unindexed-up-to 100]
                                [--flwr-run 1000]

For each size, one simulation of the embedded default task (`shapes-qa`, pyproject defaults otherwise) with one
SuperNode per client, `dataset-split-type='iid'`, `samples-per-client` x clients training samples
(`embedded-train-samples`) and the paper's 5 samples per client per step (`batch-size` = 5 x clients): 4 steps of
every client. Its ServerApp (`bench_mpsl_step.run_under_flower`) measures Flower's floor, two round trips of empty
messages to every node, then runs one MPSL epoch, with the message dispatch indexed per node as our ServerApp
indexes it; up to `--unindexed-up-to` clients it first measures the floor with Flower's own dispatch too (one
repeat). A sampler follows this process (the ServerApp, the Simulation Engine and its in-memory LinkState: the
simulation has no SuperLink process) and its descendants (Ray's services and actors) and keeps each one's peak
memory.

`--flwr-run N` then runs the same job as a user would, `flwr run` of our app on a real simulation SuperLink
with N SuperNodes (through the test suite's process harness, as `rehearse_vit_b16.py` does), and prints its
status, its timeline and the peak memory of every process it started: SuperLink, SuperExec, the simulation
process (ServerApp + Ray driver), Ray's services and actors.

The figure of merit is (step - server compute) / floor: what a step costs beyond the server's forward and
backward, in units of what Flower needs to deliver its two rounds of messages; the goal is <= 1.25 at every
size, and the 1,000-client run within 8 GiB in all. Figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_mpsl_step import DEFAULT_CLIENT_RESOURCES, run_under_flower
from process_memory import MemorySampler
from rehearse_vit_b16 import measured_flwr_run  # the `flwr run` harness of the tests, with a sampler

CLIENT_BATCH = 5  # the paper's samples per client per step (500 over 100 clients)
GIB = 1024 * 1024  # KiB


def job(num_clients: int, samples_per_client: int) -> dict:
    """The run-config overrides of one size: an epoch of `samples_per_client` // 5 steps with every client."""
    return {
        "nr-of-epochs": 1,
        "dataset-split-type": "iid",
        "batch-size": CLIENT_BATCH * num_clients,
        "embedded-train-samples": samples_per_client * num_clients,
    }


def run_size(num_clients: int, samples_per_client: int, pings: int, unindexed_pings: int) -> dict:
    output_dir = tempfile.mkdtemp(prefix="mpsl-scale-")
    overrides = {**job(num_clients, samples_per_client), "output-dir": output_dir}
    backend_config = {"client_resources": dict(DEFAULT_CLIENT_RESOURCES)}
    started = time.perf_counter()
    try:
        with MemorySampler() as sampler:
            found = run_under_flower(overrides, num_clients, pings, backend_config, unindexed_pings)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    steps = found["steps"]
    step_s = statistics.fmean(s["wall"] for s in steps)
    server_s = statistics.fmean(s["server_compute_s"] for s in steps)
    floor_s = statistics.median(found["floor"])
    unindexed = found.get("floor_unindexed")
    return {
        "clients": num_clients,
        "steps": len(steps),
        "step_s": step_s,
        "server_s": server_s,
        "floor_s": floor_s,
        "ratio": (step_s - server_s) / floor_s,
        "floor_unindexed_s": statistics.median(unindexed) if unindexed else None,
        "indexed": found["indexed"],
        "dropped": sum(r["dropped_client_steps"] for r in found["records"]),
        "test_accuracy": found["records"][-1]["test_accuracy"],
        "total_gib": sampler.total_pss / GIB,
        "memory": sampler.table(),
        "run_s": time.perf_counter() - started,
    }


def flwr_run_size(num_clients: int, samples_per_client: int) -> None:
    """`flwr run` the job on a simulation SuperLink of its own with `num_clients` SuperNodes; print what it did."""
    work = Path(tempfile.mkdtemp(prefix="mpsl-scale-flwr-"))
    folders = {key: work / name for key, name in (("output-dir", "results"), ("pre-processors-cache-dir", "cache"))}
    keys = {**job(num_clients, samples_per_client), **{key: str(folder) for key, folder in folders.items()}}
    run_config = " ".join(f"{key}={value!r}" for key, value in keys.items())
    print(f'\nflwr run with {num_clients} SuperNodes: --run-config "{run_config}"', flush=True)
    try:
        measured_flwr_run(work, run_config, devices=0, num_supernodes=num_clients)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--samples-per-client", type=int, default=20)
    parser.add_argument("--pings", type=int, default=5, help="repeats of the two empty round trips (the floor)")
    parser.add_argument(
        "--unindexed-up-to", type=int, default=100, help="also measure the floor with Flower's own dispatch up to here"
    )
    parser.add_argument("--flwr-run", type=int, nargs="*", default=[], help="sizes to also run through `flwr run`")
    args = parser.parse_args()
    if args.samples_per_client < 4 * CLIENT_BATCH:  # the iid draw varies by a few around the mean
        parser.error(f"--samples-per-client must be at least {4 * CLIENT_BATCH}: each client needs 10 of them")
    rows = []
    for n in args.sizes:
        rows.append(run_size(n, args.samples_per_client, args.pings, 1 if n <= args.unindexed_up_to else 0))
        print(f"finished {n} clients in {rows[-1]['run_s']:.0f} s", flush=True)
    print(
        f"\nshapes-qa, iid, {args.samples_per_client} samples and {CLIENT_BATCH} per step per client, one epoch; "
        f"{os.cpu_count()} CPU cores, Ray actors of {DEFAULT_CLIENT_RESOURCES['num_cpus']:g} CPU\n"
    )
    print(
        "| clients | steps | step (s) | server compute (s) | floor (s) | (step - server) / floor | "
        "floor, Flower's own dispatch (s) | dropped client-steps | test accuracy | peak memory, all (GiB) | run (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        unindexed = "" if r["floor_unindexed_s"] is None else f"{r['floor_unindexed_s']:.2f}"
        print(
            f"| {r['clients']} | {r['steps']} | {r['step_s']:.2f} | {r['server_s']:.3f} | {r['floor_s']:.2f} | "
            f"{r['ratio']:.2f} | {unindexed} | {r['dropped']} | {r['test_accuracy']:.3f} | {r['total_gib']:.2f} | "
            f"{r['run_s']:.0f} |"
        )
    if not all(r["indexed"] for r in rows):
        print("the dispatch was NOT indexed (another flwr version): the floors are Flower's own")
    for r in rows:
        print(f"\nmemory, {r['clients']} clients (peak PSS splits shared pages; 'all' is the peak of the sum):")
        print(r["memory"])
    for n in args.flwr_run:
        flwr_run_size(n, args.samples_per_client)


if __name__ == "__main__":
    main()
