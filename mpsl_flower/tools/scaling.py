"""How MPSL's and FedAvg's client costs scale with the encoder: a table per task shape and encoder size.

    python -m mpsl_flower.tools.scaling [--datasets coco-qa meld] [--encoder-sizes vit-b16 vit-l14] \\
        [--samples-per-client 1000] [--json scaling.json]

For each task shape and encoder size (Ti/S/B/L/H by default), per client: training MACs per
sample (MPSL: tokenizers; FedAvg: the whole model), bytes per sample for MPSL (activations up,
their gradient down, outputs down, their gradient up) against FedAvg's bytes per round (the
trained set down and up), both for one epoch of `--samples-per-client` samples, and the
crossing point: the samples per client above which MPSL sends more than FedAvg.

Next to ours, MPSL's bytes as the original's trainers count them (`--clients` clients, global
`--batch-size`), so our figures line up with the paper's: each client is charged the storage of
the whole batch's outputs (its slice is a view) and a scalar loss going up, but no output gradient,
each tensor with `sys.getsizeof`'s storage overhead, in MiB (its `bytes_to_megabytes`, printed as
"MB"); float32 whatever `--activation-precision` says (the original has no such option).

Everything is analytic (`mpsl_flower.measure.accounting`, held equal to fvcore's count and to the bytes
measured on real messages by the tests), so even ViT-H/14 on a 1,410-token video sample takes
no time; parameter counts come from the real model built on PyTorch's meta device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from mpsl_flower.config import ENCODER_SIZES, ConfigError, RunConfig, parse_run_config
from mpsl_flower.logs import weight_file_notes_silenced
from mpsl_flower.measure.accounting import (
    CLIENT,
    analytic_parts,
    fedavg_bytes_per_client,
    method_costs,
    mpsl_bytes_per_sample,
    original_mpsl_bytes_per_client_epoch,
    original_output_elements,
    stream_tokens,
)
from mpsl_flower.models.factory import new_full_model
from tasks.datasets import REAL_DATASETS

SIZES = ("vit-ti16", "vit-s16", "vit-b16", "vit-l14", "vit-h14")
MIB = 1024 * 1024  # the original's `bytes_to_megabytes`
STORAGE_OVERHEAD = sys.getsizeof(torch.UntypedStorage(0))  # what `sys.getsizeof` adds to a storage's bytes


def trained_parameters(config: RunConfig) -> int:
    """Parameters a FedAvg client trains and sends, counted on the real model built without memory."""
    with torch.device("meta"):  # no weights: nor the embedded pretraining, which would train on the meta device
        model = new_full_model(dataclasses.replace(config, embedded_pretraining=False))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _image_tokens(config: RunConfig) -> int:
    """Tokens of one image (CLS + patches) at `config`'s encoder size; 0 for a task without images."""
    task, patch = config.task, ENCODER_SIZES[config.encoder_size].patch
    return 1 + (task.image.size // patch) ** 2 if task.image else 0


def original_mib_per_client_epoch(config: RunConfig, samples_per_client: int, clients: int) -> dict[str, float]:
    """MPSL's MiB per client per epoch, up and down, as the original's trainers count them
    (`mpsl_flower.measure.accounting.original_mpsl_bytes_per_batch` says what they charge)."""
    size, task = ENCODER_SIZES[config.encoder_size], config.task
    image_tokens = _image_tokens(config)
    counted = original_mpsl_bytes_per_client_epoch(
        samples_per_client,
        config.client_batch_size(clients),
        clients,
        stream_elements=[tokens * size.dim for tokens in stream_tokens(task, image_tokens).values()],
        output_elements=original_output_elements(task, size.dim, image_tokens, config.post_layer_norm),
        client_trains=any(p.trained for p in analytic_parts(config) if p.side == CLIENT),
        storage_overhead=STORAGE_OVERHEAD,
    )
    return {
        "original_mib_up_per_client_epoch": counted.up / MIB,
        "original_mib_down_per_client_epoch": counted.down / MIB,
    }


def scaling_row(config: RunConfig, samples_per_client: int, clients: int = 100) -> dict:
    """One (task, encoder size) row of the table; `clients` share the global batch (the original's counting)."""
    size, task = ENCODER_SIZES[config.encoder_size], config.task
    image_tokens = _image_tokens(config)
    shapes = {name: (tokens, size.dim) for name, tokens in stream_tokens(task, image_tokens).items()}
    output_shape = (1 + task.text.per_sample, size.dim) if task.num_classes == 0 else (task.num_classes,)
    mpsl_sample = mpsl_bytes_per_sample(shapes, output_shape, config.activation_precision)
    fedavg = parse_run_config({**config.to_flower(), "method": "fedavg"})
    fedavg_round = fedavg_bytes_per_client(trained_parameters(fedavg))
    mpsl_macs = method_costs("mpsl", analytic_parts(config))[CLIENT].training
    fedavg_macs = method_costs("fedavg", analytic_parts(fedavg))[CLIENT].training
    return {
        "dataset": config.dataset,
        "encoder_size": config.encoder_size,
        "mpsl_client_gmacs_per_sample": mpsl_macs / 1e9,
        "fedavg_client_gmacs_per_sample": fedavg_macs / 1e9,
        "mpsl_mb_per_client_epoch": mpsl_sample * samples_per_client / 1e6,
        "fedavg_mb_per_client_round": fedavg_round / 1e6,
        "crossing_samples_per_client": fedavg_round / mpsl_sample,
        **original_mib_per_client_epoch(config, samples_per_client, clients),
    }


def render(rows: list[dict], samples_per_client: int, clients: int, batch_size: int) -> str:
    """The Markdown table: our figures, then MPSL's as the original counts them (MiB, up / down)."""
    header = (
        f"| dataset | encoder | MPSL client GMACs/sample | FedAvg client GMACs/sample | "
        f"MPSL MB/client/epoch ({samples_per_client} samples) | FedAvg MB/client/round | MPSL sends more above | "
        f"original's count: MPSL MiB/client/epoch up / down |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['encoder_size']} | {row['mpsl_client_gmacs_per_sample']:.3f} | "
            f"{row['fedavg_client_gmacs_per_sample']:.1f} | {row['mpsl_mb_per_client_epoch']:,.0f} | "
            f"{row['fedavg_mb_per_client_round']:,.0f} | {row['crossing_samples_per_client']:,.0f} samples | "
            f"{row['original_mib_up_per_client_epoch']:,.0f} / {row['original_mib_down_per_client_epoch']:,.0f} |"
        )
    lines += [
        "",
        "MB = 1e6 bytes of real messages (activations up, their gradient down, outputs down, their gradient up).",
        f"Original's count ({clients} clients, global batch {batch_size}): sys.getsizeof of each tensor's storage in "
        "MiB (it prints them as 'MB'); up: activations and a scalar loss; down: the whole batch's outputs "
        "(each client's slice is a view) and, if the client trains, its cut-layer gradient.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpsl_flower.tools.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(REAL_DATASETS))
    parser.add_argument("--encoder-sizes", nargs="+", default=list(SIZES), choices=tuple(ENCODER_SIZES))
    parser.add_argument("--samples-per-client", type=int, default=1000)
    parser.add_argument("--nr-of-last-encoder-blocks-to-finetune", type=int, default=6)
    parser.add_argument("--activation-precision", default="float32")
    parser.add_argument("--clients", type=int, default=100, help="clients sharing the batch (the original's counting)")
    parser.add_argument("--batch-size", type=int, default=RunConfig.batch_size, help="global batch, split over clients")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    arguments = parser.parse_args(argv)
    if arguments.clients < 1:
        parser.error(f"--clients {arguments.clients}: the original's counting needs at least 1 client")
    rows = []
    try:
        for dataset in arguments.datasets:
            for size in arguments.encoder_sizes:
                config = parse_run_config(
                    {
                        "dataset": dataset,
                        "encoder-size": size,
                        "nr-of-last-encoder-blocks-to-finetune": arguments.nr_of_last_encoder_blocks_to_finetune,
                        "activation-precision": arguments.activation_precision,
                        "batch-size": arguments.batch_size,
                    }
                )
                config.check_num_clients(arguments.clients)
                with weight_file_notes_silenced():  # no weight files on purpose
                    rows.append(scaling_row(config, arguments.samples_per_client, arguments.clients))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(render(rows, arguments.samples_per_client, arguments.clients, arguments.batch_size))
    if arguments.json:
        arguments.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
