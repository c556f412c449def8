"""FedCLIP baseline: frozen encoder, per-modality adapters; only adapters, tokenizers and head move."""

from __future__ import annotations

import copy

import torch
from support.inprocess_grid import InProcessGrid
from support.strategy_runs import run_strategy

from mpsl_flower import wire
from mpsl_flower.app import client_app
from mpsl_flower.config import parse_run_config
from mpsl_flower.models.factory import new_full_model, new_server_model
from mpsl_flower.models.server_model import FeatureAdapter
from mpsl_flower.models.trainable import load_trainable


def _fedclip_round(run_config: dict) -> tuple[dict, dict, InProcessGrid]:
    """Full model weights before and after one round (read from the `Result`), and the grid."""
    config = parse_run_config(run_config)
    grid = InProcessGrid(client_app.app, 2, run_config)
    model = new_full_model(config)
    before = copy.deepcopy(model.state_dict())
    _, result = run_strategy(config, grid)
    assert not any(name.startswith("server.encoder.") for name in result.arrays), "a frozen encoder weight trained"
    load_trainable(model, wire.record_to_arrays(result.arrays))
    return before, model.state_dict(), grid


def test_fedclip_leaves_every_encoder_weight_bit_identical(fast_run_config):
    before, after, _ = _fedclip_round({**fast_run_config, "method": "fedclip"})
    encoder = [name for name in after if name.startswith("server.encoder.")]
    assert encoder and all(torch.equal(after[name], before[name]) for name in encoder)
    for trained in (
        "server.adapters.image.attention.0.weight",
        "server.adapters.text.attention.0.weight",
        "server.head.weight",
    ):
        assert not torch.equal(after[trained], before[trained]), trained


def test_only_adapter_tokenizer_and_head_tensors_travel(fast_run_config):
    _, _, grid = _fedclip_round({**fast_run_config, "method": "fedclip"})
    allowed = ("client.", "server.adapters.", "server.head.")
    replies = [r for r in grid.replies_sent if wire.ARRAYS in r.content]
    names = {name for reply in replies for name in reply.content[wire.ARRAYS]}
    assert names and all(name.startswith(allowed) for name in names)
    assert any(name.startswith("server.adapters.text.") for name in names)


def test_adapter_flags_choose_the_modalities(fast_run_config):
    config = parse_run_config({**fast_run_config, "method": "fedclip", "include-text-adapter": False})
    assert set(new_server_model(config).adapters) == {"image"}
    config = parse_run_config({"method": "fedclip", "dataset": "shapes-av", "embedded-pretraining": False})
    assert set(new_server_model(config).adapters) == {
        "image",
        "audio",
    }


def test_adapter_softmax_runs_over_features_so_a_single_token_is_rescaled():
    adapter = FeatureAdapter(8)
    feature = torch.randn(3, 8)
    weights = adapter.attention(feature)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3))
    torch.testing.assert_close(adapter(feature), feature * weights)
    assert not torch.allclose(adapter(feature), feature)


def test_on_retrieval_captions_the_adapter_softmax_runs_over_the_captions_as_the_original():
    adapter = FeatureAdapter(8)
    captions = torch.randn(3, 5, 8)  # [batch, captions, features]
    torch.testing.assert_close(adapter.attention(captions).sum(dim=1), torch.ones(3, 8))


def test_the_adapter_approach_serves_the_centralized_method_too(fast_run_config):
    config = parse_run_config({**fast_run_config, "method": "centralized", "use-adapter-approach": True})
    trainable = {name for name, p in new_full_model(config).named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("client.", "server.adapters.", "server.head.")) for name in trainable)
    assert any(name.startswith("server.adapters.image.") for name in trainable)


def test_a_unified_adapter_is_one_adapter_for_every_modality(fast_run_config):
    config = parse_run_config({**fast_run_config, "method": "fedclip", "include-unified-adapter": True})
    model = new_server_model(config)
    assert set(model.adapters) == {"unified"}
    feature = torch.randn(2, 96)
    torch.testing.assert_close(model._adapted("image", feature), model._adapted("text", feature))
