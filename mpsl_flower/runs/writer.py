"""One folder per run: resolved config, run facts, per-epoch metrics (JSON lines), saved model.

Metrics are appended and flushed after every epoch and the model is replaced atomically, so
a run that dies keeps everything up to its last finished epoch.

An MPSL run also keeps, replaced atomically after every epoch, its resume state
(`resume_state.pt`: the server's trainable weights, Adam state and the records so far) and a
`resume.toml` holding its whole run config with `resume-from` set to the folder, so one
command continues it: `flwr run . <federation> --run-config <folder>/resume.toml`. The resume
state is written before the epoch's metrics line, and a resumed run rewrites `metrics.jsonl`
from it, so the file never holds an epoch the resume state lacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from mpsl_flower.config import ConfigError, RunConfig
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.split.schedule import steps_per_epoch
from tasks.audio import FBANK_MEAN, FBANK_STD
from tasks.spec import PIXEL_NORMALISATIONS, RETRIEVAL, RandomAudioPlacement, RandomMoment

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
RUN_INFO_FILE = "run_info.json"
RESUME_STATE_FILE = "resume_state.pt"
RESUME_CONFIG_FILE = "resume.toml"
RESUME_FORMAT = 1
# What a resumed run may set differently: where it runs, how long it waits, how far it trains.
RESUMABLE_CHANGES = ("resume-from", "nr-of-epochs", "step-timeout-s", "device")


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
            _write_lines_atomically(self.folder / METRICS_FILE, [json.dumps(r) for r in self.records])
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            suffix = f"-{run_label}" if run_label else ""
            self.folder = _unique(config.resolved_path("output_dir") / f"{config.save_name}-{stamp}{suffix}")
            self.folder.mkdir(parents=True)
        self.model_path = self.folder / f"{config.save_name}.pt"
        _write_json(self.folder / CONFIG_FILE, {**config.to_flower(), "resume-from": ""})
        _write_lines_atomically(
            self.folder / RESUME_CONFIG_FILE, _toml_lines({**config.to_flower(), "resume-from": str(self.folder)})
        )

    @property
    def run_key(self) -> str:
        """Names this run's folder in every node's client-state store (`mpsl_flower.client_store`)."""
        return self.folder.name

    def write_run_info(self, info: dict) -> None:
        """Facts about the run that the config does not say (clients, partition sizes, device...)."""
        _write_json(self.folder / RUN_INFO_FILE, info)

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
            _save_atomically(payload, self.folder / RESUME_STATE_FILE)
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
        _save_atomically(payload, self.model_path)
        if self.config.save_every_epoch:
            _save_atomically(payload, self.model_path.with_name(f"{self.config.save_name}-epoch{epoch}.pt"))
        if last and not self.config.save_final_model:
            self.model_path.unlink()


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


def run_info(
    config: RunConfig,
    model: FullModel,
    partition_sizes: dict[int, int],
    label_counts: dict[int, dict[int, int]],
    client_batch_size: int,
    device: torch.device,
) -> dict:
    """What `run_info.json` holds, for every method: the federation, the model, the software.

    The centralized baseline is one "client" holding the whole training split.
    """
    from mpsl_flower.model_inputs import load_inputs

    return {
        "num_clients": len(partition_sizes),
        "train_samples": sum(partition_sizes.values()),
        "test_samples": len(load_inputs(config).test),
        "partition_sizes": partition_sizes,
        "partition_label_counts": label_counts,
        "client_batch_size": client_batch_size,
        "steps_per_epoch": steps_per_epoch(list(partition_sizes.values()), client_batch_size),
        "device": str(device),
        **model_facts(config, model.client, model.server),
        "preprocessing": preprocessing_facts(config),
        "versions": software_versions(),
    }


def preprocessing_facts(config: RunConfig) -> dict[str, str]:
    """The input choices that shape results (the text encoder is under `weights`)."""
    task = config.task
    facts = {"augmentation": augmentation_facts(task.augmentation, config.test_time_augmentation)}
    if task.image is not None:
        image = task.image
        mean, std = PIXEL_NORMALISATIONS[image.normalisation]
        facts["image"] = f"{image.size} px ({image.resize}), {image.normalisation} mean {mean} and std {std}"
    if task.audio is not None:
        audio = task.audio
        prepared = (
            "waveform zero-padded to the window, not normalised (the original's)"
            if audio.original
            else f"zero-padded, normalised (x - {FBANK_MEAN}) / (2 x {FBANK_STD})"
        )
        facts["audio"] = f"Kaldi fbank, {audio.num_frames} frames x {audio.num_mel_bins} mel bins, {prepared}"
    if task.objective == RETRIEVAL:
        facts["retrieval_scoring"] = config.retrieval_scoring
    return facts


def augmentation_facts(augmentation: RandomMoment | RandomAudioPlacement | None, at_test: bool) -> str:
    """How the inputs are drawn at each step, in words (`tasks.augment`)."""
    if augmentation is None:
        return "none: every input is decoded once into the cache"
    if isinstance(augmentation, RandomMoment):
        drawn = (
            f"every step: one of {augmentation.moments} cached moments per video (frame + centred audio window), "
            f"random 224 crop of {augmentation.stored_height}x{augmentation.stored_width}, horizontal flip, "
            f"brightness {augmentation.brightness} and saturation {augmentation.saturation} jitter"
        )
    else:
        drawn = (
            f"every step: {augmentation.clip_seconds} s of audio (training: from a random start within the first "
            f"{augmentation.stored_seconds} s; test: from the start) at a random offset in "
            f"{augmentation.window_seconds} s"
        )
    return drawn + ("; at test too, drawn anew each evaluation" if at_test else "; test: the deterministic inputs")


def software_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape results, and our git commit (None outside a checkout)."""
    versions: dict[str, str | None] = {"torch": torch.__version__}  # with its build, e.g. 2.9.1+cpu
    for package in ("mpsl-flower", "flwr", "flwr-datasets", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["git_commit"] = _git_commit(Path(__file__).resolve().parent)
    return versions


def _git_commit(folder: Path) -> str | None:
    """HEAD's commit, with `-dirty` when tracked files differ from it; None outside a git checkout.

    Under `flwr run` the app runs from a copy without `.git`, so the field is None there.
    """

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def model_facts(config: RunConfig, client_model: nn.Module, server_model: nn.Module) -> dict:
    """Exact parameter counts and the weights that initialised each part, for `run_info.json`."""
    from mpsl_flower.model_inputs import text_encoder_used

    def count(model: nn.Module, trainable: bool) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad == trainable)

    return {
        "client_trainable_parameters": count(client_model, True),
        "server_trainable_parameters": count(server_model, True),
        "frozen_parameters": count(client_model, False) + count(server_model, False),
        "weights": {
            **client_model.weight_sources,
            **server_model.weight_sources,
            "text encoder": text_encoder_used(config) or "none (no text input)",
        },
    }


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


def _write_lines_atomically(path: Path, lines: list[str]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, path)


def _save_atomically(payload: dict, path: Path) -> None:
    partial = path.with_suffix(".pt.partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
