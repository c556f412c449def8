"""How large a message Flower 1.42's Deployment Engine carries, and what each size costs: time and memory.

    python bench/deployment_large_message.py [--sizes-mb 30,300,1000] [--ttl-s 600]

MPSL's largest messages are activations and their gradients: samples per client x tokens x width x 4 bytes
(COCO-QA at ViT-B/16, 50 samples: 50 x 198 x 768 x 4 = 30.4 MB each way). This bench sends one float32 array of
each size in `--sizes-mb` from a ServerApp to one SuperNode of the README's secure federation on loopback (TLS,
SuperNode authentication: `tests/support/flwr_harness.py`), whose ClientApp answers with an array of the same size
(other values: Flower stores objects by their hash, so an echo would not be sent again). One `flwr run` per size;
it prints the round trip, the ClientApp's handling time and the peak memory of each process role
(`rehearse_vit_b16.MemorySampler`). The arrays are random: equal 5 MB chunks of zeros would be stored once.

This file is also the bench's app: `flwr run` gets a folder holding only a pyproject.toml and a copy of this
module, whose `server` and `client` are the apps (the harness imports stay inside `main`, which only the command
line runs). Figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

MB = 1_000_000
MESSAGE_TYPE = "query.large"
PYPROJECT = """[project]
name = "large-message"
version = "0.1.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "mpsl-flower"

[tool.flwr.app.components]
serverapp = "large_message:server"
clientapp = "large_message:client"

[tool.flwr.app.config]
size-mb = 30
ttl-s = 600.0
out-file = ""
"""

server = ServerApp()
client = ClientApp()


def random_array(size_mb: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(int(size_mb * MB) // 4, dtype=np.float32)


@server.main()
def _serve(grid: Grid, context: Context) -> None:
    size_mb, ttl_s = float(context.run_config["size-mb"]), float(context.run_config["ttl-s"])
    deadline = time.monotonic() + 120
    while not grid.get_node_ids() and time.monotonic() < deadline:
        time.sleep(0.5)
    (node, *_) = grid.get_node_ids()
    content = RecordDict({"data": ArrayRecord({"x": Array(random_array(size_mb, 0))})})
    started = time.perf_counter()
    (reply,) = grid.send_and_receive([Message(content, dst_node_id=node, message_type=MESSAGE_TYPE, ttl=ttl_s)])
    seconds = time.perf_counter() - started
    figures = {"size_mb": size_mb, "round_trip_s": seconds}
    if reply.has_error():
        figures["error"] = reply.error.reason
    else:
        back = reply.content["data"]["x"].numpy()
        figures["reply_mb"] = back.nbytes / MB
        figures["client_s"] = float(reply.content["figures"]["client_s"])
    with open(str(context.run_config["out-file"]), "w", encoding="utf-8") as stream:
        json.dump(figures, stream)


@client.query("large")
def _answer(message: Message, context: Context) -> Message:
    started = time.perf_counter()
    received = message.content["data"]["x"].numpy()
    answer = random_array(received.nbytes / MB, 1)
    content = RecordDict(
        {
            "data": ArrayRecord({"x": Array(answer)}),
            "figures": ConfigRecord({"client_s": time.perf_counter() - started}),
        }
    )
    return Message(content, reply_to=message)


def bench_app(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    shutil.copy2(Path(__file__), folder / "large_message.py")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="30,300,1000", help="array sizes, MB, comma-separated")
    parser.add_argument("--ttl-s", type=float, default=600.0, help="the message's TTL (MPSL: step-timeout-s)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs; the SuperLink's database)")
    arguments = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(repo / "tests"), str(repo / "bench")]  # the harness; the memory sampler
    from rehearse_vit_b16 import MemorySampler
    from support.flwr_harness import TOKEN_VAR, secure_federation, start_flwr_run, wait_until_finished

    work = Path(tempfile.mkdtemp(prefix="mpsl-large-message-"))
    app = bench_app(work / "app")
    out = work / "figures.json"
    with secure_federation(work, devices=1) as federation:
        for size_mb in (float(s) for s in arguments.sizes_mb.split(",")):
            out.unlink(missing_ok=True)
            config = f"size-mb={size_mb} ttl-s={arguments.ttl_s} out-file='{out}'"
            with MemorySampler(federation.env[TOKEN_VAR]) as sampler:
                run = start_flwr_run(federation.env, work / f"flwr-run-{size_mb:g}.log", config, app, None)
                run.wait(arguments.ttl_s + 300)
                statuses, _ = wait_until_finished(federation.env)
            figures = json.loads(out.read_text()) if out.is_file() else {"error": "no figures: see the logs"}
            print(f"\n{size_mb:g} MB each way: run {statuses}, {json.dumps(figures)}")
            print(sampler.table())
    if arguments.keep:
        print(f"logs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)  # the SuperLink's database holds every message: 2 GB for 1 GB


if __name__ == "__main__":
    main()
