"""The notebooks run through a real Jupyter kernel (nbclient) on the results folders of real short runs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from flwr.app import Context, RecordDict
from nbclient import NotebookClient
from support.inprocess_grid import InProcessGrid

from mpsl_flower.app import client_app, server_app
from mpsl_flower.runs.folder import CONFIG_FILE, METRICS_FILE

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, folder: Path) -> str:
    """Run every cell of a notebook in a fresh kernel (the file itself is left without outputs);
    returns the text of all its outputs."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.fixture(scope="module")
def results_root(tmp_path_factory) -> Path:
    """An MPSL run, a FedAvg run (the newest) and a run still in progress, as `flwr run` leaves them."""
    root = tmp_path_factory.mktemp("results")
    for method in ("mpsl", "fedavg"):
        run_config = {"batch-size": 400, "nr-of-epochs": 2, "device": "cpu", "method": method, "output-dir": str(root)}
        run_config["save-file-name"] = method
        grid = InProcessGrid(client_app.app, 4, run_config)
        server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    unfinished = root / "zz-still-running"
    unfinished.mkdir()
    (unfinished / CONFIG_FILE).write_text(json.dumps({"nr-of-epochs": 5, "method": "mpsl"}))
    (unfinished / METRICS_FILE).write_text(json.dumps({"epoch": 1}) + "\n")
    return root


def _run(root: Path, method: str) -> Path:
    (folder,) = [f for f in root.iterdir() if f.name.startswith(f"{method}-")]
    return folder


def test_the_results_notebook_compares_runs_and_skips_one_in_progress(results_root, monkeypatch):
    folders = [_run(results_root, "mpsl"), _run(results_root, "fedavg"), results_root / "zz-still-running"]
    monkeypatch.setenv("MPSL_RESULTS", ",".join(str(f) for f in folders))
    text = _execute("analyse_results.ipynb", results_root)
    assert "skipped (still in progress or not a results folder)" in text and "zz-still-running" in text
    assert "final test accuracy" in text and "mpsl · " in text and "fedavg · " in text
    assert "no retrieval run: no R@k" in text


def test_the_results_notebook_defaults_to_the_newest_finished_run(results_root, monkeypatch):
    monkeypatch.delenv("MPSL_RESULTS", raising=False)
    monkeypatch.setenv("MPSL_RESULTS_ROOT", str(results_root))
    text = _execute("analyse_results.ipynb", results_root)
    assert "fedavg · " in text and "mpsl · " not in text


def test_the_overhead_notebook_tabulates_methods_and_encoder_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERHEAD_DATASETS", "shapes-qa,shapes-av")
    monkeypatch.setenv("OVERHEAD_ENCODER_SIZE", "tiny-default")
    monkeypatch.setenv("OVERHEAD_FINETUNE_BLOCKS", "2")
    monkeypatch.setenv("SCALING_SIZES", "tiny-default,vit-ti16")
    text = _execute("overhead.ipynb", tmp_path)
    assert "centralized" in text and "fedclip" in text and "crossing_samples_per_client" in text


def test_the_data_notebook_draws_the_label_spread_and_rebuilds_the_partitioner(results_root, monkeypatch):
    monkeypatch.setenv("MPSL_RESULTS", str(_run(results_root, "mpsl")))
    text = _execute("data.ipynb", results_root)
    assert "4 clients, split noniid" in text
    assert "the rebuilt partitioner gives exactly the counts the run recorded" in text
