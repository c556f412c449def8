"""Writes one run's results folder (`runs.folder` names its files) as the run goes.

Metrics are appended and flushed after every epoch and the model is replaced atomically, so
a run that dies keeps everything up to its last finished epoch. An MPSL run's resume state
(`runs.resume`) is written before the epoch's metrics line, and a resumed run rewrites
`metrics.jsonl` from it, so the file never holds an epoch the resume state lacks.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mpsl_flower.config import RunConfig
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.runs.folder import (
    CONFIG_FILE,
    METRICS_FILE,
    RESUME_CONFIG_FILE,
    RESUME_STATE_FILE,
    RUN_INFO_FILE,
    save_checked,
    write_json,
    write_lines,
)
from mpsl_flower.runs.resume import RESUME_FORMAT, read_resume_state


class RunResults:
    """Writes the results of one run under `<output-dir>/<save-file-name>-<timestamp>/`.

    With `resume-from`, it continues that folder instead: `resumed` holds the resume state
    (checked against the config) and the metrics file is cut back to the records it holds.
    """

    def __init__(self, config: RunConfig, run_label: str = "") -> None:
        self.config = config
        self.resumed: dict | None = None
        self.records: list[dict] = []
        if config.resume_from:
            self.folder = Path(config.resume_from).expanduser()
            self.resumed = read_resume_state(self.folder, config)
            self.records = list(self.resumed["records"])
            write_lines(self.folder / METRICS_FILE, [json.dumps(r) for r in self.records])
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            suffix = f"-{run_label}" if run_label else ""
            self.folder = _unique(config.resolved_path("output_dir") / f"{config.save_name}-{stamp}{suffix}")
            self.folder.mkdir(parents=True)
        self.model_path = self.folder / f"{config.save_name}.pt"
        write_json(self.folder / CONFIG_FILE, {**config.to_flower(), "resume-from": ""})
        write_lines(
            self.folder / RESUME_CONFIG_FILE, _toml_lines({**config.to_flower(), "resume-from": str(self.folder)})
        )

    @property
    def run_key(self) -> str:
        """Names this run's folder in every node's client-state store (`node.state_store`)."""
        return self.folder.name

    def write_run_info(self, info: dict) -> None:
        """Facts about the run that the config does not say (clients, partition sizes, device...)."""
        write_json(self.folder / RUN_INFO_FILE, info)

    def log_epoch(self, record: dict, resume_state: dict | None = None) -> None:
        """Append the epoch's record; first, when given, replace the resume state (which holds it too)."""
        if resume_state is not None:
            payload = {
                **resume_state,
                "format": RESUME_FORMAT,
                "epoch": record["epoch"],
                "records": [*self.records, record],
                "config": self.config.to_flower(),
            }
            save_checked(payload, self.folder / RESUME_STATE_FILE)
        with open(self.folder / METRICS_FILE, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        self.records.append(record)

    def save_model(self, model: FullModel, epoch: int, last: bool) -> None:
        """Server side and (aggregated) client side, in one file, replaced atomically after every epoch.

        That file is what survives a crash. As the original's options say: with
        `save-model-after-each-epoch` every epoch also keeps its own `<name>-epoch<k>.pt`; with
        `save-final-model=false` the file is removed once the last epoch is done.
        """
        payload = {
            "epoch": epoch,
            "config": self.config.to_flower(),
            "server": {k: v.detach().cpu() for k, v in model.server.state_dict().items()},
            "client": {k: v.detach().cpu() for k, v in model.client.state_dict().items()},
        }
        save_checked(payload, self.model_path)
        if self.config.save_every_epoch:
            save_checked(payload, self.model_path.with_name(f"{self.config.save_name}-epoch{epoch}.pt"))
        if last and not self.config.save_final_model:
            self.model_path.unlink()


def _unique(folder: Path) -> Path:
    candidate, n = folder, 1
    while candidate.exists():
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    return candidate


def _toml_lines(values: dict[str, bool | float | int | str]) -> list[str]:
    """`key = value` lines that TOML (and so `flwr run --run-config <file>.toml`) reads back to `values`."""

    def literal(value: bool | float | int | str) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return json.dumps(value)  # a JSON string is a valid TOML basic string
        return repr(value)

    return [f"{key} = {literal(value)}" for key, value in values.items()]
