"""Activations on the wire at `activation-precision`, and bytes: measured on the real messages against the
analytic figure of each method (`mpsl_flower.measure.accounting`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.inprocess_grid import InProcessGrid
from support.strategy_runs import epoch_records, run_strategy

from mpsl_flower import wire
from mpsl_flower.app import client_app
from mpsl_flower.config import parse_run_config
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner

PRECISIONS = ("float32", "float16", "bfloat16", "int8")
SHAPE = (3, 7, 16)  # [samples, tokens, width]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_round_trip_stays_within_the_precisions_error_and_takes_its_bytes(precision):
    torch.manual_seed(0)
    tensor = torch.randn(SHAPE) * torch.logspace(-2, 2, SHAPE[-1])  # rows spanning four decades
    record = wire.encode_activations({"fused": tensor}, precision)
    decoded, problem = wire.decode_activations(record, {"fused": SHAPE}, precision, "smashed")
    assert problem is None
    error = (decoded["fused"] - tensor).abs()
    row_peak = tensor.abs().amax(dim=-1, keepdim=True)
    bound = {
        "float32": torch.zeros_like(tensor),
        "float16": tensor.abs() * 2**-11 + 2**-24,
        "bfloat16": tensor.abs() * 2**-8,
        "int8": (row_peak / 127 / 2).expand_as(tensor) * 1.0001,
    }[precision]
    assert (error <= bound).all()
    values = int(np.prod(SHAPE))
    scales = int(np.prod(SHAPE[:-1])) * 4 if precision == "int8" else 0
    itemsize = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}[precision]
    assert sum(a.numpy().nbytes for a in record.values()) == values * itemsize + scales
    assert wire.read_activations(record, precision)["fused"].equal(decoded["fused"])


def test_what_arrives_in_another_coding_or_shape_or_overflowing_is_refused():
    tensor = torch.randn(SHAPE)
    as_float32 = wire.encode_activations({"fused": tensor}, "float32")
    _, problem = wire.decode_activations(as_float32, {"fused": SHAPE}, "int8", "smashed")
    assert problem == "smashed: expected arrays ['fused', 'fused.scale'], got ['fused']"
    _, problem = wire.decode_activations(as_float32, {"fused": SHAPE}, "float16", "smashed")
    assert problem == "smashed: array 'fused' is float32 (3, 7, 16), expected float16 (3, 7, 16) (float16)"
    _, problem = wire.decode_activations(as_float32, {"fused": (2, 7, 16)}, "float32", "smashed")
    assert "expected float32 (2, 7, 16)" in problem
    too_big = wire.encode_activations({"fused": tensor * 1e6}, "float16")  # beyond float16's 65,504
    _, problem = wire.decode_activations(too_big, {"fused": SHAPE}, "float16", "smashed")
    assert problem == "smashed: array 'fused' contains NaN or Inf (at float16)"


@pytest.mark.parametrize("method", ["mpsl", "fedavg", "fedclip"])
def test_measured_bytes_agree_with_the_analytic_figure_within_protocol_overhead(fast_run_config, method):
    run_config = {**fast_run_config, "method": method}
    _, result = run_strategy(parse_run_config(run_config), InProcessGrid(client_app.app, 4, run_config))
    (record,) = epoch_records(result)
    measured = record["bytes_up"] + record["bytes_down"]
    assert record["bytes_analytic"] > 0
    assert 0 <= measured - record["bytes_analytic"] < 0.03 * record["bytes_analytic"]  # record names, headers


@pytest.mark.parametrize("precision", ["float16", "bfloat16", "int8"])
def test_a_lower_precision_run_sends_a_half_or_a_quarter_and_matches_the_in_process_runner(fast_run_config, precision):
    run_config = {**fast_run_config, "activation-precision": precision}
    config = parse_run_config(run_config)
    _, result = run_strategy(config, InProcessGrid(client_app.app, 4, run_config))
    (record,) = epoch_records(result)
    full = InProcessRunner(parse_run_config(fast_run_config), load_inputs(config), 4, torch.device("cpu"))
    full_bytes = full.bytes_per_sample
    runner = InProcessRunner(config, load_inputs(config), 4, torch.device("cpu"))
    ratio = runner.bytes_per_sample / full_bytes
    if precision == "int8":
        assert 0.25 < ratio < 0.27  # a quarter, plus a float32 scale per 96-wide row
    else:
        assert ratio == 0.5
    runner_record = runner.run_epoch(0)
    for key in ("train_loss", "train_accuracy", "test_accuracy", "bytes_analytic"):
        assert record[key] == pytest.approx(runner_record[key], rel=1e-5), key
    assert runner_record["bytes_up"] + runner_record["bytes_down"] == runner_record["bytes_analytic"]


def test_a_reply_at_the_wrong_precision_drops_the_client_with_the_reason(fast_run_config, caplog):
    """One node answers in float32 in an int8 run: its activations are refused, the run goes on."""

    class MixedGrid(InProcessGrid):
        def _handle(self, message):
            reply = super()._handle(message)
            if message.metadata.dst_node_id == self.node_ids[0] and wire.SMASHED in reply.content:
                tensors = wire.read_activations(reply.content[wire.SMASHED], "int8")
                reply.content[wire.SMASHED] = wire.encode_activations(tensors, "float32")
            return reply

    run_config = {**fast_run_config, "activation-precision": "int8"}
    _, result = run_strategy(parse_run_config(run_config), MixedGrid(client_app.app, 4, run_config))
    (record,) = epoch_records(result)
    assert record["dropped_client_steps"] >= 1 and np.isfinite(record["test_loss"])
    assert "expected arrays ['fused', 'fused.scale'], got ['fused']" in caplog.text
