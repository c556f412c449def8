"""A SuperNode holds only its own partition: decoded, text-encoded and cached once, memory-mapped after."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from support.fixtures_images import write_coco_qa

from mpsl_flower import wire
from mpsl_flower.config import EMBEDDED_DEFAULTS, parse_run_config
from mpsl_flower.node.device_partition import MANIFEST, device_partition, partition_folder
from mpsl_flower.node.partitions import client_partition
from mpsl_flower.node.training_data import node_partition
from tasks.data import DiskColumn, SplitData, take

NUM_PARTITIONS = 3


def _columns(data: SplitData) -> dict[str, torch.Tensor]:
    return {name: take(column, range(len(data))) for name, column in data.inputs.items()}


def _assert_same_samples(device: SplitData, shared: SplitData) -> None:
    assert torch.equal(device.labels, shared.labels)
    device_columns, shared_columns = _columns(device), _columns(shared)
    assert device_columns.keys() == shared_columns.keys()
    for name, values in shared_columns.items():
        assert torch.equal(device_columns[name], values), name


@pytest.mark.parametrize("dataset", ["shapes-qa", "shapes-av"])
def test_a_device_holds_the_partition_a_simulation_gives_it_memory_mapped(tmp_path, dataset):
    config = parse_run_config({"dataset": dataset, "pre-processors-cache-dir": str(tmp_path / "cache")})
    for partition in range(NUM_PARTITIONS):
        built = device_partition(config, partition, NUM_PARTITIONS)
        mapped = device_partition(config, partition, NUM_PARTITIONS)
        _assert_same_samples(built, client_partition(config, partition, NUM_PARTITIONS))
        _assert_same_samples(mapped, built)
        folder = partition_folder(config, partition, NUM_PARTITIONS, None)
        for column in mapped.inputs.values():
            assert isinstance(column, DiskColumn)
            assert isinstance(column.array, np.memmap) and str(column.array.filename).startswith(str(folder))
    assert "text_feature" in mapped.inputs if dataset == "shapes-qa" else "fbank" in mapped.inputs


def test_a_device_decodes_only_its_own_samples_of_a_real_dataset(tmp_path):
    write_coco_qa(tmp_path / "data", per_answer=6, test_only_answer=None)
    settings = {
        **EMBEDDED_DEFAULTS,
        "dataset": "coco-qa",
        "torch-data-dir": str(tmp_path / "data"),
        "dataset-split-type": "iid",
        "min-partition-size": 5,
    }
    config = parse_run_config({**settings, "pre-processors-cache-dir": str(tmp_path / "device-cache")})
    own = device_partition(config, 1, NUM_PARTITIONS)
    decoded = list((tmp_path / "device-cache" / "coco-qa").glob("*/labels.npy"))
    assert [len(np.load(path)) for path in decoded] == [len(own)]  # its own share of the 24
    assert 5 <= len(own) < 24
    assert not list((tmp_path / "device-cache" / "text-features").glob("*"))  # no text encoded but its own
    # the machine-wide data, decoded and text-encoded whole, as a simulation has it
    shared_config = parse_run_config({**settings, "pre-processors-cache-dir": str(tmp_path / "server-cache")})
    _assert_same_samples(own, client_partition(shared_config, 1, NUM_PARTITIONS))


def test_a_device_with_its_own_files_takes_their_whole_training_split(tmp_path):
    facts = write_coco_qa(tmp_path / "device-files", per_answer=2, test_only_answer=None)
    config = parse_run_config(
        {
            **EMBEDDED_DEFAULTS,
            "dataset": "coco-qa",
            "pre-processors-cache-dir": str(tmp_path / "cache"),
            "dataset-split-type": "iid",
        }
    )
    own = device_partition(config, 0, 50, own_data_dir=tmp_path / "device-files")
    assert len(own) == facts["train"]
    assert own.inputs["image"].shape == (facts["train"], 3, 224, 224)
    assert own.inputs["text_feature"].shape[:2] == (facts["train"], 1)


def test_an_unusable_partition_folder_is_built_again(tmp_path, caplog):
    config = parse_run_config({"dataset": "shapes-qa", "pre-processors-cache-dir": str(tmp_path / "cache")})
    first = device_partition(config, 0, NUM_PARTITIONS)
    expected = first.labels.clone(), _columns(first)  # read before the mapped file is damaged under it
    folder = partition_folder(config, 0, NUM_PARTITIONS, None)
    manifest = json.loads((folder / MANIFEST).read_text())
    image_file = folder / manifest["columns"]["image"]["file"]
    image_file.unlink()
    image_file.write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING):
        again = device_partition(config, 0, NUM_PARTITIONS)
    assert "is unusable" in caplog.text and "building it again" in caplog.text
    assert torch.equal(again.labels, expected[0])
    assert all(torch.equal(values, expected[1][name]) for name, values in _columns(again).items())


def test_a_changed_setting_builds_another_partition_folder(tmp_path):
    base = {"dataset": "shapes-qa", "pre-processors-cache-dir": str(tmp_path / "cache")}
    folders = {
        partition_folder(parse_run_config({**base, **change}), 0, NUM_PARTITIONS, None)
        for change in (
            {},
            {"random-seed": 7},
            {"dirichlet-alpha": 0.1},
            {"dataset-split-type": "iid"},
            {"min-partition-size": 3},
            {"text-encoder": "token-ids"},
        )
    }
    assert len(folders) == 6


def _node_context(config: dict, node_config: dict) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=config)


def test_a_data_dir_in_the_node_config_of_a_generated_task_is_refused(tmp_path):
    run_config = {"pre-processors-cache-dir": str(tmp_path / "cache")}
    context = _node_context(run_config, {wire.PARTITION_ID: 0, wire.NUM_PARTITIONS: 2, "data-dir": str(tmp_path)})
    with pytest.raises(ValueError, match="remove data-dir from the node config"):
        node_partition(context.node_config, parse_run_config(run_config))


def test_a_supernode_without_its_partition_in_the_node_config_is_told_how_to_start(tmp_path):
    context = _node_context({}, {wire.PARTITION_ID: 0})
    with pytest.raises(ValueError, match="--node-config 'partition-id=<i> num-partitions=<n>'"):
        node_partition(context.node_config, parse_run_config({}))


def test_a_partition_id_outside_num_partitions_is_refused_before_anything_is_built(tmp_path):
    config = parse_run_config({"pre-processors-cache-dir": str(tmp_path / "cache")})
    with pytest.raises(ValueError, match=r"partition-id=3 is outside 0\.\.2 \(num-partitions=3\)"):
        device_partition(config, 3, NUM_PARTITIONS)
    assert not (tmp_path / "cache").exists()
