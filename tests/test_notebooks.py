"""The analysis notebook runs on the results folder of a real (short) run."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
from flwr.app import Context, RecordDict
from inprocess_grid import InProcessGrid

from mpsl_flower import client_app, server_app

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analyse_results.ipynb"


def test_analysis_notebook_runs_on_a_results_folder(fast_run_config, tmp_path, monkeypatch):
    grid = InProcessGrid(client_app.app, 4, fast_run_config)
    server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=fast_run_config))
    (folder,) = (tmp_path / "results").iterdir()
    monkeypatch.setenv("MPSL_RESULTS", str(folder))
    matplotlib.use("Agg")
    namespace: dict = {}
    for cell in json.loads(NOTEBOOK.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), str(NOTEBOOK), "exec"), namespace)
    assert list(namespace["summary"].index) == [1]
    assert 0.0 <= namespace["summary"].loc[1, "test_accuracy"] <= 1.0
    assert namespace["per_client_mb"].loc[1, "bytes_up_mb_per_client"] > 0
