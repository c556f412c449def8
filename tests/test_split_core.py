"""The MPSL step in plain PyTorch is exactly one joint step of the full model on the whole batch."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from mpsl_flower.models.factory import new_server_model
from mpsl_flower.models.trainable import trainable_arrays
from mpsl_flower.split.aggregation import weighted_average
from mpsl_flower.split.client_side import loss_gradient, new_client_side
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.optimizer import epoch_lr
from mpsl_flower.split.runner import InProcessRunner
from mpsl_flower.split.schedule import batch_rows, num_batches, steps_per_epoch
from mpsl_flower.split.server_side import new_server_side
from tasks.spec import CLASSIFICATION

CPU = torch.device("cpu")


def _client_batches(config, sizes):
    train = load_inputs(config).train
    starts = np.cumsum([0, *sizes])
    return [train.select(range(a, b)) for a, b in zip(starts[:-1], starts[1:])]


@pytest.mark.parametrize("dataset", ["shapes-qa", "shapes-av"])  # early and late fusion
def test_one_step_equals_a_joint_step_on_the_concatenated_batch(fast_config, dataset):
    """Server gradient = gradient of the batch-mean loss; cut gradient = joint autograd."""
    fast_config = dataclasses.replace(fast_config, dataset=dataset)
    batches = _client_batches(fast_config, [3, 5, 2])
    clients = [new_client_side(fast_config) for _ in batches]
    server = new_server_side(fast_config, CPU)
    joint_client = copy.deepcopy(clients[0].model)
    joint_server = copy.deepcopy(server.model)

    logits = server.forward([c.smashed(b.inputs) for c, b in zip(clients, batches)])
    total = sum(len(b) for b in batches)
    grads = [loss_gradient(CLASSIFICATION, part, b.labels, total)[0] for part, b in zip(logits, batches)]
    cut_grads = server.backward(grads)

    inputs = {k: torch.cat([b.inputs[k] for b in batches]) for k in batches[0].inputs}
    streams = {k: v.detach().requires_grad_(True) for k, v in joint_client(inputs).items()}
    loss = nn.functional.cross_entropy(joint_server(streams), torch.cat([b.labels for b in batches]))
    loss.backward()
    for (name, p), q in zip(server.model.named_parameters(), joint_server.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, msg=name)
    for name, tokens in streams.items():
        torch.testing.assert_close(torch.cat([g[name] for g in cut_grads]), tokens.grad)


@pytest.mark.parametrize("dataset", ["shapes-qa", "shapes-av"])  # early and late fusion
def test_each_clients_tokenizer_gradients_equal_those_of_one_joint_pass(fast_config, dataset):
    """`apply_cut_grad` gives every client exactly its share of the joint gradient: any pairing of
    a sample's cut gradient with another sample's activations, reordering or rescaling fails here.
    Compared before the optimizer step (Adam would hide a scale)."""
    fast_config = dataclasses.replace(fast_config, dataset=dataset)
    batches = _client_batches(fast_config, [3, 5, 2])
    clients = [new_client_side(fast_config) for _ in batches]
    with torch.no_grad():  # make the clients differ, as they do after their first steps
        for i, client in enumerate(clients):
            for p in client.model.parameters():
                p.add_(0.01 * (i + 1) * torch.randn_like(p))
    server = new_server_side(fast_config, CPU)
    joint_clients = [copy.deepcopy(c.model) for c in clients]
    joint_server = copy.deepcopy(server.model)

    logits = server.forward([c.smashed(b.inputs) for c, b in zip(clients, batches)])
    total = sum(len(b) for b in batches)
    grads = [loss_gradient(CLASSIFICATION, part, b.labels, total)[0] for part, b in zip(logits, batches)]
    for client, batch, cut_grad in zip(clients, batches, server.backward(grads)):
        client.apply_cut_grad(batch.inputs, cut_grad, lr=1e-3)

    streams = [model(b.inputs) for model, b in zip(joint_clients, batches)]
    joint_logits = joint_server({name: torch.cat([s[name] for s in streams]) for name in streams[0]})
    nn.functional.cross_entropy(joint_logits, torch.cat([b.labels for b in batches])).backward()
    for i, (client, joint) in enumerate(zip(clients, joint_clients)):
        trained = [(n, p) for n, p in client.model.named_parameters() if p.requires_grad]
        assert trained
        for (name, p), q in zip(trained, [q for q in joint.parameters() if q.requires_grad]):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=f"client {i}: {name}")


def test_a_client_that_drops_after_forward_leaves_the_mean_over_the_others(fast_config):
    batches = _client_batches(fast_config, [4, 4])
    clients = [new_client_side(fast_config) for _ in batches]
    server = new_server_side(fast_config, CPU)
    reference = copy.deepcopy(server.model)

    logits = server.forward([c.smashed(b.inputs) for c, b in zip(clients, batches)])
    grad0 = loss_gradient(CLASSIFICATION, logits[0], batches[0].labels, total_batch=8)[0]
    cut_grads = server.backward([grad0, None])
    assert cut_grads[1] is None

    streams = {k: v.detach() for k, v in clients[0].model(batches[0].inputs).items()}
    nn.functional.cross_entropy(reference(streams), batches[0].labels).backward()
    head_grad = dict(server.model.named_parameters())["head.weight"].grad
    torch.testing.assert_close(head_grad, reference.head.weight.grad)


def test_frozen_blocks_stay_bit_identical_and_fine_tuned_blocks_learn(fast_config):
    runner = InProcessRunner(fast_config, load_inputs(fast_config), num_clients=4, device=CPU)
    before = copy.deepcopy(runner.server.model.encoder.state_dict())
    runner.run_epoch(0)
    after = runner.server.model.encoder.state_dict()
    depth, trained = len(runner.server.model.encoder.blocks), fast_config.finetune_blocks
    for name, tensor in after.items():
        block = int(name.split(".")[1])
        changed = not torch.equal(tensor, before[name])
        assert changed == (block >= depth - trained), name


def test_clients_keep_their_own_tokenizers(fast_config):
    runner = InProcessRunner(fast_config, load_inputs(fast_config), num_clients=4, device=CPU)
    runner.run_epoch(0)
    first, second = (trainable_arrays(c.model) for c in runner.clients[:2])
    assert any(not np.array_equal(first[k], second[k]) for k in first)


def test_restored_client_state_continues_exactly_like_the_live_client(fast_config):
    batch = _client_batches(fast_config, [6])[0]
    live, restored = new_client_side(fast_config), new_client_side(fast_config)
    grad = {k: torch.randn_like(v) for k, v in live.smashed(batch.inputs).items()}
    live.apply_cut_grad(batch.inputs, grad, lr=1e-3)
    restored.load_state_arrays(live.state_arrays())
    for side in (live, restored):
        side.apply_cut_grad(batch.inputs, grad, lr=1e-3)
    for k, v in trainable_arrays(live.model).items():
        np.testing.assert_array_equal(v, trainable_arrays(restored.model)[k])


def test_weighted_average_is_the_sample_weighted_mean():
    states = [{"w": np.array([1.0, 2.0], dtype=np.float32)}, {"w": np.array([4.0, 8.0], dtype=np.float32)}]
    averaged = weighted_average(states, [1, 3])
    np.testing.assert_allclose(averaged["w"], [(1 + 3 * 4) / 4, (2 + 3 * 8) / 4])
    assert averaged["w"].dtype == np.float32


def test_batches_cover_the_partition_once_per_epoch_then_the_client_sits_out():
    rows = [batch_rows(23, 5, seed=1, partition_id=3, epoch=0, step=s) for s in range(num_batches(23, 5))]
    assert sorted(torch.cat(rows).tolist()) == list(range(23))
    assert len(batch_rows(23, 5, seed=1, partition_id=3, epoch=0, step=5)) == 0
    assert not torch.equal(rows[0], batch_rows(23, 5, seed=1, partition_id=3, epoch=1, step=0))
    assert steps_per_epoch([23, 7, 41], 5) == 9


@pytest.mark.parametrize(("epoch", "expected"), [(0, 1e-3), (4, 1e-3), (5, 1e-4), (10, 1e-5)])
def test_epoch_lr_follows_pytorch_steplr(fast_config, epoch, expected):
    config = dataclasses.replace(fast_config, learning_rate=1e-3, lr_step_size=5, lr_gamma=0.1)
    assert epoch_lr(config, epoch) == pytest.approx(expected)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.1)
    for _ in range(epoch):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_a_retrieval_images_captions_go_through_the_encoder_as_one_sequence(fast_config):
    config = dataclasses.replace(fast_config, dataset="flickr30k")
    model = new_server_model(config).eval()
    image, captions = torch.randn(2, 5, 96), torch.randn(2, 5, 96)
    before = model({"image": image, "text": captions})
    changed = captions.clone()
    changed[:, 4] = torch.randn(2, 96)  # only the last caption changes
    after = model({"image": image, "text": changed})
    assert before.shape == (2, 1 + 5, 96)
    assert not torch.allclose(before[:, 1], after[:, 1])  # the first caption attends to the last
