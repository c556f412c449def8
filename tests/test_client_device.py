"""Where a client computes: the `device` key, whether torch sees CUDA, and the GPU share Ray gave its actor."""

from __future__ import annotations

import dataclasses
import os

import pytest
import ray
import torch
from support.inprocess_grid import InProcessGrid

from mpsl_flower import wire
from mpsl_flower.app import client_app as client_module
from mpsl_flower.config import ConfigError
from mpsl_flower.models.factory import (
    DeviceUnavailable,
    client_device,
    client_device_name,
    new_client_model,
    ray_gpu_ids,
)
from mpsl_flower.split.client_side import loss_gradient, new_client_side
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.optimizer import new_optimizer, set_lr
from strategies.discovery import discover_clients


@pytest.mark.parametrize(
    ("device", "cuda_available", "gpu_ids", "expected"),
    [
        ("cpu", True, ["0"], "cpu"),  # forced, even in an actor with a GPU share
        ("cpu", True, None, "cpu"),
        ("auto", True, ["0"], "cuda"),  # simulation, client-resources-num-gpus > 0
        ("auto", False, [], "cpu"),  # simulation, no share: Ray hides the GPU
        ("auto", True, [], "cpu"),  # no share, GPU visible anyway (RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0)
        ("auto", False, ["0"], "cpu"),  # a share, but a CPU-only torch
        ("auto", True, None, "cuda"),  # a SuperNode's process on a machine with a GPU
        ("auto", False, None, "cpu"),
        ("cuda", True, [], "cuda"),  # forced onto the GPU it sees
        ("cuda", True, None, "cuda"),
    ],
)
def test_the_client_device_follows_the_device_key_then_the_gpu_the_process_holds(
    device, cuda_available, gpu_ids, expected
):
    assert client_device_name(device, cuda_available, gpu_ids) == expected


def test_device_cuda_without_a_gpu_names_the_fix():
    with pytest.raises(DeviceUnavailable, match=r"actor has no GPU.*client-resources-num-gpus=0\.1.*device='auto'"):
        client_device_name("cuda", False, [])
    with pytest.raises(DeviceUnavailable, match=r"torch sees no CUDA device where this client runs.*'auto' or 'cpu'"):
        client_device_name("cuda", False, None)


def test_an_actor_sees_the_gpu_share_ray_gave_it_and_nothing_else():
    """A Ray of one declared GPU (no real one needed): what a ClientApp's actor reads with and without a share."""

    class Probe:  # defined here so that Ray ships it by value
        def sees(self):
            return (
                ray_gpu_ids(),
                os.environ.get("CUDA_VISIBLE_DEVICES"),
                client_device_name("auto", True, ray_gpu_ids()),
            )

    ray.shutdown()  # a simulation earlier in this process leaves its Ray connected
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert ray_gpu_ids() is None  # the driver (where the ServerApp runs) is no actor
        without, with_share = (ray.remote(num_cpus=1, num_gpus=share)(Probe).remote() for share in (0, 0.5))
        assert ray.get(without.sees.remote(), timeout=120) == ([], "", "cpu")
        ids, visible, device = ray.get(with_share.sees.remote(), timeout=120)
        assert ([str(i) for i in ids], visible, device) == (["0"], "0", "cuda")
    finally:
        ray.shutdown()
    assert ray_gpu_ids() is None


def _todays_client_step(config, batch, cut_grad, features, total, lr):
    """The client step as it ran before clients had a device: the model and Adam where they were built."""
    model = new_client_model(config)
    optimizer = new_optimizer(model, config.learning_rate)
    with torch.no_grad():
        smashed = model(batch.inputs)
    optimizer.zero_grad(set_to_none=True)
    head_grad, loss_sum, correct = loss_gradient(config.task.objective, features, batch.labels, total, model.head)
    set_lr(optimizer, lr)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    streams = model(batch.inputs)
    torch.autograd.backward([streams[name] for name in cut_grad], [cut_grad[name] for name in cut_grad])
    set_lr(optimizer, lr)
    optimizer.step()
    return smashed, (head_grad, loss_sum, correct), model, optimizer


def test_a_client_step_on_the_cpu_is_the_step_it_was(fast_config):
    """U-shaped, so that every client computation runs: activations, its head's step, the cut-gradient step."""
    config = dataclasses.replace(fast_config, label_privacy="u-shaped")
    assert client_device(config) == torch.device("cpu")
    batch = load_inputs(config).train.select(range(6))
    client = new_client_side(config)
    smashed = client.smashed(batch.inputs)
    generator = torch.Generator().manual_seed(0)
    cut_grad = {name: torch.randn(stream.shape, generator=generator) for name, stream in smashed.items()}
    features = torch.randn(len(batch), client.model.head.in_features, generator=generator)
    head = client.head_gradient(config.task.objective, features, batch.labels, 10, 1e-3)
    client.apply_cut_grad(batch.inputs, cut_grad, 1e-3)

    before, head_before, model, optimizer = _todays_client_step(config, batch, cut_grad, features, 10, 1e-3)
    assert client.device.type == "cpu" and all(s.device.type == "cpu" for s in smashed.values())
    for name, stream in smashed.items():
        assert torch.equal(stream, before[name]), name
    assert torch.equal(head[0], head_before[0]) and head[1:] == head_before[1:]
    for (name, p), q in zip(client.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    for (index, state), other in zip(
        client.optimizer.state_dict()["state"].items(), optimizer.state_dict()["state"].values(), strict=True
    ):
        assert all(torch.equal(state[k], other[k]) for k in state), index
    replied = wire.record_to_arrays(wire.encode_activations(smashed, config.activation_precision))
    assert {name: array.shape for name, array in replied.items()} == {n: tuple(s.shape) for n, s in smashed.items()}


def test_discovery_learns_each_clients_device_and_stops_a_run_no_client_can_serve(fast_run_config):
    clients = discover_clients(InProcessGrid(client_module.app, 2, fast_run_config), timeout_s=5)
    assert [c.device for c in clients] == ["cpu", "cpu"]
    grid = InProcessGrid(client_module.app, 2, {**fast_run_config, "device": "cuda"})
    if torch.cuda.is_available():  # a machine with a GPU: device='cuda' puts the clients on it
        assert [c.device for c in discover_clients(grid, timeout_s=5)] == ["cuda", "cuda"]
    else:
        with pytest.raises(ConfigError, match=r"partition 0: device='cuda', but torch sees no CUDA device"):
            discover_clients(grid, timeout_s=5)
