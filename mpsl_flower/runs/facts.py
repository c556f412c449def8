"""The run's facts for `run_info.json`, for every method: the federation, the model, the inputs, the software.

What the config does not say but results depend on: how many clients and samples there were,
what each partition holds, which weight files initialised which part, how inputs were drawn,
and the versions of the libraries (and our commit) that produced the run.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from mpsl_flower.config import RunConfig
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.split.model_inputs import load_inputs, text_encoder_used
from mpsl_flower.split.schedule import StepSchedule
from tasks.audio import FBANK_MEAN, FBANK_STD
from tasks.preprocess import truncated_images
from tasks.spec import PIXEL_NORMALISATIONS, RETRIEVAL, RandomAudioPlacement, RandomMoment


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
    return {
        "num_clients": len(partition_sizes),
        "train_samples": sum(partition_sizes.values()),
        "test_samples": len(load_inputs(config).test),
        "partition_sizes": partition_sizes,
        "partition_label_counts": label_counts,
        "client_batch_size": client_batch_size,
        "steps_per_epoch": StepSchedule(config, partition_sizes).num_steps,
        "device": str(device),
        **model_facts(config, model.client, model.server),
        "preprocessing": preprocessing_facts(config),
        "versions": software_versions(),
    }


def preprocessing_facts(config: RunConfig) -> dict:
    """The input choices that shape results (the text encoder is under `weights`), and how many image files
    per split were truncated and loaded all the same, as the original loads them (`tasks.preprocess`)."""
    task = config.task
    facts: dict = {"augmentation": augmentation_facts(task.augmentation, config.test_time_augmentation)}
    data = load_inputs(config)
    truncated = {"train": truncated_images(data.train), "test": truncated_images(data.test)}
    if None not in truncated.values():
        facts["truncated_images"] = truncated
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
