"""`server-precision` and `compile-server`: the bf16 and compiled server steps give the fp32 step, on a CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mpsl_flower import wire
from mpsl_flower.config import ENCODER_SIZES, ConfigError, parse_run_config
from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.split.server_side import ServerSide
from tasks.registry import TASKS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_server_step  # noqa: E402

TASK = TASKS["shapes-qa"]
LR = 1e-3


def _step(precision: str = "fp32", compile_model: bool = False) -> dict:
    """One server step of a tiny model on fixed activations: logits, cut gradients, weights after the step."""
    torch.manual_seed(0)
    model = ServerModel(TASK, ENCODER_SIZES["tiny-default"], finetune_blocks=2, post_layer_norm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    server = ServerSide(model, LR, torch.device("cpu"), precision, compile_model)
    generator = torch.Generator().manual_seed(1)
    streams = [{"fused": torch.randn(size, 18, 96, generator=generator)} for size in (5, 3)]
    logits = server.forward(streams)
    grads = [torch.randn(part.shape, generator=generator) / 8 for part in logits]
    cut = server.backward(grads)
    return {
        "logits": torch.cat(logits),
        "cut": torch.cat([c["fused"] for c in cut]),
        "update": torch.cat([(v - before[k]).flatten() for k, v in model.state_dict().items()]),
        "server": server,
    }


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_a_bf16_step_gives_the_fp32_step_within_bfloat16s_precision_and_keeps_fp32_master_weights():
    full, half = _step("fp32"), _step("bf16")
    assert half["logits"].dtype == half["cut"].dtype == torch.float32
    torch.testing.assert_close(half["logits"], full["logits"], rtol=0.05, atol=0.05)
    assert _cosine(half["cut"], full["cut"]) > 0.99
    assert _cosine(half["update"], full["update"]) > 0.95  # Adam's step: same direction
    server = half["server"]
    assert all(p.dtype == torch.float32 for p in server.model.parameters())
    assert all(v.dtype == torch.float32 for s in server.optimizer.state.values() for v in s.values() if v.dim())


def test_a_compiled_step_gives_the_eager_step():
    eager, compiled = _step("fp32"), _step("fp32", compile_model=True)
    for key in ("logits", "cut"):
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
    # Adam divides by sqrt(v): where a gradient is ~0, rounding can flip the step's sign (at most 2 x lr).
    assert _cosine(compiled["update"], eager["update"]) > 0.999
    assert (compiled["update"] - eager["update"]).abs().max() <= 2 * LR


def test_the_keys_are_for_mpsls_server_and_take_only_their_choices():
    assert parse_run_config({"server-precision": "bf16", "compile-server": True}).server_precision == "bf16"
    with pytest.raises(ConfigError, match="apply to MPSL's server step; method='fedavg'"):
        parse_run_config({"method": "fedavg", "server-precision": "bf16"})
    with pytest.raises(ConfigError, match="server-precision"):
        parse_run_config({"server-precision": "fp16"})


def test_the_gpu_bench_runs_tiny_on_a_cpu(capsys):
    arguments = ["--encoder-size", "tiny-default", "--finetune", "2", "--batch", "20", "--tokens", "18"]
    rows = bench_server_step.main([*arguments, "--steps", "1", "--warmup", "1", "--precisions", "fp32", "bf16"])
    assert [row["precision"] for row in rows] == ["fp32", "bf16"]
    assert all(row["ours"] > 0 and row["bare"] > 0 for row in rows)
    assert "| fp32 |" in capsys.readouterr().out


def test_16_bit_activations_reach_the_server_as_they_came_and_give_the_upcast_step():
    """bfloat16 off the wire is upcast on the device: exactly the step of the same values in float32."""
    torch.manual_seed(0)
    values = torch.randn(4, 18, 96).bfloat16()
    record = wire.encode_activations({"fused": values.float()}, "bfloat16")
    arrived = wire.read_activations(record, "bfloat16", upcast=False)["fused"]
    assert arrived.dtype == torch.bfloat16 and torch.equal(arrived, values)
    steps = []
    for streams in ([{"fused": arrived}], [{"fused": arrived.float()}]):
        torch.manual_seed(0)
        model = ServerModel(TASK, ENCODER_SIZES["tiny-default"], finetune_blocks=2, post_layer_norm=False)
        server = ServerSide(model, LR, torch.device("cpu"))
        logits = server.forward(streams)
        (cut,) = server.backward([torch.ones_like(logits[0]) / 4])
        steps.append((logits[0], cut["fused"]))
    assert torch.equal(steps[0][0], steps[1][0]) and torch.equal(steps[0][1], steps[1][1])
    assert steps[0][1].dtype == torch.float32
