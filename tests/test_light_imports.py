"""In deployment every message starts a fresh ClientApp process: an MPSL client step must not pay for the
libraries that only the server's encoder, the weight-file readers, the text encoders or the partitioner need."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import open_clip

from mpsl_flower.config import parse_run_config
from mpsl_flower.models.text_encoders import bpe_vocabulary_file
from mpsl_flower.node.device_partition import device_partition

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
HEAVY = ("timm", "torchvision", "open_clip", "transformers", "datasets", "pandas", "flwr_datasets", "matplotlib")


def test_a_client_step_on_the_default_config_imports_no_heavy_library(tmp_path):
    """What a SuperNode's message process does after the first: import the handlers, parse the pyproject's run
    config, map its partition folder, build the client without weight files and send one batch's activations."""
    cache = str(tmp_path / "cache")
    device_partition(parse_run_config({"pre-processors-cache-dir": cache}), 0, 3)  # the first message builds it
    code = (
        "import json, sys, tomllib\n"
        "import mpsl_flower.app.client_handlers\n"
        "from mpsl_flower.config import parse_run_config\n"
        "from mpsl_flower.node.device_partition import device_partition\n"
        "from mpsl_flower.split.client_side import new_client_side\n"
        "from mpsl_flower.split.schedule import step_batch\n"
        f"run_config = tomllib.loads(open({str(PYPROJECT)!r}).read())['tool']['flwr']['app']['config']\n"
        f"config = parse_run_config({{**run_config, 'pre-processors-cache-dir': {cache!r}}})\n"
        "batch = step_batch(device_partition(config, 0, 3), 8, config.seed, partition_id=0, epoch=0, step=0)\n"
        "smashed = new_client_side(config, pretrained=False).smashed(batch.inputs)\n"
        "assert all(len(stream) == 8 for stream in smashed.values()), smashed\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    heavy = json.loads(result.stdout.splitlines()[-1])
    assert heavy == [], f"a client step imported {heavy}"


def test_the_bpe_vocabulary_found_without_open_clip_is_the_one_it_tokenizes_with():
    assert bpe_vocabulary_file() == Path(open_clip.tokenizer.default_bpe())
