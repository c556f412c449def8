"""Defaults a researcher expects: a real dataset named alone runs the original's example command (ViT-B/16,
last 6 blocks, start-lr 1e-4, 15 epochs) and stops when its official weight files are missing; the embedded
tasks keep settings that train on a CPU in minutes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mpsl_flower.app import server_app
from mpsl_flower.config import EMBEDDED_DEFAULTS, PAPER_DEFAULTS, ConfigError, parse_run_config, task_defaults
from mpsl_flower.models.pretrained import META_TRANSFORMER_FILES, missing_weight_files, require_weight_files

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
APP_CONFIG = PYPROJECT["tool"]["flwr"]["app"]["config"]


def _model_settings(config) -> dict:
    return {
        "encoder-size": config.encoder_size,
        "nr-of-last-encoder-blocks-to-finetune": config.finetune_blocks,
        "start-lr": config.learning_rate,
        "nr-of-epochs": config.num_epochs,
    }


@pytest.mark.parametrize("dataset", ["coco-qa", "meld", "ucf101", "flickr30k", "t4sa"])
def test_a_real_dataset_named_alone_gets_the_original_example_command(dataset):
    assert _model_settings(parse_run_config({**APP_CONFIG, "dataset": dataset})) == PAPER_DEFAULTS
    assert PAPER_DEFAULTS == {
        "encoder-size": "vit-b16",
        "nr-of-last-encoder-blocks-to-finetune": 6,
        "start-lr": 1e-4,
        "nr-of-epochs": 15,
    }


@pytest.mark.parametrize("dataset", ["shapes-qa", "shapes-av"])
def test_the_embedded_tasks_keep_their_fast_defaults(dataset):
    assert _model_settings(parse_run_config({**APP_CONFIG, "dataset": dataset})) == EMBEDDED_DEFAULTS
    assert _model_settings(parse_run_config({"dataset": dataset})) == EMBEDDED_DEFAULTS  # a key left out, the same


def test_a_chosen_setting_wins_and_the_blocks_default_never_exceeds_the_encoder():
    config = parse_run_config({**APP_CONFIG, "dataset": "coco-qa", "encoder-size": "tiny-default", "start-lr": 0.01})
    assert (config.encoder_size, config.learning_rate, config.num_epochs) == ("tiny-default", 0.01, 15)
    assert config.finetune_blocks == 4  # the original's 6, but tiny-default has 4 blocks
    assert task_defaults({"dataset": "coco-qa", "encoder-size": "tiny-default", "start-lr": 0.01}) == {
        "nr-of-last-encoder-blocks-to-finetune": 4,
        "nr-of-epochs": 15,
    }


def test_the_pyproject_asks_for_the_task_defaults():
    assert {key: APP_CONFIG[key] for key in PAPER_DEFAULTS} == dict.fromkeys(PAPER_DEFAULTS, "default")


def test_a_bad_value_of_a_task_default_key_is_still_refused():
    with pytest.raises(ConfigError, match="nr-of-epochs='many' must be of type int"):
        parse_run_config({"dataset": "coco-qa", "nr-of-epochs": "many"})


def test_a_real_dataset_without_its_weight_files_stops_naming_each_file(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    config = parse_run_config({"dataset": "coco-qa", "model-weights-dir": str(weights), "output-dir": str(tmp_path)})
    with pytest.raises(ConfigError) as refused:
        server_app.train(config, grid=None)  # before any data is read or any results folder is made
    message = str(refused.value)
    assert "Meta-Transformer_base_patch16_encoder.pth" in message and "drive.google.com" in message
    assert "open_clip" in message and "clip-vit-base-patch16" in message  # image tokenizer, text encoder
    assert "allow-missing-weights=true" in message
    assert not list(tmp_path.glob("mpsl_model-*"))


def test_a_weight_file_in_place_is_no_longer_missing(tmp_path):
    config = parse_run_config({"dataset": "meld", "model-weights-dir": str(tmp_path)})
    before = {entry.names[0] for entry in missing_weight_files(config)}
    assert META_TRANSFORMER_FILES["vit-b16"].names[0] in before
    (tmp_path / META_TRANSFORMER_FILES["vit-b16"].names[0]).write_bytes(b"")  # found by name; read when built
    after = {entry.names[0] for entry in missing_weight_files(config)}
    assert after == before - {META_TRANSFORMER_FILES["vit-b16"].names[0]}
    assert "audioset_10_10_0.4593.pth" in after  # MELD's audio tokenizer


@pytest.mark.parametrize(
    "options",
    [
        {"dataset": "coco-qa", "allow-missing-weights": True},  # asked for the fallbacks
        {"dataset": "coco-qa", "encoder-size": "tiny-default"},  # an encoder without official files
        {"dataset": "shapes-qa", "encoder-size": "vit-b16"},  # an embedded task: nothing to fetch for it
        {"dataset": "meld", "encoder-size": "vit-s16", "text-encoder": "bag-of-words", "allow-missing-weights": True},
    ],
)
def test_runs_that_ask_for_no_official_file_go_on(options):
    require_weight_files(parse_run_config(options))


def test_the_run_log_names_the_settings_nobody_chose(caplog):
    run_config = {**APP_CONFIG, "dataset": "coco-qa", "nr-of-epochs": 2}
    with caplog.at_level("INFO", logger="flwr"):
        server_app.log_task_defaults(parse_run_config(run_config), run_config)
    line = next(record.getMessage() for record in caplog.records if "defaults" in record.getMessage())
    assert "coco-qa's defaults (the original's example command)" in line
    assert "encoder-size='vit-b16'" in line and "start-lr=0.0001" in line and "nr-of-epochs" not in line
