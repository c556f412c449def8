"""The whole MPSL loop on one machine's GPU: the real strategy and ClientApp, beside the server step and bare timm.

    python bench/gpu_whole_loop.py [--encoder-size vit-b16] [--clients 100] [--samples-per-client 5]
                                   [--steps 3] [--warmup 1] [--precisions fp32,bf16]
                                   [--fedavg-clients 4] [--fedavg-rounds 2] [--out figures.json]

A rehearsal of COCO-QA (`dataset='coco-qa' rehearsal=true`: its exact shapes, generated inputs, random weights)
with `--clients` IID clients of `--samples-per-client` samples per step (global batch their product), one epoch
cut after `--warmup` + `--steps` steps, every client in every step. Per server precision (`server-precision`):
  - whole loop: `MpslStrategy` started as the ServerApp starts it, over the test suite's in-process grid
    (`tests/support/inprocess_grid.py`: every message crosses a protobuf round trip to the real ClientApp,
    no SuperLink, no Ray), the server and the clients on the GPU (`device='auto'`). Each step after the first
    `--warmup` is timed, from its first message to its last cut gradient, the device waited for: samples/s;
  - the server step alone and the bare timm model on the same shapes (batch, tokens, width, blocks trained,
    clients), as `bench/bench_server_step.py` measures them (its functions): samples/s;
  - the peak GPU memory of each (`torch.cuda.max_memory_allocated`; "n/a" on a CPU).
fp32 is PyTorch's default matmul precision, as the app runs (no TF32; `bench_server_step.py` run alone turns
TF32 on, so its own fp32 figures are not these).
Then FedAvg (`strategies/fedavg.py`, fp32 as it trains) on the same grid with `--fedavg-clients` clients, each
with as many samples as an MPSL client, training on the GPU: each round's time (`train_wall_s`, from sending the
model to the average: a local epoch of every client), of which the figure is the last round's (the first also
pays the model's first kernels).

The frozen text encoder is `--text-encoder` (bag-of-words): it runs once per text before training, outside the
loop timed here, and MiniLM's package (88 MB) is more than the device tool carries. Figures go to `--out` as JSON
(default `$OUT/gpu_whole_loop.json` where `OUT` is set, else printed only) and are printed as a table; it asserts
nothing. Without a GPU it runs on the CPU at the sizes given (the test suite runs it tiny);
`bench/gpu_whole_loop.sh` runs it full size on a GPU machine without flwr.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]  # the app, the in-process grid, the bench

import bench_server_step  # noqa: E402
from support.inprocess_grid import InProcessGrid  # noqa: E402

from mpsl_flower.app import client_app  # noqa: E402
from mpsl_flower.app.server_app import start  # noqa: E402
from mpsl_flower.config import ENCODER_SIZES, SERVER_PRECISIONS, TEXT_ENCODERS, RunConfig, parse_run_config  # noqa: E402
from mpsl_flower.models.factory import new_client_model, resolve_device  # noqa: E402
from mpsl_flower.runs.record import TRAIN_WALL_S  # noqa: E402
from strategies.fedavg import FederatedAveraging  # noqa: E402
from strategies.mpsl import MpslStrategy  # noqa: E402
from tasks.partitioning import partition_rows  # noqa: E402
from tasks.rehearsal import OFFICIAL_SIZES, Rehearsal, rehearsal_data  # noqa: E402

DATASET = "coco-qa"
NOT_ON_CPU = "n/a"
FIGURES_FILE = "gpu_whole_loop.json"
DISCOVERY_TIMEOUT_S = 30.0  # the in-process grid answers at once; a client that errs should not cost 300 s


class TimedMpsl(MpslStrategy):
    """The real MPSL strategy, its epoch cut after `epoch_steps` steps (the rest of a pass over the data would add
    time, not figures); each step's samples and wall time (the device waited for) are kept."""

    def __init__(self, config: RunConfig, device: torch.device, epoch_steps: int) -> None:
        super().__init__(config, device)
        self.epoch_steps = epoch_steps
        self.step_figures: list[tuple[int, float]] = []  # (samples, seconds) of every step, in order

    def schedule(self, clients):
        schedule = super().schedule(clients)
        schedule.num_steps = min(schedule.num_steps, self.epoch_steps)
        return schedule

    def run_step(self, grid, clients, epoch, step, m, timeout, tally) -> None:
        samples = tally.samples
        bench_server_step.synchronize(self.server.device)
        started = time.perf_counter()
        super().run_step(grid, clients, epoch, step, m, timeout, tally)
        bench_server_step.synchronize(self.server.device)
        self.step_figures.append((tally.samples - samples, time.perf_counter() - started))


def run_config(args, folder: Path, clients: int, **keys) -> dict:
    """The rehearsal's run config: `clients` IID clients, each with at least `--samples-per-client` samples for
    each of `--warmup` + `--steps` steps (`min-partition-size`), out of the fewest training samples that the
    split can give them (`enough_train_samples`)."""
    needed = args.samples_per_client * (args.warmup + args.steps)
    config = {
        "dataset": DATASET,
        "rehearsal": True,
        "rehearsal-test-samples": args.test_samples,
        "encoder-size": args.encoder_size,
        "text-encoder": args.text_encoder,
        "dataset-split-type": "iid",
        "min-partition-size": needed,
        "batch-size": clients * args.samples_per_client,
        "nr-of-epochs": 1,
        "device": "auto",
        "discovery-timeout-s": DISCOVERY_TIMEOUT_S,
        "output-dir": str(folder / "results"),
        "pre-processors-cache-dir": str(folder.parent / "cache"),  # the text features, computed once
        "client-state-dir": str(folder / "client-state"),
        **({} if args.finetune is None else {"nr-of-last-encoder-blocks-to-finetune": args.finetune}),
        **keys,
    }
    return {**config, "rehearsal-train-samples": enough_train_samples(config, clients, needed)}


@functools.cache
def _split_gives_each(config: RunConfig, samples: int, clients: int, needed: int) -> bool:
    """Whether the clients' own split of `samples` generated training samples gives each client `needed`."""
    train = rehearsal_data(config.task, config.seed, Rehearsal(samples, 1)).train
    try:
        partition_rows(
            train, config.task.num_classes, config.split_type, clients, config.dirichlet_alpha, config.seed, needed
        )
    except ValueError:
        return False
    return True


def enough_train_samples(keys: dict, clients: int, needed: int) -> int:
    """The fewest training samples, doubling from `clients` x `needed`, whose IID split (the clients' own:
    the same function and seed) gives each client `needed`. Few samples of each of COCO-QA's 430 classes
    split unevenly: 100 clients need ~16,000 for 20 each, and the epoch is cut after the timed steps."""
    config = parse_run_config({**keys, "rehearsal-train-samples": 1})
    official = OFFICIAL_SIZES[DATASET][0]
    samples = clients * needed
    while not _split_gives_each(config, samples, clients, needed):
        if samples >= official:
            raise SystemExit(
                f"even COCO-QA's {official:,} training samples do not split over {clients} clients with "
                f"{needed} each: lower --clients, --samples-per-client, --steps or --warmup"
            )
        samples = min(2 * samples, official)
    return samples


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | str:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else NOT_ON_CPU


def _start(strategy, config: RunConfig, device: torch.device, num_clients: int):
    """`strategy` started as the ServerApp starts it, over the in-process grid of `num_clients`: its Result."""
    grid = InProcessGrid(client_app.app, num_clients, config.to_flower())
    return start(strategy, config, grid, device)


def whole_loop(args, folder: Path, precision: str) -> dict:
    """Samples/s and peak memory of the MPSL steps after the warm-up ones, at `precision`."""
    config = parse_run_config(run_config(args, folder / precision, args.clients, **{"server-precision": precision}))
    device = resolve_device(config)
    _reset_peak(device)
    strategy = TimedMpsl(config, device, args.warmup + args.steps)
    _start(strategy, config, device, args.clients)
    timed = strategy.step_figures[args.warmup :]
    samples, seconds = sum(s for s, _ in timed), sum(t for _, t in timed)
    return {
        "whole_loop_samples_per_s": samples / seconds,
        "whole_loop_step_s": seconds / len(timed),
        "whole_loop_timed_steps": len(timed),
        "whole_loop_samples_per_step": samples / len(timed),
        "whole_loop_peak_gpu_mib": _peak_mib(device),
    }


def server_step_and_bare(args, config: RunConfig, device: torch.device, precision: str) -> dict:
    """`bench_server_step`'s two figures on the whole loop's shapes: `ServerSide` staged as the strategy runs
    it, and the bare timm model, each with its peak memory."""
    (stream_shape,) = new_client_model(config).stream_shapes().values()  # COCO-QA: one early-fused stream
    shapes = argparse.Namespace(
        encoder_size=config.encoder_size,
        finetune=config.finetune_blocks,
        batch=config.batch_size,
        tokens=stream_shape[0],
        steps=args.steps,
        warmup=args.warmup,
        clients=args.clients,
    )
    _reset_peak(device)
    server_s, _ = bench_server_step.ours_step_s(shapes, device, precision, False, staged=True, wire=torch.float32)
    server_peak = _peak_mib(device)
    _reset_peak(device)
    bare_s = bench_server_step.bare_step_s(shapes, device, precision, False)
    return {
        "tokens": shapes.tokens,
        "server_step_samples_per_s": shapes.batch / server_s,
        "server_step_peak_gpu_mib": server_peak,
        "bare_model_samples_per_s": shapes.batch / bare_s,
        "bare_model_peak_gpu_mib": _peak_mib(device),
    }


def fedavg_rounds(args, folder: Path) -> dict:
    """FedAvg over `--fedavg-clients` clients of the same data, `--fedavg-rounds` rounds (each a local epoch over
    every client's partition): each round's time."""
    keys = {"method": "fedavg", "nr-of-epochs": args.fedavg_rounds}
    config = parse_run_config(run_config(args, folder / "fedavg", args.fedavg_clients, **keys))
    device = resolve_device(config)
    _reset_peak(device)
    result = _start(FederatedAveraging(config, device), config, device, args.fedavg_clients)
    rounds = [result.train_metrics_clientapp[r][TRAIN_WALL_S] for r in sorted(result.train_metrics_clientapp)]
    return {
        "fedavg_clients": args.fedavg_clients,
        "fedavg_samples_per_round": config.rehearsal_train_samples,
        "fedavg_rounds_s": rounds,
        "fedavg_round_s": rounds[-1],
        "fedavg_samples_per_s": config.rehearsal_train_samples / rounds[-1],
        "fedavg_peak_gpu_mib": _peak_mib(device),
    }


def _precisions(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in SERVER_PRECISIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"--precisions {text!r}: give a comma-separated list of {', '.join(SERVER_PRECISIONS)}"
        )
    return chosen


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--encoder-size", default="vit-b16", choices=tuple(ENCODER_SIZES))
    parser.add_argument(
        "--finetune", type=int, default=None, help="blocks trained (default: the task's, 6, at most the depth)"
    )
    parser.add_argument("--clients", type=_at_least(1), default=100)
    parser.add_argument("--samples-per-client", type=_at_least(1), default=5, help="per step")
    parser.add_argument("--steps", type=_at_least(1), default=3, help="timed steps (and server-step repeats)")
    parser.add_argument("--warmup", type=_at_least(0), default=1, help="steps run first and left out of the times")
    parser.add_argument("--test-samples", type=_at_least(1), default=50, help="evaluated after the epoch (untimed)")
    parser.add_argument("--precisions", type=_precisions, default="fp32,bf16", help="server-precision values")
    parser.add_argument("--text-encoder", default="bag-of-words", choices=TEXT_ENCODERS)
    parser.add_argument("--fedavg-clients", type=_at_least(1), default=4)
    parser.add_argument("--fedavg-rounds", type=_at_least(1), default=2, help="the last one's time is the figure")
    default_out = Path(os.environ["OUT"]) / FIGURES_FILE if os.environ.get("OUT") else None
    parser.add_argument("--out", type=Path, default=default_out, help="the JSON file of the figures")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Measure; write the JSON (`--out`) after every phase, so that a run cut short keeps what it measured; print
    the table; return the figures."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpu-whole-loop-") as scratch:
        folder = Path(scratch)
        config = parse_run_config(run_config(args, folder / "shapes", args.clients))
        device = resolve_device(config)
        figures = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
            "torch": torch.__version__,
            "dataset": f"{DATASET} (rehearsal)",
            "encoder_size": config.encoder_size,
            "finetune_blocks": config.finetune_blocks,
            "clients": args.clients,
            "samples_per_client": args.samples_per_client,
            "batch": config.batch_size,
            "train_samples": config.rehearsal_train_samples,
            "precisions": {},
        }
        print(f"{figures['device']}: {config.encoder_size}, {args.clients} x {args.samples_per_client}", flush=True)
        for precision in args.precisions:
            figures["precisions"][precision] = {
                **server_step_and_bare(args, config, device, precision),
                **whole_loop(args, folder, precision),
            }
            _write(figures, args.out)
        figures["fedavg"] = fedavg_rounds(args, folder)
        _write(figures, args.out)
    print(table(figures), flush=True)
    if args.out is not None:
        print(f"figures written to {args.out}")
    return figures


def _write(figures: dict, out: Path | None) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")


def _mib(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:,.0f}"


def _rate(value: float) -> str:
    """Samples/s: whole numbers, or three digits below 100 (a CPU's tiny runs)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(figures: dict) -> str:
    """The README's Markdown table of the figures."""
    fedavg = figures["fedavg"]
    lines = [
        f"{figures['device']}, torch {figures['torch']}: {figures['dataset']}, {figures['encoder_size']} (last "
        f"{figures['finetune_blocks']} blocks), {figures['clients']} clients x {figures['samples_per_client']} "
        "samples per step",
        "",
        "| server-precision | whole loop, samples/s | step, s | server step alone | bare timm | "
        "peak GPU MiB: loop / server / bare |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for precision, row in figures["precisions"].items():
        peaks = " / ".join(_mib(row[f"{part}_peak_gpu_mib"]) for part in ("whole_loop", "server_step", "bare_model"))
        lines.append(
            f"| {precision} | {_rate(row['whole_loop_samples_per_s'])} | {row['whole_loop_step_s']:.3f} | "
            f"{_rate(row['server_step_samples_per_s'])} | {_rate(row['bare_model_samples_per_s'])} | {peaks} |"
        )
    rounds = ", ".join(f"{seconds:.2f}" for seconds in fedavg["fedavg_rounds_s"])
    lines += [
        "",
        f"FedAvg, {fedavg['fedavg_clients']} clients on the same device, {fedavg['fedavg_samples_per_round']:,} "
        f"samples a round: round {fedavg['fedavg_round_s']:.2f} s ({_rate(fedavg['fedavg_samples_per_s'])} samples/s; "
        f"every round: {rounds} s), peak GPU MiB {_mib(fedavg['fedavg_peak_gpu_mib'])}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
