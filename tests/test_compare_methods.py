"""The method comparison's multi-seed summary (`bench/compare_methods.py --seeds`): the README's mean per method
comes from it, so its arithmetic and its refusal of a repeated seed are checked here (the runs it summarises are
the real Flower runs other tests cover)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import compare_methods  # noqa: E402


def test_the_seed_table_gives_each_method_its_accuracy_per_seed_with_mean_and_range(capsys):
    rows_by_seed = {
        seed: [{"method": "mpsl", "test_accuracy": mpsl}, {"method": "fedavg", "test_accuracy": fedavg}]
        for seed, mpsl, fedavg in ((1, 0.6, 0.7), (2, 0.8, 0.7), (3, 0.7, 0.4))
    }
    compare_methods.print_seed_table(rows_by_seed)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| method | seed 1 | seed 2 | seed 3 | mean | min–max |"
    assert lines[2] == "| mpsl | 0.600 | 0.800 | 0.700 | 0.700 | 0.600–0.800 |"
    assert lines[3] == "| fedavg | 0.700 | 0.700 | 0.400 | 0.600 | 0.400–0.700 |"


def test_a_repeated_seed_is_refused_with_the_fix(capsys):
    assert compare_methods.parse_arguments(["--seeds", "5", "6"]).seeds == [5, 6]
    with pytest.raises(SystemExit):
        compare_methods.parse_arguments(["--seeds", "5", "6", "5"])
    assert "--seeds 5 6 5: each seed once" in capsys.readouterr().err
