"""One short MPSL run per task family on datasets written in their official layouts.

Image+text early fusion (COCO-QA, B-T4SA), frame+audio late fusion (UCF101, Kinetics-Sounds),
audio+text early fusion (MELD) and retrieval (Flickr30K, MS-COCO): all seven layouts. The
decoding of each dataset's files is tested with its loader.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from flwr.app import Context, RecordDict
from support.fixtures_b_t4sa import write_b_t4sa
from support.fixtures_images import write_coco_qa, write_karpathy
from support.fixtures_meld import write_meld
from support.fixtures_video import write_kinetics400, write_ucf101
from support.inprocess_grid import InProcessGrid
from support.strategy_runs import epoch_records, run_strategy

from mpsl_flower.app import client_app as client_module
from mpsl_flower.app import server_app
from mpsl_flower.config import EMBEDDED_DEFAULTS, parse_run_config
from mpsl_flower.runs.readers import read_metrics
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner

CPU = torch.device("cpu")


def _run_config(tmp_path, dataset: str) -> dict:
    return {
        **EMBEDDED_DEFAULTS,  # the small encoder and its settings, on the real dataset's files
        "dataset": dataset,
        "torch-data-dir": str(tmp_path / "data"),
        "pre-processors-cache-dir": str(tmp_path / "cache"),
        "output-dir": str(tmp_path / "results"),
        "dataset-split-type": "iid",
        "min-partition-size": 1,  # a dozen samples cannot give every client the original's 10
        "batch-size": 4,
        "nr-of-epochs": 1,
        "device": "cpu",
    }


def _one_epoch(run_config: dict, num_clients: int = 2) -> tuple[dict, InProcessRunner]:
    config = parse_run_config(run_config)
    runner = InProcessRunner(config, load_inputs(config), num_clients=num_clients, device=CPU)
    before = {k: v.clone() for k, v in runner.server.model.state_dict().items()}
    record = runner.run_epoch(0)
    changed = [k for k, v in runner.server.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the server model did not train"
    return record, runner


def test_image_text_early_fusion_trains_on_coco_qa(tmp_path):
    write_coco_qa(tmp_path / "data")
    record, runner = _one_epoch(_run_config(tmp_path, "coco-qa"))
    largest = max(len(p) for p in runner.partitions)
    assert (
        record["steps"] == math.ceil(largest / runner.client_batch_size)
        and math.isfinite(record["train_loss"])
        and 0 <= record["test_accuracy"] <= 1
    )
    assert runner.server.model.output_shape == (430,)


def test_frame_audio_late_fusion_trains_on_ucf101(tmp_path):
    write_ucf101(tmp_path / "data")
    record, runner = _one_epoch(_run_config(tmp_path, "ucf101"))
    assert math.isfinite(record["train_loss"]) and 0 <= record["test_accuracy"] <= 1
    assert runner.server.model.output_shape == (51,)
    assert {name: tuple(shape) for name, shape in runner.clients[0].model.stream_shapes().items()} == {
        "image": (1 + 28 * 28, 96),  # 224 px frames, patch 8 of the tiny encoder
        "audio": (1 + 1212, 96),
    }


def test_inputs_drawn_at_every_step_are_drawn_alike_on_the_flower_path_and_the_runner(tmp_path):
    """UCF101's random moments, crops, flips and jitter, in training and at test, follow the step's key:
    the clients, which re-run their forward pass when the cut gradient comes, and the test draws agree."""
    write_ucf101(tmp_path / "data")
    run_config = _run_config(tmp_path, "ucf101")
    config = parse_run_config(run_config)
    strategy, result = run_strategy(config, InProcessGrid(client_module.app, 2, run_config))
    (flower_record,) = epoch_records(result)
    runner_record = InProcessRunner(config, load_inputs(config), num_clients=2, device=CPU).run_epoch(0)
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert flower_record[key] == pytest.approx(runner_record[key], rel=1e-5), key


def test_audio_text_early_fusion_trains_on_meld(tmp_path):
    write_meld(tmp_path / "data")
    record, runner = _one_epoch(_run_config(tmp_path, "meld"))
    assert math.isfinite(record["train_loss"]) and 0 <= record["test_accuracy"] <= 1
    assert runner.clients[0].model.stream_shapes() == {"fused": (1 + 912 + 1, 96)}


def test_retrieval_trains_on_flickr30k_and_reports_recall_both_ways(tmp_path):
    write_karpathy(tmp_path / "data", "flickr30k")
    record, runner = _one_epoch(_run_config(tmp_path, "flickr30k"))
    assert math.isfinite(record["train_loss"]) and record["train_loss"] > 0
    for k in (1, 5, 10):
        for direction in ("image_to_text", "text_to_image"):
            assert 0 <= record[f"test_r{k}_{direction}"] <= 1
    assert record["test_r10_image_to_text"] == 1.0  # 4 test images: every caption is within the top 10
    assert runner.server.model.output_shape == (6, 96)  # image embedding + 5 caption embeddings


def test_retrieval_runs_through_the_flower_path_with_embeddings_on_the_wire(tmp_path):
    write_karpathy(tmp_path / "data", "mscoco")
    run_config = _run_config(tmp_path, "mscoco")
    grid = InProcessGrid(client_module.app, 2, run_config)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    server_app.main(grid, context)
    (folder,) = (tmp_path / "results").iterdir()
    (record,) = read_metrics(folder)
    assert record["clients_aggregated"] == 2 and "test_r1_text_to_image" in record
    info = json.loads((folder / "run_info.json").read_text())
    assert info["weights"]["text encoder"].startswith("bag-of-words")
    assert info["preprocessing"]["retrieval_scoring"] == "dot" and info["test_samples"] == 4
    errors = [r for r in grid.replies_sent if r.has_error()]
    assert not errors, [r.error.reason for r in errors]


@pytest.mark.parametrize("split_type", ["noniid", "iid"])
def test_retrieval_tasks_are_split_evenly_at_random(tmp_path, split_type):
    write_karpathy(tmp_path / "data", "flickr30k", train_images=12)
    run_config = {**_run_config(tmp_path, "flickr30k"), "dataset-split-type": split_type, "batch-size": 6}
    config = parse_run_config(run_config)  # 2 samples per client and step: a batch the 3 clients split evenly
    runner = InProcessRunner(config, load_inputs(config), num_clients=3, device=CPU)
    assert [len(p) for p in runner.partitions] == [4, 4, 4]


@pytest.mark.parametrize("method", ["centralized", "fedclip"])
def test_baselines_train_on_retrieval_with_the_same_loss(tmp_path, method):
    write_karpathy(tmp_path / "data", "flickr30k")
    run_config = {**_run_config(tmp_path, "flickr30k"), "method": method}
    grid = InProcessGrid(client_module.app, 2, run_config)
    server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    (folder,) = (tmp_path / "results").iterdir()
    (record,) = read_metrics(folder)
    assert math.isfinite(record["train_loss"]) and "test_r5_image_to_text" in record


def test_image_text_early_fusion_trains_on_b_t4sa(tmp_path):
    write_b_t4sa(tmp_path / "data")
    record, runner = _one_epoch(_run_config(tmp_path, "b-t4sa"))
    assert math.isfinite(record["train_loss"]) and 0 <= record["test_accuracy"] <= 1
    assert runner.server.model.output_shape == (3,)


def test_frame_audio_late_fusion_trains_on_kinetics_sounds_copied_from_k400_on_first_run(tmp_path):
    write_kinetics400(tmp_path / "data")
    record, runner = _one_epoch(_run_config(tmp_path, "kinetics-sounds"))
    assert math.isfinite(record["train_loss"]) and 0 <= record["test_accuracy"] <= 1
    assert runner.server.model.output_shape == (30,)
    assert (tmp_path / "data" / "kinetics-sounds").is_dir()
