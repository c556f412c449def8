"""A rehearsal of a paper-sized MPSL run through the real `flwr run` path: step time and peak memory per process.

    python bench/rehearse_vit_b16.py [--clients 10] [--batch-size 20] [--train-samples 40] [--test-samples 20]
                                     [--dataset b-t4sa] [--encoder-size vit-b16] [--extra "key=value ..."] [--keep]
    python bench/rehearse_vit_b16.py --devices 1 --dataset coco-qa --batch-size 50 --train-samples 50

Simulation (the default): starts its own simulation SuperLink (own FLWR_HOME and free ports, through the test
suite's process harness `tests/support/flwr_harness.py`, which stops everything it started by PID and fails on
leftovers) and `flwr run`s the app with `--clients` simulated SuperNodes. `--devices N`: the README's secure
Deployment Engine federation on loopback instead (TLS, SuperNode authentication, N SuperNode processes, each
message in a fresh ClientApp process). Either way one epoch of a rehearsal (`rehearsal=true`: the task's exact
shapes on generated data, random weights, no files needed). Every second it samples the resident memory (RSS, and
PSS, which splits the pages processes share) of every process the run started, found by the harness's token in
their environment, and the machine's load. It prints the run's status, its step time (from `metrics.jsonl`:
`train_wall_s / steps`, and the server's and clients' compute), and per process role the peak of one process and
of the role's sum.

The simulation's default task is B-T4SA: its model inputs have COCO-QA's shapes (197 image tokens and one text
token, early fusion), with 3 classes instead of 430. A 40-sample COCO-QA rehearsal cannot be split over 10 clients:
flwr-datasets' Dirichlet partitioner (both split types) gives all of a class's samples to one client when the class
has fewer samples than there are clients, and 40 samples over 430 classes leave most clients empty (it takes about
1,000 samples, 80 steps at 2 samples per client, for every client to get some). One device holds the whole split,
so `--devices 1` rehearses COCO-QA itself.

Why a script: README's figures must be reproducible on any machine, and a ViT-B/16 step on a CPU takes tens of
seconds, too slow for the test suite. Figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the process harness of the `flwr run` tests

from process_memory import MemorySampler  # noqa: E402
from support.flwr_harness import (  # noqa: E402
    TOKEN_VAR,
    running_superlink,
    secure_federation,
    start_flwr_run,
    wait_until_finished,
)

RUN_TIMEOUT_S = 3600
TIMELINE_MARKS = ("Starting MpslStrategy", "[MPSL] ", "[mpsl] done")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_config(arguments: argparse.Namespace, work: Path) -> str:
    """The rehearsal's run config; an even split of few samples (a near-even draw: some clients get one or two
    fewer than the mean, so `min-partition-size` must not ask for the mean)."""
    return (
        f"dataset='{arguments.dataset}' rehearsal=true rehearsal-train-samples={arguments.train_samples} "
        f"rehearsal-test-samples={arguments.test_samples} encoder-size='{arguments.encoder_size}' "
        f"batch-size={arguments.batch_size} nr-of-epochs=1 dataset-split-type='iid' "
        f"min-partition-size=1 eval-batch-size={arguments.test_samples} "
        f"output-dir='{work / 'results'}' pre-processors-cache-dir='{work / 'cache'}' "
        f"client-state-dir='{work / 'client-state'}' {arguments.extra}"
    )


def step_figures(work: Path) -> str:
    folders = list((work / "results").glob("*/metrics.jsonl"))
    if not folders:
        return "no metrics.jsonl: the run finished no epoch (see the logs)"
    record = json.loads(folders[0].read_text().splitlines()[-1])
    steps = record["steps"]
    return "\n".join(
        [
            f"steps: {steps}, dropped client steps: {record['dropped_client_steps']}",
            f"step time: {record['train_wall_s'] / steps:.1f} s (train_wall_s {record['train_wall_s']:.1f} s)",
            f"of it, server compute per step: {record['server_compute_s'] / steps:.1f} s; "
            f"client compute per step, summed over clients: {record['client_compute_s'] / steps:.1f} s",
            f"evaluation: {record['eval_s']:.1f} s; MB per step up/down: "
            f"{record['bytes_up'] / steps / 1e6:.1f} / {record['bytes_down'] / steps / 1e6:.1f}",
        ]
    )


@contextlib.contextmanager
def federation(work: Path, devices: int) -> Iterator[dict]:
    """The environment that points `flwr` at a SuperLink of our own: a simulation one (`devices` 0) or the
    secure deployment with `devices` SuperNodes; everything started is stopped by PID on leaving."""
    if devices:
        with secure_federation(work, devices) as secure:
            yield secure.env
    else:
        with running_superlink(work) as (env, _):
            yield env


def timeline(lines: list[tuple[float, str]]) -> str:
    """When the run's milestones reached `flwr run --stream`, in seconds from its start: startup (model,
    data, text features), discovery of the clients, every logged step, the epoch's end."""
    marks = [(t, line) for t, line in lines if any(m in line for m in TIMELINE_MARKS)]
    return "\n".join(f"{t:6.0f} s  {ANSI.sub('', line).strip()[:110]}" for t, line in marks)


def measured_flwr_run(
    work: Path, run_config: str, devices: int, num_supernodes: int | None
) -> tuple[MemorySampler, list[str]]:
    """`flwr run` on a federation of its own in `work` (`devices` SuperNode processes, or `num_supernodes` simulated
    ones), sampling the memory of every process it starts; print its status, timeline, step figures and memory.
    Returns the sampler and the run's `flwr list` statuses."""
    started = time.monotonic()
    with federation(work, devices) as env, MemorySampler(f"{TOKEN_VAR}={env[TOKEN_VAR]}") as sampler:
        run = start_flwr_run(env, work / "flwr-run.log", run_config, num_supernodes=num_supernodes)
        returncode = run.wait(RUN_TIMEOUT_S)
        statuses, _ = wait_until_finished(env)
    print(f"flwr run exit {returncode}, run status {statuses}, {time.monotonic() - started:.0f} s in all")
    print(timeline(run.lines))
    print(step_figures(work))
    print(sampler.table())
    return sampler, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10, help="simulated SuperNodes")
    parser.add_argument("--devices", type=int, default=0, help="SuperNode processes on the Deployment Engine")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--train-samples", type=int, default=40)
    parser.add_argument("--test-samples", type=int, default=20)
    parser.add_argument("--dataset", default="b-t4sa")
    parser.add_argument("--encoder-size", default="vit-b16")
    parser.add_argument("--extra", default="", help='more run-config keys, e.g. "step-timeout-s=600"')
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, results)")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mpsl-rehearse-"))
    config = run_config(arguments, work)
    print(f"work folder {work}\nrun config: {config}", flush=True)
    simulated = None if arguments.devices else arguments.clients
    sampler, statuses = measured_flwr_run(work, config, arguments.devices, simulated)
    loads = sampler.loads or [0.0]
    busy = sampler.busy or [0.0]
    print(
        f"machine during the run ({os.cpu_count()} cores): load average (1 min) mean {sum(loads) / len(loads):.2f}, "
        f"max {max(loads):.2f}; cores busy {100 * sum(busy) / len(busy):.0f} % on average"
    )
    if arguments.keep or statuses != ["finished:completed"]:
        print(f"logs kept in {work} (flwr-run.log; superlink.log, or logs/ for a deployment)")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
