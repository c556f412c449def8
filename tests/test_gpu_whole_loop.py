"""The GPU bench of the whole MPSL loop (`bench/gpu_whole_loop.py`) runs tiny on a CPU and writes every figure.

No GPU is lent to CI: this keeps the script that a GPU machine runs (`bench/gpu_whole_loop.sh`) working, on
the same code path (the real strategies and ClientApp over the in-process grid) at the smallest size.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_whole_loop  # noqa: E402

TINY = [
    "--encoder-size",
    "tiny-default",
    "--clients",
    "4",
    "--samples-per-client",
    "2",
    "--steps",
    "1",
    "--warmup",
    "1",
    "--test-samples",
    "2",
    "--fedavg-clients",
    "2",
    "--fedavg-rounds",
    "1",
]
PRECISION_FIGURES = (
    "whole_loop_samples_per_s",
    "whole_loop_step_s",
    "whole_loop_timed_steps",
    "whole_loop_samples_per_step",
    "server_step_samples_per_s",
    "bare_model_samples_per_s",
    "tokens",
)
PEAKS = ("whole_loop_peak_gpu_mib", "server_step_peak_gpu_mib", "bare_model_peak_gpu_mib")


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_the_whole_loop_bench_runs_tiny_on_a_cpu_and_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "figures" / "whole_loop.json"
    returned = gpu_whole_loop.main([*TINY, "--precisions", "fp32,bf16", "--out", str(out)])
    figures = json.loads(out.read_text())
    assert figures == json.loads(json.dumps(returned))
    assert figures["device"] == "CPU" and figures["encoder_size"] == "tiny-default"
    assert (figures["clients"], figures["samples_per_client"], figures["batch"]) == (4, 2, 8)
    assert list(figures["precisions"]) == ["fp32", "bf16"]
    for precision, row in figures["precisions"].items():
        assert set(row) == {*PRECISION_FIGURES, *PEAKS}, precision
        assert all(_positive(row[name]) for name in PRECISION_FIGURES), (precision, row)
        assert all(row[name] == "n/a" for name in PEAKS), (precision, row)  # no GPU here
        assert row["tokens"] == 28 * 28 + 2  # COCO-QA: 224-pixel images in 8-pixel patches, the CLS and the text
        assert row["whole_loop_timed_steps"] == 1 and row["whole_loop_samples_per_step"] == 8  # every client, 2 each
    fedavg = figures["fedavg"]
    assert fedavg["fedavg_clients"] == 2 and len(fedavg["fedavg_rounds_s"]) == 1
    assert all(
        _positive(fedavg[name]) for name in ("fedavg_samples_per_round", "fedavg_round_s", "fedavg_samples_per_s")
    )
    assert fedavg["fedavg_peak_gpu_mib"] == "n/a"
    printed = capsys.readouterr().out
    assert "| fp32 |" in printed and "| bf16 |" in printed and f"figures written to {out}" in printed


def test_the_whole_loop_bench_explains_its_options_and_refuses_an_unknown_precision(capsys):
    with pytest.raises(SystemExit) as shown:
        gpu_whole_loop.main(["--help"])
    assert shown.value.code == 0 and "--samples-per-client" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        gpu_whole_loop.main([*TINY, "--precisions", "fp32,fp8"])
    assert "give a comma-separated list of fp32, bf16" in capsys.readouterr().err
