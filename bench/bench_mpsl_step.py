"""Cost of an MPSL step: in-process runner vs Flower simulation, against Flower's own floor.

Runs the same MPSL epoch on the embedded task (default run config of pyproject.toml) (a) with
every client in this process (`InProcessRunner`: no Flower, no Ray) and (b) under Flower's
Simulation Engine with one SuperNode per client (`mpsl_flower.app.simulation.simulate`), its message
dispatch indexed per node as our ServerApp indexes it (`mpsl_flower.app.dispatch_index`). In (b)
the bench's ServerApp first measures Flower's floor on the same nodes: two round trips with an
empty payload (`query.ping`), which is what one MPSL step would cost if nobody computed
anything; then it runs `MpslStrategy`; then it measures the floor again, now that every
node's `context.state` holds its client weights and Adam state.

    python bench/bench_mpsl_step.py [--clients 100] [--epochs 1] [--pings 10] [--ray-inline-kib 1024]

Step times are timed around each step (the end-of-epoch exchange, averaging and evaluation
are left out). The bench wraps the strategy's `exchange` and byte counting to time them;
nothing else in the app changes. It prints figures only and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from unittest import mock

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # read when flwr is imported
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

import ray
from flwr.app import Context, RecordDict
from flwr.common.config import get_fused_config_from_dir
from flwr.serverapp import Grid, ServerApp

import strategies.exchange
import strategies.mpsl
from mpsl_flower import wire
from mpsl_flower.app.dispatch_index import index_dispatch
from mpsl_flower.app.server_app import start
from mpsl_flower.app.simulation import APP_DIR, DEFAULT_CLIENT_RESOURCES, simulate
from mpsl_flower.config import parse_run_config
from mpsl_flower.models.factory import resolve_device
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner
from mpsl_flower.split.schedule import num_batches
from mpsl_flower.wire import payload_bytes
from strategies.exchange import exchange
from strategies.mpsl import MpslStrategy

TALLY_FIELDS = ("client_compute_s", "server_compute_s", "bytes_up", "bytes_down")


def timed_step(run_step, tally, steps: list[dict], extra: dict) -> None:
    """Run one step; append its wall time, what it added to the tally, and `extra`."""
    before = {f: getattr(tally, f) for f in TALLY_FIELDS}
    started = time.perf_counter()
    run_step()
    record = {"wall": time.perf_counter() - started, **extra}
    record.update({f: getattr(tally, f) - before[f] for f in TALLY_FIELDS})
    steps.append(record)


class TimedRunner(InProcessRunner):
    """InProcessRunner that records each step (its wall time, tally deltas, active clients)."""

    steps: list[dict]

    def run_step(self, epoch, step, tally):
        active = sum(step < num_batches(len(p), self.client_batch_size) for p in self.partitions)
        timed_step(lambda: super(TimedRunner, self).run_step(epoch, step, tally), tally, self.steps, {"active": active})


class TimedStrategy(MpslStrategy):
    """MpslStrategy that records each step, plus the time inside its exchanges and byte counting."""

    steps: list[dict]
    current: dict | None = None

    def run_step(self, grid, clients, epoch, step, m, timeout, tally):
        self.current = defaultdict(float)
        timed_step(
            lambda: super(TimedStrategy, self).run_step(grid, clients, epoch, step, m, timeout, tally),
            tally,
            self.steps,
            self.current,
        )
        self.current = None

    def timed_exchange(self, grid, contents, message_type, timeout_s, group_id="", on_reply=None):
        started = time.perf_counter()
        result = exchange(grid, contents, message_type, timeout_s, group_id, on_reply)
        if self.current is not None:
            self.current[message_type] += time.perf_counter() - started
            if message_type == wire.FORWARD:
                self.current["active"] = len(contents)
        return result

    def timed_payload_bytes(self, content):
        started = time.perf_counter()
        size = payload_bytes(content)
        if self.current is not None:
            self.current["payload_bytes"] += time.perf_counter() - started
        return size


def fused_run_config(overrides: dict) -> dict:
    """The run config `flwr run --run-config` would give: pyproject defaults + overrides."""
    return get_fused_config_from_dir(APP_DIR, overrides)


def run_in_process(overrides: dict, num_clients: int, epochs: int) -> tuple[list[dict], list[dict]]:
    config = parse_run_config(fused_run_config(overrides))
    runner = TimedRunner(config, load_inputs(config), num_clients)
    runner.steps = []
    records = [runner.run_epoch(epoch) for epoch in range(epochs)]
    return records, runner.steps


def two_round_trips(grid: Grid, empty: dict, repeats: int, timeout_s: float) -> list[float]:
    """Seconds for two consecutive empty exchanges with every node, `repeats` times."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(2):
            result = exchange(grid, empty, wire.PING, timeout_s)
            if result.failures:
                raise RuntimeError(f"ping failed: {result.failures}")
        times.append(time.perf_counter() - started)
    return times


def run_under_flower(
    overrides: dict, num_clients: int, pings: int, backend_config: dict, unindexed_pings: int = 0
) -> dict:
    """Simulation with `num_clients` SuperNodes: ping floor, MPSL epochs, ping floor again.

    The dispatch is indexed as our ServerApp indexes it (`mpsl_flower.app.dispatch_index`); `unindexed_pings`
    repeats of the floor are measured first, with Flower's own dispatch, to show what the index saves."""
    found: dict = {}
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = parse_run_config(context.run_config)
        while len(list(grid.get_node_ids())) < num_clients:  # nodes register after main starts
            time.sleep(0.1)
        empty = {node: RecordDict() for node in grid.get_node_ids()}
        exchange(grid, empty, wire.PING, config.step_timeout_s)  # wake every actor up
        found["cpus"] = ray.cluster_resources().get("CPU", 0)  # Ray is up once a reply came
        if unindexed_pings:
            found["floor_unindexed"] = two_round_trips(grid, empty, unindexed_pings, config.step_timeout_s)
        found["indexed"] = index_dispatch(grid)
        found["floor"] = two_round_trips(grid, empty, pings, config.step_timeout_s)
        device = resolve_device(config)
        strategy = TimedStrategy(config, device)
        strategy.steps = []
        with (
            mock.patch.object(strategies.mpsl, "exchange", strategy.timed_exchange),
            mock.patch.object(strategies.exchange, "payload_bytes", strategy.timed_payload_bytes),
        ):
            result = start(strategy, config, grid, device)
        found["records"] = [
            {**result.train_metrics_clientapp[e], **result.evaluate_metrics_serverapp[e]}
            for e in sorted(result.train_metrics_clientapp)
        ]
        found["steps"] = strategy.steps
        found["floor_after"] = two_round_trips(grid, empty, pings, config.step_timeout_s)

    simulate(num_clients, overrides, server_app=app, backend_config=backend_config)
    return found


def f(seconds: float) -> str:
    return f"{seconds:.3f}"


def means(steps: list[dict], actors: int) -> dict[str, float]:
    """Per-step means, with client compute's wall share and the orchestration left over."""
    keys = ("wall", *TALLY_FIELDS, wire.FORWARD, wire.LOSS_GRAD, "payload_bytes")
    out = {k: statistics.fmean(s.get(k, 0.0) for s in steps) for k in keys}
    out["median wall"] = statistics.median(s["wall"] for s in steps)
    out["client wall"] = out["client_compute_s"] / actors
    out["orchestration"] = out["wall"] - out["server_compute_s"] - out["client wall"]
    out["exchanges"] = out[wire.FORWARD] + out[wire.LOSS_GRAD]
    out["bookkeeping"] = out["wall"] - out["exchanges"] - out["server_compute_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pings", type=int, default=10, help="repeats of the two empty round trips")
    parser.add_argument(
        "--ray-inline-kib",
        type=int,
        default=0,
        help="raise Ray's max_direct_call_object_size (default 100 KiB) to this: larger task arguments and "
        "results, such as a context.state of client weights + Adam state, then skip Ray's object store",
    )
    args = parser.parse_args()
    backend_config = {"client_resources": dict(DEFAULT_CLIENT_RESOURCES)}
    if args.ray_inline_kib:
        backend_config["init_args"] = {"_system_config": {"max_direct_call_object_size": args.ray_inline_kib * 1024}}
    output_dir = tempfile.mkdtemp(prefix="mpsl-bench-")
    overrides = {"nr-of-epochs": args.epochs, "output-dir": output_dir}
    n = args.clients
    try:
        started = time.perf_counter()
        records_a, steps_a = run_in_process(overrides, n, args.epochs)
        time_a = time.perf_counter() - started
        started = time.perf_counter()
        found = run_under_flower(overrides, n, args.pings, backend_config)
        time_b = time.perf_counter() - started
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    steps_b, records_b = found["steps"], found["records"]
    actors = int(found["cpus"] // DEFAULT_CLIENT_RESOURCES["num_cpus"])
    full_a = [s for s in steps_a if s["active"] == n]
    full_b = [s for s in steps_b if s["active"] == n]
    cols = [means(steps_a, 1), means(steps_b, actors), means(full_a, 1), means(full_b, actors)]
    floor, after = found["floor"], found["floor_after"]

    config = parse_run_config(fused_run_config(overrides))
    print()
    print(
        f"MPSL on {config.dataset}, pyproject defaults (encoder {config.encoder_size}), {n} clients, batch-size "
        f"{config.batch_size} -> {config.client_batch_size(n)} samples/client/step, {args.epochs} epoch(s) of "
        f"{records_b[0]['steps']} steps; {os.cpu_count()} CPU cores; (b) on {actors} Ray actors of "
        f"{DEFAULT_CLIENT_RESOURCES['num_cpus']:g} CPU, the ServerApp in the driver process; Ray "
        f"max_direct_call_object_size {args.ray_inline_kib or 100} KiB{'' if args.ray_inline_kib else ' (default)'}"
    )
    print(f"clients taking part, step by step: {[s['active'] for s in steps_b[: len(steps_b) // args.epochs]]}")
    print(f"run time: (a) {time_a:.1f} s, (b) {time_b:.1f} s (Ray start-up, pings, evaluation included)")
    print()
    print(f"{'seconds per step (mean)':<52}{'---- all steps ----':>26}{f'-- steps with all {n} clients --':>32}")
    row = "{:<52}{:>13}{:>13}{:>16}{:>16}"
    print(row.format("", "(a) in-proc", "(b) Flower", "(a) in-proc", "(b) Flower"))
    print(row.format("number of steps", len(steps_a), len(steps_b), len(full_a), len(full_b)))

    def line(label: str, key: str, flower_only: bool = False) -> None:
        a_all, b_all, a_full, b_full = (f(c[key]) for c in cols)
        print(row.format(label, "" if flower_only else a_all, b_all, "" if flower_only else a_full, b_full))

    line("wall time per step", "wall")
    line("  median", "median wall")
    line("server compute (1 forward + 1 backward)", "server_compute_s")
    line("client compute, CPU-s summed over clients", "client_compute_s")
    line(f"client compute, wall share (a: serial; b: sum/{actors})", "client wall")
    line("orchestration = wall - server - client wall share", "orchestration")
    line("(b) time inside train.forward exchange", wire.FORWARD, True)
    line("(b) time inside train.loss_grad exchange", wire.LOSS_GRAD, True)
    line("(b)   of which byte counting (serializing msgs)", "payload_bytes", True)
    line("(b) server bookkeeping outside exchanges", "bookkeeping", True)
    for label, key in (("bytes up per client per step", "bytes_up"), ("bytes down per client per step", "bytes_down")):
        print(row.format(label, *(f"{c[key] / n:.0f}" for c in cols)))
    print()
    print(
        f"test accuracy after the run: (a) {records_a[-1]['test_accuracy']:.3f}, "
        f"(b) {records_b[-1]['test_accuracy']:.3f}; "
        f"dropped client-steps in (b): {sum(r['dropped_client_steps'] for r in records_b)}"
    )
    print(
        f"(b)/(a), mean wall per step: {cols[1]['wall'] / cols[0]['wall']:.2f}x all steps, "
        f"{cols[3]['wall'] / cols[2]['wall']:.2f}x steps with all {n} clients"
    )
    print()
    print(
        f"Flower floor = 2 round trips with empty content (query.ping) to all {n} nodes, same simulation, "
        f"{len(floor)} repeats:"
    )
    print(
        f"  before training (empty context.state):          median {statistics.median(floor):.3f} s "
        f"(min {min(floor):.3f}, max {max(floor):.3f})"
    )
    print(
        f"  after training (context.state = the progress record; weights in the node's store): "
        f"median {statistics.median(after):.3f} s (min {min(after):.3f}, max {max(after):.3f})"
    )
    before_s, after_s, step_s = statistics.median(floor), statistics.median(after), cols[3]["wall"]
    print(f"floor after / floor before training: {after_s / before_s:.2f} (goal: within 1.10)")
    print(
        f"MPSL step (all {n} clients, mean {step_s:.3f} s) / floor before training: {step_s / before_s:.2f}x; "
        f"(step - server compute) / floor: {(step_s - cols[3]['server_compute_s']) / before_s:.2f}x (goal: <= 1.25)"
    )
    print()
    print("Notes: (a) counts raw tensor bytes; (b) the serialized message contents (what Flower sends).")
    print("(b) client compute is the ClientApp handler time that clients report (state load/save included), not the")
    print(f"Ray transfer of message and context; it runs on {actors} actors in parallel, so its wall share is at best")
    print(f"sum/{actors}. In (a) clients run one after another. In (b) the ServerApp, Flower's threads and the actors")
    print("share the same cores: server compute in (b) is inflated by that contention.")


if __name__ == "__main__":
    main()
