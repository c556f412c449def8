"""The run config: defaults in one place, and one clear message for every bad value."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mpsl_flower.config import TASK_DEFAULT, TASK_DEFAULT_KEYS, ConfigError, RunConfig, parse_run_config
from mpsl_flower.runs.readers import read_metrics
from mpsl_flower.runs.writer import RunResults

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_run_config_equals_the_run_config_defaults():
    app_config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert app_config == {**RunConfig().to_flower(), **dict.fromkeys(TASK_DEFAULT_KEYS, TASK_DEFAULT)}
    assert parse_run_config(app_config) == RunConfig()  # the embedded default task's own values


def test_defaults_parse_to_the_default_config():
    assert parse_run_config({}) == RunConfig()


@pytest.mark.parametrize(
    ("override", "must_mention"),
    [
        ({"dataset": "imagenet"}, ["dataset", "shapes-qa"]),
        ({"method": "fedsgd"}, ["method", "mpsl"]),
        ({"dataset-split-type": "skewed"}, ["dataset-split-type", "iid", "noniid"]),
        ({"encoder-size": "vit-z"}, ["encoder-size", "vit-b16"]),
        ({"nr-of-last-encoder-blocks-to-finetune": 5}, ["nr-of-last-encoder-blocks-to-finetune", "-1..4"]),
        ({"batch-size": 0}, ["batch-size", "at least 1"]),
        ({"start-lr": -1.0}, ["start-lr", "greater than 0"]),
        ({"start-lr": "fast"}, ["start-lr", "float"]),
        ({"torch-data-dir": "/no/such/folder"}, ["torch-data-dir", "does not exist"]),
        ({"output-dir": "relative/results"}, ["output-dir", "absolute"]),
        ({"output-dir": ""}, ["output-dir is empty", "~/mpsl-flower-results"]),
        ({"lr-gamma": 2.0}, ["lr-gamma", "(0, 1]"]),
        ({"batch-sise": 10}, ["batch-sise", "known keys"]),
    ],
)
def test_bad_values_are_refused_with_the_key_and_the_fix(override, must_mention):
    with pytest.raises(ConfigError) as error:
        parse_run_config(override)
    for text in must_mention:
        assert text in str(error.value)


def test_batch_size_below_the_number_of_clients_is_refused():
    config = parse_run_config({"batch-size": 50})
    config.check_num_clients(50)
    with pytest.raises(ConfigError, match=r"batch-size=50 is below the number of clients \(100\)"):
        config.check_num_clients(100)


def test_integer_is_accepted_where_a_float_is_expected():
    assert parse_run_config({"start-lr": 1}).learning_rate == 1.0


def test_client_batch_is_the_global_batch_split_and_rounded_up():
    config = parse_run_config({"batch-size": 500})
    assert config.client_batch_size(100) == 5
    assert config.client_batch_size(3) == 167


def test_a_tilde_in_output_dir_and_in_read_metrics_means_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    results = RunResults(parse_run_config({"output-dir": "~/results"}), run_label="7")
    assert results.folder.parent == tmp_path / "results"
    results.log_epoch({"epoch": 1})
    assert read_metrics(f"~/results/{results.folder.name}") == [{"epoch": 1}]


def test_the_original_scripts_dataset_names_are_aliases():
    assert parse_run_config({"dataset": "t4sa"}).dataset == "b-t4sa"
    assert parse_run_config({"dataset": "coco-retrieval"}).dataset == "mscoco"


def test_minus_one_blocks_means_all_or_none_with_a_frozen_encoder_as_in_the_original():
    assert parse_run_config({"nr-of-last-encoder-blocks-to-finetune": -1}).finetune_blocks == 4
    frozen = {"nr-of-last-encoder-blocks-to-finetune": -1, "freeze-encoder": True}
    assert parse_run_config(frozen).finetune_blocks == 0
    with pytest.raises(ConfigError, match="freeze-encoder=true trains no encoder block, but .*=2; set it to 0 or -1"):
        parse_run_config({"freeze-encoder": True})
