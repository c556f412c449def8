#!/usr/bin/env bash
# The whole MPSL loop on a GPU machine that has torch, timm and transformers but no flwr (and no Ray, which the
# in-process grid does not need): installs the carried wheels, then runs bench/gpu_whole_loop.py at full size
# (ViT-B/16 at COCO-QA's shape, 100 clients x 5 samples, fp32 and bf16, FedAvg beside) with a time limit.
#
#   bash bench/gpu_whole_loop.sh [WHEELS_DIR] [gpu_whole_loop.py options...]
#
# It moves to the repository's root; WHEELS_DIR (default .whl) is taken from there. Figures go to
# $OUT/gpu_whole_loop.json, the log to $OUT/gpu_whole_loop.log ($OUT: default /tmp/gpu-whole-loop).
# GPU_WHOLE_LOOP_LIMIT_S (default 480) limits the python run, inside the device tool's 600 s a command together
# with the install and the import check before it.
#
# The wheels: what the loop imports that a machine with torch, timm and transformers lacks (the nvidia-h200
# image's package list; checked here by running the bench with only those packages and these importable):
#   flwr 1.42.0, and of its dependencies cryptography (with cffi), pycryptodome, grpcio-health-checking and
#     iterators; the in-process grid needs no Ray, no SQLAlchemy, FastAPI, uvicorn or uv;
#   flwr-datasets (our partitioners) with datasets, dill and multiprocess;
#   PyAV (tasks/media.py imports it); open_clip_torch (the CLIP BPE vocabulary of the bag-of-words text
#     encoder) with ftfy and wcwidth;
#   protobuf and typer at the versions flwr runs with here (flwr wants protobuf<7 and typer<0.21).
# Installed with --no-deps into their own folder, so the image's numpy, pyarrow, grpcio, pandas, ... stay. For
# Python 3.12 (the image's): 16 wheels, 47.9 MB (45.7 MiB; PyAV is 35.8 MB of it), under the device tool's 64 MiB
# with the repository's ~2 MB. Prepare them once, in the repository's root (nothing is fetched on the GPU machine):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     flwr==1.42.0 flwr-datasets==0.6.1 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 av==18.1.0 \
#     cryptography==50.0.2 cffi==2.1.1 pycryptodome==3.24.1 grpcio-health-checking==1.81.1 iterators==0.0.2 \
#     open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 protobuf==6.33.6 typer==0.20.1
#
# then, with the device tool: run(command="bash bench/gpu_whole_loop.sh .whl", carry=[".whl"], timeout_s=600).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=${1:-.whl}
shift || true
SITE=${GPU_WHOLE_LOOP_SITE:-/tmp/gpu-whole-loop-site}
LIMIT_S=${GPU_WHOLE_LOOP_LIMIT_S:-480}
export OUT=${OUT:-/tmp/gpu-whole-loop}
LOG="$OUT/gpu_whole_loop.log"
mkdir -p "$OUT"

if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "no wheels in $WHEELS: prepare them as the top of $0 says" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 HF_HUB_OFFLINE=1

# Every import of the loop and the versions it runs with, before the long run: a missing package fails in seconds.
python3 - <<'EOF' 2>&1 | tee "$LOG"
import sys
from importlib.metadata import PackageNotFoundError, version

sys.path.insert(0, "bench")
import gpu_whole_loop  # noqa: F401

for name in "torch timm transformers numpy pyarrow pandas grpcio protobuf typer click flwr datasets".split():
    try:
        print(f"{name} {version(name)}")
    except PackageNotFoundError:
        print(f"{name} (not installed)")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG" || true

timeout "$LIMIT_S" python3 bench/gpu_whole_loop.py --out "$OUT/gpu_whole_loop.json" "$@" 2>&1 | tee -a "$LOG"
