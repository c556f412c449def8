"""A rehearsal runs a real task's exact shapes on generated data: no download, no weight files.

Every real task's rehearsal is compared with its real loader on the small official-layout datasets of
`tests/support`: the same columns with the same shapes and dtypes, the same step view, the same model
inputs, texts per sample and labels. Its sizes are the official ones unless chosen, its data follows
the seed, every modality carries the label, and the tiny model learns it.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from flwr.app import Context, RecordDict
from support.fixtures_b_t4sa import write_b_t4sa
from support.fixtures_images import write_coco_qa, write_karpathy
from support.fixtures_meld import write_meld
from support.fixtures_video import write_kinetics400, write_ucf101
from support.inprocess_grid import InProcessGrid

from mpsl_flower.app import client_app as client_module
from mpsl_flower.app import server_app
from mpsl_flower.config import EMBEDDED_DEFAULTS, ConfigError, parse_run_config
from mpsl_flower.models.pretrained import require_weight_files
from mpsl_flower.node.device_partition import device_partition
from mpsl_flower.node.partitions import client_partition
from mpsl_flower.runs.readers import read_metrics
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner
from tasks.augment import input_generator
from tasks.data import SplitData, take
from tasks.registry import REAL_DATASETS, configured_task, load_task_data
from tasks.rehearsal import Rehearsal, rehearsal_data
from tasks.spec import CLASSIFICATION

WRITERS = {
    "coco-qa": write_coco_qa,
    "b-t4sa": write_b_t4sa,
    "meld": write_meld,
    "ucf101": write_ucf101,
    "kinetics-sounds": write_kinetics400,
    "flickr30k": lambda data_dir: write_karpathy(data_dir, "flickr30k"),
    "mscoco": lambda data_dir: write_karpathy(data_dir, "mscoco"),
}
# What the loaders' docstrings and the README's dataset table give as each split's size.
DOCUMENTED_SIZES = {
    "coco-qa": (78_736, 38_948),
    "b-t4sa": (376_468, 47_059),  # approximate, see `tasks.rehearsal.OFFICIAL_SIZES`
    "meld": (11_096, 2_610),
    "ucf101": (4_893, 1_943),
    "kinetics-sounds": (15_376, 3_844),
    "flickr30k": (29_000, 1_000),
    "mscoco": (82_783, 5_000),
}
CPU = torch.device("cpu")


def _run_config(tmp_path, dataset: str, **keys) -> dict:
    return {
        **EMBEDDED_DEFAULTS,  # the small encoder, on the real task's shapes
        "dataset": dataset,
        "pre-processors-cache-dir": str(tmp_path / "cache"),
        "output-dir": str(tmp_path / "results"),
        "dataset-split-type": "iid",
        "min-partition-size": 1,
        "batch-size": 4,
        "nr-of-epochs": 1,
        "device": "cpu",
        **keys,
    }


def _rehearsal_config(tmp_path, dataset: str, train: int = 6, test: int = 4, **keys) -> dict:
    keys = {"rehearsal": True, "rehearsal-train-samples": train, "rehearsal-test-samples": test, **keys}
    return _run_config(tmp_path / "rehearsal", dataset, **keys)


def _layout(split: SplitData) -> dict[str, tuple]:
    """Each stored column's row shape and dtype."""
    return {name: (tuple(column.shape[1:]), take(column, [0]).dtype) for name, column in split.inputs.items()}


def _model_inputs(split: SplitData, training: bool) -> dict[str, tuple]:
    """Shape and dtype of each model input of a 2-sample batch, drawn as a training step or an evaluation draws."""
    batch = split.select([1, 0], input_generator(7, 0, 1) if training else None)
    return {name: (tuple(value.shape), value.dtype) for name, value in batch.inputs.items()}


def _view(split: SplitData) -> tuple:
    return (type(split.view), vars(split.view) if split.view is not None else None)


@pytest.mark.parametrize(
    ("dataset", "keys"),
    [
        ("coco-qa", {}),
        ("coco-qa", {"fusion-type": "late_with_image_cls_and_pooling_mean"}),
        ("b-t4sa", {}),
        ("meld", {}),
        ("ucf101", {}),
        ("ucf101", {"audio-time-dimension": "1s"}),
        ("kinetics-sounds", {}),
        ("flickr30k", {}),
        ("mscoco", {}),
    ],
)
def test_a_rehearsal_gives_the_real_loaders_columns_inputs_and_texts(tmp_path, dataset, keys):
    WRITERS[dataset](tmp_path / "data")
    real_config = parse_run_config(_run_config(tmp_path, dataset, **keys, **{"torch-data-dir": str(tmp_path / "data")}))
    rehearsal_config = parse_run_config(_rehearsal_config(tmp_path, dataset, **keys))
    assert rehearsal_config.task == real_config.task
    real, rehearsal = load_inputs(real_config), load_inputs(rehearsal_config)
    for split in ("train", "test"):
        ours, theirs = getattr(rehearsal, split), getattr(real, split)
        assert _layout(ours) == _layout(theirs), split
        assert _view(ours) == _view(theirs), split
        assert _model_inputs(ours, split == "train") == _model_inputs(theirs, split == "train"), split
        assert ours.labels.dtype == theirs.labels.dtype
        assert (ours.texts is None) == (theirs.texts is None)
        if theirs.texts is not None:
            assert {len(texts) for texts in ours.texts} == {len(theirs.texts[0])}  # 5 captions for retrieval
            assert all(isinstance(text, str) and text for texts in ours.texts for text in texts)
        if real_config.task.objective == CLASSIFICATION:
            assert 0 <= int(ours.labels.min()) and int(ours.labels.max()) < real_config.task.num_classes
        else:  # an image's label is its row, as the Karpathy loader gives it
            assert ours.labels.tolist() == theirs.labels.tolist()[: len(ours)] == list(range(len(ours)))


@pytest.mark.parametrize("dataset", list(REAL_DATASETS))
def test_a_rehearsal_without_sample_counts_has_the_official_sizes(dataset):
    data = load_task_data(dataset, 3, task=configured_task(dataset), rehearsal=Rehearsal())
    assert (len(data.train), len(data.test)) == DOCUMENTED_SIZES[dataset]
    if data.train.texts is not None:
        assert len(data.train.texts) == len(data.train)


def test_the_chosen_sample_counts_are_honoured_through_the_run(tmp_path):
    config = parse_run_config(_rehearsal_config(tmp_path, "flickr30k", train=37, test=11))
    data = load_inputs(config)
    assert (len(data.train), len(data.test)) == (37, 11)
    assert data.train.inputs["text_feature"].shape[:2] == (37, 5)  # every caption encoded
    runner = InProcessRunner(config, data, num_clients=2, device=CPU)
    assert sum(len(p) for p in runner.partitions) == 37


def _everything(split: SplitData) -> dict:
    batch = split.select(range(len(split)), input_generator(1, 2, 3))
    return {**batch.inputs, "labels": batch.labels, "texts": split.texts}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


@pytest.mark.parametrize("dataset", ["ucf101", "meld", "mscoco"])
def test_the_seed_fixes_the_data_whatever_order_rows_are_read_in(dataset):
    task, counts = configured_task(dataset), Rehearsal(8, 2)
    first, again, other = (rehearsal_data(task, seed, counts).train for seed in (5, 5, 6))
    assert _same(_everything(first), _everything(again))
    assert not _same(_everything(first), _everything(other))
    for name, column in first.inputs.items():
        together = take(column, [5, 2])
        assert torch.equal(together, torch.cat([take(column, [5]), take(column, [2])])), name


def _features(split: SplitData, modality: str) -> torch.Tensor:
    """A modality's model inputs, drawn as at a training step, reduced to where the concept shows: an
    image's mean row (its band), an fbank's loudest frame per mel bin (its mel band), a text's feature."""
    chunks = []
    for start in range(0, len(split), 100):
        inputs = split.select(range(start, min(start + 100, len(split))), input_generator(0, 1, start)).inputs
        if modality == "image":
            chunks.append(inputs["image"].float().mean(dim=-1).flatten(1))
        elif modality == "fbank":
            chunks.append(inputs["fbank"].amax(dim=-2))
        else:
            chunks.append(inputs["text_feature"].flatten(1))
    return torch.cat(chunks)


@pytest.mark.parametrize(
    ("dataset", "modality", "per_class"),
    [
        ("ucf101", "image", 3),  # frames cropped, flipped and jittered
        ("ucf101", "fbank", 3),
        ("meld", "fbank", 20),  # a clip placed in its window; 20 per class: every class drawn
        ("meld", "text", 10),  # a concept word among filler words
        ("coco-qa", "image", 2),  # 430 classes
    ],
)
def test_every_modality_carries_the_label(tmp_path, dataset, modality, per_class):
    """A nearest-class-mean rule on one modality alone finds most test labels, far above chance."""
    num_classes = configured_task(dataset).num_classes
    config = parse_run_config(_rehearsal_config(tmp_path, dataset, train=per_class * num_classes, test=100))
    data = load_inputs(config)
    train, test = _features(data.train, modality), _features(data.test, modality)
    present = data.train.labels.unique()
    means = torch.stack([train[data.train.labels == label].mean(dim=0) for label in present])
    guessed = present[torch.cdist(test, means).argmin(dim=1)]
    assert (guessed == data.test.labels).float().mean() > 0.6  # chance: 1/7 at most


def test_a_small_rehearsal_draws_its_labels_from_classes_that_a_federation_can_split(tmp_path):
    """COCO-QA's 430 classes over 40 samples would leave most of 10 clients empty under the Dirichlet split."""
    config = parse_run_config(_rehearsal_config(tmp_path, "coco-qa", train=40, test=30, **{"min-partition-size": 2}))
    data = load_inputs(config)
    assert set(data.test.labels.tolist()) <= set(data.train.labels.tolist()) == {0, 1}
    assert all(len(client_partition(config, pid, 10)) >= 2 for pid in range(10))
    large = load_task_data("coco-qa", 0, task=configured_task("coco-qa"), rehearsal=Rehearsal(8600, 10))
    assert len(large.train.labels.unique()) > 400  # from 20 samples per class on, every class is drawn


def test_training_on_a_rehearsal_raises_test_accuracy_above_chance(tmp_path):
    config = parse_run_config(_rehearsal_config(tmp_path, "b-t4sa", train=64, test=30, **{"batch-size": 8}))
    record = InProcessRunner(config, load_inputs(config), num_clients=2, device=CPU).run_epoch(0)
    chance = 1 / config.task.num_classes
    assert record["test_accuracy"] > chance + 0.25, record


def test_a_device_holds_the_rehearsal_partition_a_simulation_gives_it(tmp_path):
    config = parse_run_config(_rehearsal_config(tmp_path, "ucf101", train=9, test=3))
    built, shared = device_partition(config, 1, 3), client_partition(config, 1, 3)
    assert torch.equal(built.labels, shared.labels)
    for name, column in shared.inputs.items():
        assert torch.equal(take(built.inputs[name], range(len(built))), take(column, range(len(shared)))), name


def test_a_rehearsal_runs_through_flower_without_data_or_weight_files(tmp_path, caplog):
    run_config = _rehearsal_config(tmp_path, "meld", train=8, test=4)
    grid = InProcessGrid(client_module.app, 2, run_config)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    server_app.main(grid, context)
    errors = [r for r in grid.replies_sent if r.has_error()]
    assert not errors, [r.error.reason for r in errors]
    (folder,) = (tmp_path / "rehearsal" / "results").iterdir()
    (record,) = read_metrics(folder)
    assert math.isfinite(record["train_loss"]) and 0 <= record["test_accuracy"] <= 1
    # the paper's model (ViT-B/16 and its official files): a rehearsal goes on without them, saying so once
    paper = {"dataset": "coco-qa", "model-weights-dir": str(tmp_path), "tokenizer-weights-cache-dir": str(tmp_path)}
    with pytest.raises(ConfigError, match="allow-missing-weights=true"):
        require_weight_files(parse_run_config(paper))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        require_weight_files(parse_run_config({**paper, "rehearsal": True}))
    (line,) = {r.getMessage() for r in caplog.records if r.name == "mpsl_flower.models.pretrained"}
    assert "rehearsal of coco-qa runs with random weights" in line
    assert "Meta-Transformer_base_patch16_encoder.pth" in line


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"dataset": "coco-qa", "rehearsal-train-samples": 50}, "set rehearsal=true too"),
        ({"dataset": "shapes-qa", "rehearsal": True}, "is generated already"),
    ],
)
def test_a_rehearsal_setting_that_cannot_apply_is_refused_when_the_config_is_read(tmp_path, keys, message):
    with pytest.raises(ConfigError, match=message):
        parse_run_config(_run_config(tmp_path, **keys))
