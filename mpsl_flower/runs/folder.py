"""What a results folder holds, by name, and reading the torch files we write there, checked.

One folder per run: the resolved config (`config.json`), the run's facts (`run_info.json`), one
record per epoch (`metrics.jsonl`, see `runs.record`), the saved model (`<save-file-name>.pt`)
and, for MPSL, the resume state (`resume_state.pt`) with the run config that continues it
(`resume.toml`). `runs.writer` writes them, `runs.readers` and `runs.saved_model` read them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mpsl_flower.config import ConfigError
from tasks.atomic import atomic_file

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
RUN_INFO_FILE = "run_info.json"
RESUME_STATE_FILE = "resume_state.pt"
RESUME_CONFIG_FILE = "resume.toml"


def load_checked(path: Path, what: str, keys: tuple[str, ...]) -> dict:
    """A `torch.save`d dict of ours, with `keys`; a damaged or foreign file fails with one clear message."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise ConfigError(f"{path} does not exist: give a results folder, or a .pt file in one") from error
    except Exception as error:  # torch raises several types for a cut or foreign file
        raise ConfigError(
            f"{path} is not a readable {what} (truncated, or not written by mpsl-flower): {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    missing = [key for key in keys if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise ConfigError(f"{path} is not a {what} of mpsl-flower: it lacks {missing}")
    return payload


def save_checked(payload: dict, path: Path) -> None:
    """`torch.save` that a crash never leaves half written: what `load_checked` reads."""
    with atomic_file(path) as partial:
        torch.save(payload, partial)


def write_lines(path: Path, lines: list[str]) -> None:
    """A text file of `lines`, replaced whole."""
    with atomic_file(path) as partial:
        partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_json(path: Path, data: dict) -> None:
    """A JSON file of `data`, sorted and indented for people to read, replaced whole."""
    write_lines(path, [json.dumps(data, indent=2, sort_keys=True)])
