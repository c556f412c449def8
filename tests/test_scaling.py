"""The scaling study: its analytic rows agree with the real models, and it runs on the embedded task."""

from __future__ import annotations

import json

import torch

from mpsl_flower.config import parse_run_config
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner
from mpsl_flower.tools import scaling


def test_a_row_uses_the_bytes_and_parameters_of_the_real_models():
    config = parse_run_config({"dataset": "shapes-av", "nr-of-last-encoder-blocks-to-finetune": 2})
    row = scaling.scaling_row(config, samples_per_client=50)
    runner = InProcessRunner(config, load_inputs(config), 2, torch.device("cpu"))
    assert row["mpsl_mb_per_client_epoch"] * 1e6 == 50 * runner.bytes_per_sample  # from the real stream shapes
    fedavg = new_full_model(parse_run_config({**config.to_flower(), "method": "fedavg"}))
    trained = sum(p.numel() for p in fedavg.parameters() if p.requires_grad)
    assert row["fedavg_mb_per_client_round"] * 1e6 == 2 * trained * 4
    assert row["crossing_samples_per_client"] == trained * 8 / runner.bytes_per_sample
    assert row["fedavg_client_gmacs_per_sample"] > 10 * row["mpsl_client_gmacs_per_sample"] > 0


def test_the_command_tabulates_every_size_and_writes_json(tmp_path, capsys):
    arguments = ["--datasets", "shapes-av", "meld", "--encoder-sizes", "tiny-default", "vit-ti16", "vit-s16"]
    arguments += ["--nr-of-last-encoder-blocks-to-finetune", "2", "--json", str(tmp_path / "s.json")]
    assert scaling.main(arguments) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n| ") == 6 and "| meld | vit-s16 |" in printed
    rows = json.loads((tmp_path / "s.json").read_text())
    meld = {row["encoder_size"]: row for row in rows if row["dataset"] == "meld"}
    assert meld["vit-s16"]["fedavg_mb_per_client_round"] > meld["vit-ti16"]["fedavg_mb_per_client_round"]
    assert meld["vit-s16"]["crossing_samples_per_client"] > meld["vit-ti16"]["crossing_samples_per_client"]


def test_an_encoder_whose_patches_do_not_tile_the_images_is_one_line_and_exit_code_2(capsys):
    assert scaling.main(["--datasets", "shapes-qa", "--encoder-sizes", "vit-h14"]) == 2
    assert "cuts images into 14-pixel patches, which do not tile shapes-qa's 32-pixel images" in capsys.readouterr().err
