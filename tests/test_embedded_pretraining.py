"""The embedded tasks' tiny encoder starts from weights pretrained here (`models.embedded_pretraining`).

The real recipe runs once for the module (about 40 s on 2 cores); the tests of caching and reproducibility use a
smaller recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mpsl_flower.config import parse_run_config
from mpsl_flower.models import embedded_pretraining
from mpsl_flower.models.factory import new_client_model, new_full_model, new_server_model
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.models.pretrained import client_initial_state
from mpsl_flower.split.evaluation import evaluate
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.optimizer import new_optimizer
from mpsl_flower.split.schedule import step_batch
from tasks.objectives import loss_sum_and_correct

PROBE_SAMPLES, PROBE_EPOCHS, PROBE_LR = 1000, 3, 1e-2
MARGIN = 0.15  # what the pretrained features add to a linear probe over random ones, at least


def _clear_caches() -> None:
    embedded_pretraining.pretrained_state.cache_clear()
    client_initial_state.cache_clear()


def _cached_file(config):
    (path,) = (config.resolved_path("cache_dir") / embedded_pretraining.CACHE_FOLDER).glob("*.safetensors")
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The default run's client and server models, from the real recipe, and its config."""
    torch.set_num_threads(1)
    _clear_caches()
    cache = tmp_path_factory.mktemp("pretraining") / "cache"
    config = parse_run_config({"pre-processors-cache-dir": str(cache), "device": "cpu"})
    return config, new_client_model(config), new_server_model(config)


@pytest.fixture
def small_recipe(monkeypatch):
    monkeypatch.setattr(embedded_pretraining, "SAMPLES", 100)
    monkeypatch.setattr(embedded_pretraining, "EPOCHS", 1)
    _clear_caches()
    yield
    _clear_caches()


def test_client_and_server_start_from_one_cached_pretraining_with_a_fresh_head(pretrained):
    config, client, server = pretrained
    path = _cached_file(config)
    state = load_file(str(path))
    for key, value in client.state_dict().items():
        assert torch.equal(value, state[f"client.{key}"]), key
    for key, value in server.encoder.state_dict().items():
        assert torch.equal(value, state[f"server.encoder.{key}"]), key
    assert not [key for key in state if "head" in key]
    unpretrained = dataclasses.replace(config, embedded_pretraining=False)
    random_server, random_client = new_server_model(unpretrained), new_client_model(unpretrained)
    assert torch.equal(server.head.weight, random_server.head.weight)  # the head keeps its seeded random init
    assert not torch.equal(server.encoder.blocks[0].attn.qkv.weight, random_server.encoder.blocks[0].attn.qkv.weight)
    assert not torch.equal(client.image.patch_embed.weight, random_client.image.patch_embed.weight)
    assert str(path) in client.weight_sources["image tokenizer"]
    assert client.weight_sources.keys() == {"image tokenizer", "pre-LayerNorm"}
    assert "embedded pretraining" in server.weight_sources["encoder"]


def _linear_probe_accuracy(config, client, server, data) -> float:
    """Test accuracy after training only the task head on the encoder's features."""
    model = FullModel(client, server)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    server.head.requires_grad_(True)
    optimizer = new_optimizer(model, PROBE_LR)
    train = data.train.select(range(PROBE_SAMPLES))
    for epoch in range(PROBE_EPOCHS):
        for step in range(PROBE_SAMPLES // 100):
            batch = step_batch(train, 100, config.seed, 0, epoch, step)
            optimizer.zero_grad()
            loss_sum, _ = loss_sum_and_correct(server.objective, model(batch.inputs), batch.labels)
            (loss_sum / len(batch)).backward()
            optimizer.step()
    return evaluate(client, server, data.test, 500)["test_accuracy"]


def test_the_pretrained_encoder_carries_the_task(pretrained):
    """A linear probe on the pretrained features answers far better than one on random features."""
    config, client, server = pretrained
    data = load_inputs(config)
    unpretrained = dataclasses.replace(config, embedded_pretraining=False)
    probed = _linear_probe_accuracy(config, copy.deepcopy(client), copy.deepcopy(server), data)
    random = _linear_probe_accuracy(config, new_client_model(unpretrained), new_server_model(unpretrained), data)
    print(f"linear probe: test accuracy {probed:.3f} on the pretrained features, {random:.3f} on random ones")
    assert probed >= random + MARGIN, (probed, random)


def test_a_run_reads_the_cache_instead_of_training_again(pretrained, tmp_path):
    config, _, _ = pretrained
    cache = tmp_path / "cache"
    shutil.copytree(config.resolved_path("cache_dir"), cache)
    copied = dataclasses.replace(config, cache_dir=str(cache))
    path = _cached_file(copied)
    state = load_file(str(path))
    state["client.image.cls_token"] = torch.zeros_like(state["client.image.cls_token"])
    save_file(state, str(path))
    _clear_caches()
    assert torch.count_nonzero(new_client_model(copied).image.cls_token) == 0
    _clear_caches()


def test_the_pretraining_is_reproducible_and_depends_on_the_seed(small_recipe, tmp_path):
    def weights(seed: int, folder: str) -> dict:
        _clear_caches()
        config = parse_run_config({"random-seed": seed, "pre-processors-cache-dir": str(tmp_path / folder)})
        return embedded_pretraining.pretrained_state(config, new_full_model)[0]

    first, again, other = weights(2024, "a"), weights(2024, "b"), weights(7, "c")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    block = "server.encoder.blocks.0.attn.qkv.weight"
    assert not torch.equal(first[block], other[block])


def test_a_damaged_cache_is_trained_again_with_a_warning(small_recipe, tmp_path, caplog):
    config = parse_run_config({"pre-processors-cache-dir": str(tmp_path / "cache")})
    trained, _ = embedded_pretraining.pretrained_state(config, new_full_model)
    path = _cached_file(config)
    path.write_bytes(b"not a safetensors file")
    _clear_caches()
    with caplog.at_level(logging.WARNING, logger=embedded_pretraining.__name__):
        again, source = embedded_pretraining.pretrained_state(config, new_full_model)
    assert f"embedded pretraining cache {path} is unreadable" in caplog.text
    assert source == str(path) and all(torch.equal(trained[key], again[key]) for key in trained)
    assert load_file(str(path)).keys() == trained.keys()  # rebuilt in place


def test_without_a_cache_folder_it_trains_in_the_process(small_recipe):
    config = parse_run_config({"pre-processors-cache-dir": ""})
    state, source = embedded_pretraining.pretrained_state(config, new_full_model)
    assert state and "not cached" in source


@pytest.mark.parametrize(
    ("settings", "applies"),
    [
        ({}, True),
        ({"dataset": "shapes-av"}, True),
        ({"embedded-pretraining": False}, False),
        ({"encoder-size": "vit-ti16"}, False),
        ({"dataset": "coco-qa", "encoder-size": "tiny-default"}, False),
    ],
)
def test_only_the_embedded_tasks_tiny_encoder_is_pretrained(settings, applies):
    assert embedded_pretraining.applies(parse_run_config(settings)) is applies
