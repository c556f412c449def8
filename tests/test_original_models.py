"""Where our model and methods follow the original's model code: which checkpoint parts initialise
which task, FedCLIP's adapter on image-text late fusion, the averaged client model's frozen
tokenizers, and the U-shaped step against one joint step of the unsplit model."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from support.official_checkpoints import open_clip_model, write_open_clip
from torch import nn

from mpsl_flower.config import parse_run_config
from mpsl_flower.models.factory import new_client_model, new_server_model
from mpsl_flower.models.full_model import FullModel
from mpsl_flower.models.pretrained import NO_IMAGE_NORM
from mpsl_flower.models.trainable import trainable_arrays
from mpsl_flower.split.aggregation import averaged_client_model, weighted_average
from mpsl_flower.split.client_side import new_client_side
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.optimizer import new_optimizer
from mpsl_flower.split.server_side import new_server_side

CPU = torch.device("cpu")
OPEN_CLIP_B16 = "CLIP-ViT-B-16-laion2B-s34B-b88K"
LATE_IMAGE_TEXT = "late_with_image_cls_and_pooling_mean"


@pytest.fixture(scope="module")
def open_clip_b16(tmp_path_factory):
    """A full ViT-B/16 OpenCLIP file (its blocks can initialise the encoder) in a tokenizer-weights folder."""
    clip = open_clip_model(vision_width=768, vision_layers=12, patch=16, image=224)
    folder = tmp_path_factory.mktemp("tokenizer-weights")
    write_open_clip(folder, clip, OPEN_CLIP_B16)
    return clip.visual, folder


def _b16_config(tmp_path, folder, **overrides):
    return parse_run_config(
        {
            "output-dir": str(tmp_path / "results"),
            "device": "cpu",
            "encoder-size": "vit-b16",
            "tokenizer-weights-cache-dir": str(folder),
            **overrides,
        }
    )


# ---- item 2: which tasks read the vision checkpoint's LayerNorms --------------------------------


def test_meld_keeps_the_default_pre_and_post_ln_with_an_open_clip_file_present(open_clip_b16, tmp_path):
    """The original's MELD model loads AST only: its LayerNorms start at ones and zeros."""
    visual, folder = open_clip_b16
    config = _b16_config(tmp_path, folder, dataset="meld", **{"use-post-layer-norm": True})
    client, server = new_client_model(config), new_server_model(config)
    for norm in (client.pre_norm, server.post_norm):
        torch.testing.assert_close(norm.weight, torch.ones(768))
        torch.testing.assert_close(norm.bias, torch.zeros(768))
    assert client.weight_sources["pre-LayerNorm"] == NO_IMAGE_NORM
    assert server.weight_sources["post-LayerNorm"] == NO_IMAGE_NORM
    assert server.weight_sources["encoder"].endswith("(visual tower)")  # our fallback without Meta-Transformer
    torch.testing.assert_close(
        server.encoder.blocks[0].attn.qkv.weight, visual.transformer.resblocks[0].attn.in_proj_weight
    )


def test_ucf101_has_images_so_its_pre_ln_comes_from_the_open_clip_file(open_clip_b16, tmp_path):
    """The original's action-recognition model loads `ln_pre` with the image tokenizer (UCF101, Kinetics-Sounds)."""
    visual, folder = open_clip_b16
    client = new_client_model(_b16_config(tmp_path, folder, dataset="ucf101"))
    torch.testing.assert_close(client.pre_norm.weight, visual.ln_pre.weight)
    torch.testing.assert_close(client.pre_norm.bias, visual.ln_pre.bias)
    assert client.weight_sources["pre-LayerNorm"] != NO_IMAGE_NORM


# ---- item 12: FedCLIP's text adapter with image-text late fusion -----------------------------------


def _fedclip_server(fast_run_config, **overrides):
    config = parse_run_config({**fast_run_config, "method": "fedclip", **overrides})
    client, server = new_client_model(config), new_server_model(config)
    with torch.no_grad():  # adapters that differ from their init, so an effect would show
        for p in server.adapters.parameters():
            p.add_(torch.randn_like(p))
    inputs = load_inputs(config).train.select(range(6)).inputs
    return server, client(inputs)


@pytest.mark.parametrize("unified", [False, True])
def test_with_late_fusion_the_text_adapter_is_the_identity_as_the_original(fast_run_config, unified):
    """The original adapts the text output as [B, 1, D]: a softmax over one token is 1."""
    overrides = {"fusion-type": LATE_IMAGE_TEXT, "include-unified-adapter": unified}
    server, streams = _fedclip_server(fast_run_config, **overrides)
    image_adapter = server.adapters["unified" if unified else "image"]
    image = image_adapter(server.encoder(streams["image"])[:, 0])
    text = server.encoder(streams["text"])[:, 0]  # no adapter
    expected = server.head(server.post_norm((image + text) / 2))
    logits = server(streams)
    torch.testing.assert_close(logits, expected)
    if not unified:
        logits.sum().backward()
        assert all(torch.count_nonzero(p.grad) == 0 for p in server.adapters["text"].parameters())
        assert any(torch.count_nonzero(p.grad) > 0 for p in server.adapters["image"].parameters())


def test_with_early_fusion_the_text_adapter_rescales_the_text_output(fast_run_config):
    """The original's early fusion adapts the text output [B, D]: the softmax runs over the features."""
    server, streams = _fedclip_server(fast_run_config)
    encoded = server.encoder(streams["fused"])
    text = encoded[:, -1]
    assert not torch.allclose(server.adapters["text"](text), text)
    expected = server.head(
        server.post_norm((server.adapters["image"](encoded[:, 0]) + server.adapters["text"](text)) / 2)
    )
    torch.testing.assert_close(server(streams), expected)


# ---- item 15: the averaged client model keeps the pretrained frozen tokenizer ----------------------


def test_the_averaged_and_resumed_client_models_keep_the_pretrained_frozen_image_tokenizer(open_clip_b16, tmp_path):
    visual, folder = open_clip_b16
    config = _b16_config(tmp_path, folder, **{"trainable-params-key": "classifier_only"})
    initial = new_client_model(config)
    assert not any(p.requires_grad for p in initial.image.parameters())
    torch.testing.assert_close(initial.image.patch_embed.weight, visual.conv1.weight)
    states = []
    for i in range(2):  # two clients that trained their pre-LN apart
        state = trainable_arrays(initial)
        states.append({name: value + np.float32(i + 1) for name, value in state.items()})
    averaged = averaged_client_model(config, states, [1, 3])
    resumed = new_client_side(config, pretrained=False).model  # a client restarting from its node state
    for model in (averaged, resumed):
        for name, tensor in initial.image.state_dict().items():
            torch.testing.assert_close(model.image.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    for name, value in weighted_average(states, [1, 3]).items():
        np.testing.assert_array_equal(trainable_arrays(averaged)[name], value)


# ---- item 16: one U-shaped step is one joint step of the unsplit model ----------------------------


def _u_shaped(fast_config, dataset):
    return dataclasses.replace(fast_config, dataset=dataset, label_privacy="u-shaped")


def _batches(config, sizes):
    train = load_inputs(config).train
    starts = np.cumsum([0, *sizes])
    return [train.select(range(a, b)) for a, b in zip(starts[:-1], starts[1:])]


def _u_shaped_step(config, clients, server, batches):
    """The U-shaped step as the runner takes it; returns each client's head gradients before its tokenizers step."""
    lr, total = config.learning_rate, sum(len(b) for b in batches)
    features = server.forward([c.smashed(b.inputs) for c, b in zip(clients, batches)])
    grads, head_grads = [], []
    for client, part, batch in zip(clients, features, batches):
        grads.append(client.head_gradient(server.model.objective, part, batch.labels, total, lr)[0])
        head_grads.append({n: p.grad.clone() for n, p in client.model.head.named_parameters()})
    for client, batch, cut_grad in zip(clients, batches, server.backward(grads)):
        client.apply_cut_grad(batch.inputs, cut_grad, lr)
    return head_grads


def _joint_step(config, client, server, batches):
    """One Adam step of the unsplit model on the concatenated batch; returns it."""
    joint = FullModel(copy.deepcopy(client.model), copy.deepcopy(server.model))
    optimizer = new_optimizer(joint, config.learning_rate)
    inputs = {k: torch.cat([b.inputs[k] for b in batches]) for k in batches[0].inputs}
    nn.functional.cross_entropy(joint(inputs), torch.cat([b.labels for b in batches])).backward()
    optimizer.step()
    return joint


@pytest.mark.parametrize("dataset", ["shapes-qa", "shapes-av"])  # early and late fusion
def test_one_u_shaped_step_of_one_client_is_one_joint_adam_step(fast_config, dataset):
    """Head, tokenizers and server after the step, and the tokenizers' gradients, equal the joint step's:
    a client head that does not step, or steps on another gradient, fails here."""
    config = _u_shaped(fast_config, dataset)
    batches = _batches(config, [10])
    client, server = new_client_side(config), new_server_side(config, CPU)
    assert isinstance(client.model.head, nn.Linear)
    joint = _joint_step(config, client, server, batches)
    _u_shaped_step(config, [client], server, batches)

    tolerance = {"rtol": 1e-4, "atol": config.learning_rate * 1e-2}  # Adam's first step moves each weight by ~lr
    joint_client = dict(joint.client.named_parameters())
    for name, p in client.model.named_parameters():
        torch.testing.assert_close(p, joint_client[name], **tolerance, msg=name)
        if p.requires_grad and not name.startswith("head."):
            torch.testing.assert_close(p.grad, joint_client[name].grad, rtol=1e-4, atol=1e-7, msg=name)
    joint_server = dict(joint.server.named_parameters())
    for name, p in server.model.named_parameters():
        torch.testing.assert_close(p, joint_server[name], **tolerance, msg=name)


@pytest.mark.parametrize("dataset", ["shapes-qa", "shapes-av"])
def test_u_shaped_gradients_of_several_clients_sum_to_the_joint_gradients(fast_config, dataset):
    """Each client's head and tokenizers get exactly their share of the batch-mean loss's gradient."""
    config = _u_shaped(fast_config, dataset)
    batches = _batches(config, [3, 5, 2])
    clients = [new_client_side(config) for _ in batches]  # identical at the start, as from one checkpoint
    server = new_server_side(config, CPU)
    joint = _joint_step(config, clients[0], server, batches)
    head_grads = _u_shaped_step(config, clients, server, batches)

    for name, p in joint.client.head.named_parameters():
        torch.testing.assert_close(sum(g[name] for g in head_grads), p.grad, rtol=1e-4, atol=1e-7, msg=name)
    joint_client = dict(joint.client.named_parameters())
    trained = [n for n, p in clients[0].model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    assert trained
    for name in trained:
        summed = sum(dict(c.model.named_parameters())[name].grad for c in clients)
        torch.testing.assert_close(summed, joint_client[name].grad, rtol=1e-4, atol=1e-7, msg=name)
    joint_server = dict(joint.server.named_parameters())
    for name, p in server.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, joint_server[name].grad, rtol=1e-4, atol=1e-7, msg=name)
