"""What the server can learn of the clients' labels, in the paper's mode and in the U-shaped mode.

The attacks run on the real `train.loss_grad` replies of real runs (real ClientApp, real MPSL
strategy, an in-process grid), and the truth they are scored against is re-derived here from
the seed, as each client draws its batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.fixtures_images import write_karpathy
from support.inprocess_grid import InProcessGrid

from mpsl_flower import wire
from mpsl_flower.app import client_app as client_module
from mpsl_flower.app import server_app
from mpsl_flower.config import EMBEDDED_DEFAULTS, ENCODER_SIZES, ConfigError, parse_run_config
from mpsl_flower.measure.label_attacks import direct_attack, majority_rate
from mpsl_flower.models.trainable import trainable_arrays
from mpsl_flower.node import progress as node_progress
from mpsl_flower.node.partitions import client_partition
from mpsl_flower.runs.readers import read_metrics
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner
from mpsl_flower.split.schedule import step_batch

NUM_CLIENTS = 4
CPU = torch.device("cpu")


def _run(run_config: dict) -> tuple[InProcessGrid, dict, object]:
    """One run as the ServerApp makes it, with a results folder; the grid, its epoch record and its `Result`."""
    grid = InProcessGrid(client_module.app, NUM_CLIENTS, run_config)
    result, results = server_app.train(parse_run_config(run_config), grid, run_label=str(grid.run.run_id))
    (record,) = read_metrics(results.folder)
    return grid, record, result


def _observed_gradients(grid: InProcessGrid, run_config: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every dL/d(server output) row the clients sent, and the true label of each, in the order sent.

    A node's k-th `train.loss_grad` reply belongs to its step k of epoch 0 (no step was dropped)."""
    config = parse_run_config(run_config)
    m = config.client_batch_size(NUM_CLIENTS)
    rows, labels, steps_seen = [], [], {}
    for reply in grid.replies_sent:
        if reply.metadata.message_type != wire.LOSS_GRAD:
            continue
        partition = grid.node_ids.index(reply.metadata.src_node_id)
        step = steps_seen.get(partition, 0)
        steps_seen[partition] = step + 1
        grad = wire.read_activations(reply.content[wire.LOGIT_GRAD], config.activation_precision)[wire.LOGIT_GRAD]
        data = client_partition(config, partition, NUM_CLIENTS)
        rows.append(grad.numpy())
        labels.append(step_batch(data, m, config.seed, partition, 0, step).labels.numpy())
    return np.concatenate(rows), np.concatenate(labels)


def test_the_papers_mode_hands_the_server_every_label(fast_run_config):
    run_config = {**fast_run_config, "label-attack-report": True}
    grid, record, _ = _run(run_config)
    grads, labels = _observed_gradients(grid, run_config)
    assert grads.shape == (len(labels), parse_run_config(run_config).task.num_classes)
    recovered = float((direct_attack(grads) == labels).mean())
    assert recovered >= 0.99 and majority_rate(labels) < 0.5, recovered
    # the run's own report says the same, with the clustering attacks beside it
    assert record["label_attack_direct"] >= 0.99 and record["label_attack_samples"] == min(len(labels), 5000)
    assert record["label_attack_majority"] < 0.5 and 0 <= record["label_attack_norm"] <= 1


def test_the_u_shaped_mode_keeps_the_head_on_the_clients_and_matches_the_runner(fast_run_config):
    run_config = {**fast_run_config, "label-privacy": "u-shaped", "label-attack-report": True}
    config = parse_run_config(run_config)
    grid, record, result = _run(run_config)

    runner = InProcessRunner(config, load_inputs(config), NUM_CLIENTS, device=CPU)
    runner_record = runner.run_epoch(0)
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert record[key] == pytest.approx(runner_record[key], rel=1e-5), key

    final = wire.record_to_arrays(result.arrays)
    assert "client.head.weight" in final and not any(name.startswith("server.head") for name in final)
    for name, value in trainable_arrays(runner.server.model).items():
        np.testing.assert_allclose(final["server." + name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    for node, client in zip(grid.node_ids, runner.clients):
        stored = node_progress.stored_client_state(grid.contexts[node], config)
        for name, value in trainable_arrays(client.model).items():  # tokenizers and each client's own head
            np.testing.assert_allclose(stored[name], value, rtol=1e-5, atol=1e-6, err_msg=name)

    # what the server saw: gradients of the pooled features, not of logits; no direct reading of labels
    grads, labels = _observed_gradients(grid, run_config)
    assert grads.shape == (len(labels), ENCODER_SIZES[config.encoder_size].dim)
    assert "label_attack_direct" not in record
    assert {"label_attack_norm", "label_attack_cosine", "label_attack_majority"} <= set(record)
    assert record["label_attack_majority"] == pytest.approx(majority_rate(labels[:5000]))


def test_retrieval_has_no_head_so_the_u_shaped_mode_trains_exactly_as_the_paper(tmp_path):
    write_karpathy(tmp_path / "data", "flickr30k")
    run_config = {
        **EMBEDDED_DEFAULTS,
        "dataset": "flickr30k",
        "torch-data-dir": str(tmp_path / "data"),
        "pre-processors-cache-dir": str(tmp_path / "cache"),
        "output-dir": str(tmp_path / "results"),
        "dataset-split-type": "iid",
        "batch-size": 4,
        "device": "cpu",
    }
    records = []
    for mode in ("none", "u-shaped"):
        config = parse_run_config({**run_config, "label-privacy": mode})
        records.append(InProcessRunner(config, load_inputs(config), 2, device=CPU).run_epoch(0))
    for key in ("train_loss", "test_loss", "test_r1_image_to_text", "test_r5_text_to_image"):
        assert records[0][key] == records[1][key], key


def test_label_privacy_keys_are_refused_where_they_have_no_meaning():
    with pytest.raises(ConfigError, match="label-privacy and label-attack-report concern MPSL"):
        parse_run_config({"method": "fedavg", "label-privacy": "u-shaped"})
    with pytest.raises(ConfigError, match="flickr30k is a retrieval task"):
        parse_run_config({"dataset": "flickr30k", "label-attack-report": True})
    with pytest.raises(ConfigError, match="label-privacy='two-party' is not supported; allowed values: none, u-shaped"):
        parse_run_config({"label-privacy": "two-party"})
