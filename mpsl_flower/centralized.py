"""Centralized baseline: the same model and trainable set, trained on all training data at once.

Same global batch, optimizer, schedule, evaluation and results format as MPSL. Runs under
`flwr run` with `method='centralized'` (the ServerApp trains alone) or without Flower:

    python -m mpsl_flower.centralized --run-config "nr-of-epochs=3 output-dir='/tmp/results'"
"""

from __future__ import annotations

import argparse
import logging
import tomllib

import torch

from mpsl_flower.config import RunConfig, parse_run_config
from mpsl_flower.local_training import train_local_epoch
from mpsl_flower.model_inputs import load_inputs
from mpsl_flower.results import RunResults, model_facts
from mpsl_flower.split.build import new_full_model, resolve_device
from mpsl_flower.split.epoch import EpochTally, evaluated_record, format_epoch
from mpsl_flower.split.schedule import num_batches, step_lr
from tasks.data import SplitData

logger = logging.getLogger(__name__)


def train_centralized(
    config: RunConfig, train: SplitData, test: SplitData, device: torch.device, results: RunResults | None = None
) -> list[dict]:
    """Train for `nr-of-epochs` with batch `batch-size`; one record per epoch, as MPSL writes them."""
    model = new_full_model(config).to(device)
    if results:
        steps = num_batches(len(train), config.batch_size)
        info = {"num_clients": 1, "train_samples": len(train), "client_batch_size": config.batch_size, "steps_per_epoch": steps}
        results.write_run_info({**info, "device": str(device), **model_facts(config, model.client, model.server)})
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    history = []
    for epoch in range(config.num_epochs):
        tally = EpochTally()
        lr = step_lr(config.learning_rate, config.lr_step_size, config.lr_gamma, epoch)
        stats = train_local_epoch(model, optimizer, train, config.batch_size, lr, config.seed, 0, epoch)
        tally.add_client_loss(stats["loss-sum"], stats["correct"], stats["num-examples"])
        tally.steps = stats["steps"]
        record = evaluated_record(config, epoch, lr, tally, model.client, model.server, test, clients_aggregated=1)
        history.append(record)
        logger.info("[centralized] %s", format_epoch(record, config.num_epochs))
        if results:
            results.log_epoch(record)
            results.save_model(model.server, model.client, epoch + 1)
    return history


def run_centralized(config: RunConfig, run_label: str = "") -> tuple[list[dict], RunResults]:
    """Centralized training on the task's whole training split, results in `output-dir`."""
    data = load_inputs(config)
    results = RunResults(config, run_label)
    return train_centralized(config, data.train, data.test, resolve_device(config), results), results


def main() -> None:
    parser = argparse.ArgumentParser(description="Centralized baseline, without Flower.")
    parser.add_argument("--run-config", default="", help='overrides as in flwr run, e.g. "nr-of-epochs=3 start-lr=0.001"')
    args = parser.parse_args()
    overrides = tomllib.loads("\n".join(args.run_config.split())) if args.run_config else {}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _, results = run_centralized(parse_run_config({**overrides, "method": "centralized"}))
    print(f"results in {results.folder}")


if __name__ == "__main__":
    main()
