"""Load a model a run saved (`<save-file-name>.pt` of its results folder) back into a `FullModel`, checked.

A `.pt` from another config, another encoder size or a cut download must fail with one message
that names the problem, not with a torch traceback about a tensor named `server.encoder.blocks.7`.
"""

from __future__ import annotations

import json
from pathlib import Path

from mpsl_flower.config import MODEL_KEYS, ConfigError, RunConfig, parse_run_config
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.runs.folder import CONFIG_FILE, load_checked


def load_saved_model(source: str | Path, config: RunConfig | None = None) -> tuple[FullModel, int]:
    """The model saved in `source` (a results folder, or a `.pt` file written by a run) and its epoch.

    Without `config` the model is built from the config saved with it; with one, that config must
    agree with the saved one on `MODEL_KEYS`. Raises `ConfigError` naming what does not fit.
    """
    source = Path(source).expanduser()
    if source.is_dir():
        saved_config = _folder_config(source)
        path = source / f"{saved_config['save-file-name']}.pt"
    else:
        saved_config, path = None, source
    payload = load_checked(path, "saved model", ("epoch", "server", "client"))
    saved_config = payload.get("config", saved_config)
    if config is None:
        if saved_config is None:
            raise ConfigError(f"{path} holds no run config: pass the run's config to load it")
        config = parse_run_config({**saved_config, "resume-from": ""})
    elif saved_config is not None:
        given = config.to_flower()
        differing = [key for key in MODEL_KEYS if key in saved_config and saved_config[key] != given[key]]
        if differing:
            details = ", ".join(f"{key}={saved_config[key]!r} (given {given[key]!r})" for key in differing)
            raise ConfigError(f"{path} was saved by a run with another model: {details}; load it with its own config")
    model = new_full_model(config)
    for half in ("client", "server"):
        _load_half(getattr(model, half), payload[half], path, half)
    return model, int(payload["epoch"])


def _folder_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{folder} is not a results folder of mpsl-flower: {CONFIG_FILE} unreadable ({error})"
        ) from error


def _load_half(module, saved: dict, path: Path, half: str) -> None:
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise ConfigError(
            f"{path} does not fit this model's {half} half: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(saved with another config?)"
        )
    for name, tensor in saved.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ConfigError(
                f"{path}: {half}.{name} has shape {tuple(tensor.shape)}, this model's is {tuple(expected[name].shape)} "
                "(saved with another encoder size or task?)"
            )
    module.load_state_dict(saved)
