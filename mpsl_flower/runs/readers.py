"""Reading results folders back: per-epoch records, and which runs have finished (notebooks, benches)."""

from __future__ import annotations

import json
from pathlib import Path

from mpsl_flower.runs.folder import CONFIG_FILE, METRICS_FILE, RUN_INFO_FILE


def read_metrics(folder: str | Path) -> list[dict]:
    """The per-epoch records of a results folder, in order (`~` is expanded)."""
    with open(Path(folder).expanduser() / METRICS_FILE, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def run_is_complete(folder: str | Path) -> bool:
    """Whether the run of a results folder has finished: one metrics record per configured epoch."""
    folder = Path(folder).expanduser()
    try:
        epochs = json.loads((folder / CONFIG_FILE).read_text())["nr-of-epochs"]
        return (folder / RUN_INFO_FILE).is_file() and len(read_metrics(folder)) >= epochs
    except (OSError, ValueError, KeyError):
        return False


def complete_runs(root: str | Path) -> list[Path]:
    """The finished runs under `root`, oldest first (runs still in progress are left out)."""
    root = Path(root).expanduser()
    folders = (
        [folder for folder in root.iterdir() if folder.is_dir() and run_is_complete(folder)] if root.is_dir() else []
    )
    return sorted(folders, key=lambda folder: (folder / METRICS_FILE).stat().st_mtime)
