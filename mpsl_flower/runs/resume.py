"""Continuing an interrupted MPSL run: its resume state, checked against the run config that resumes it.

After every epoch an MPSL run replaces its `resume_state.pt` (the server's trainable weights,
Adam state and the records so far; each client's state stays on its node) and writes a
`resume.toml` holding its whole run config with `resume-from` set to its folder, so one
command continues it: `flwr run . <federation> --run-config <folder>/resume.toml`.
"""

from __future__ import annotations

from pathlib import Path

from mpsl_flower.config import RESUMABLE_CHANGES, ConfigError, RunConfig
from mpsl_flower.runs.folder import CONFIG_FILE, RESUME_CONFIG_FILE, RESUME_STATE_FILE, load_checked

RESUME_FORMAT = 1


def read_resume_state(folder: Path, config: RunConfig) -> dict:
    """The resume state of the results folder `folder`, checked: readable, complete, and of a run with
    this config (up to `RESUMABLE_CHANGES`) that has epochs left to train."""
    fix = f"resume a run with one command: flwr run . <federation> --run-config {folder / RESUME_CONFIG_FILE}"
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(
            f"resume-from={str(folder)!r} is not a results folder of mpsl-flower (it has no {CONFIG_FILE})"
        )
    if not (folder / RESUME_STATE_FILE).is_file():
        raise ConfigError(
            f"resume-from={str(folder)!r} holds no {RESUME_STATE_FILE}: the run finished no epoch yet, or its "
            "method keeps no resume state (only method='mpsl' does); start it anew"
        )
    state = load_checked(folder / RESUME_STATE_FILE, "resume state", ("format", "epoch", "records", "config"))
    if state["format"] != RESUME_FORMAT:
        raise ConfigError(
            f"{folder / RESUME_STATE_FILE} has format {state['format']}, this version reads {RESUME_FORMAT}"
        )
    saved, current = state["config"], config.to_flower()
    changed = [key for key in current if key not in RESUMABLE_CHANGES and saved.get(key) != current[key]]
    if changed:
        differences = ", ".join(f"{key}: run {saved.get(key)!r}, now {current[key]!r}" for key in changed)
        raise ConfigError(f"resume-from: this run config differs from the interrupted run's ({differences}); {fix}")
    if config.num_epochs <= state["epoch"]:
        raise ConfigError(
            f"resume-from: the run has finished {state['epoch']} of nr-of-epochs={config.num_epochs}; "
            f"to train on, set nr-of-epochs above {state['epoch']}"
        )
    return state
