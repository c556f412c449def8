"""The scale bench (`bench/bench_scale.py`) runs at the smallest size and measures every process it involves.

Its figures at 10, 100 and 1,000 clients are in the README; this keeps the script working and checks that its
memory sampler sees this process and the Ray processes it starts, and that the floor it divides by is Flower's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_scale  # noqa: E402
from process_memory import THIS_PROCESS  # noqa: E402

CLIENTS, SAMPLES_PER_CLIENT = 2, 20  # 4 steps of 5 samples per client (5 when the draw gives one 21)


def test_the_scale_bench_times_a_step_against_the_floor_and_samples_every_process():
    row = bench_scale.run_size(CLIENTS, SAMPLES_PER_CLIENT, pings=1, unindexed_pings=1)
    assert row["clients"] == CLIENTS and row["steps"] >= SAMPLES_PER_CLIENT // bench_scale.CLIENT_BATCH
    assert row["indexed"] and row["dropped"] == 0
    assert 0 < row["server_s"] < row["step_s"] and row["floor_s"] > 0 and row["floor_unindexed_s"] > 0
    assert row["ratio"] == (row["step_s"] - row["server_s"]) / row["floor_s"]
    memory = row["memory"]
    assert f"| {THIS_PROCESS} | 1 |" in memory and "| Ray workers (ClientApp actors) |" in memory, memory
    assert "| Ray services (raylet, GCS, monitors) |" in memory, memory
    assert 0 < row["total_gib"] < os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
