"""Download, verify and unpack a dataset's official archives into the folder a run reads as `torch-data-dir`.

python -m tasks.download coco-qa --data-dir /data/datasets
"""

from __future__ import annotations

import argparse

from tasks.archives import download
from tasks.datasets import REAL_DATASETS
from tasks.preprocess import user_path


def main() -> None:
    downloadable = sorted(name for name, module in REAL_DATASETS.items() if getattr(module, "ARCHIVES", None))
    parser = argparse.ArgumentParser(description="Download, verify and unpack a dataset's official archives.")
    parser.add_argument("dataset", choices=downloadable)
    parser.add_argument("--data-dir", type=user_path, required=True, help="the folder you pass as torch-data-dir")
    args = parser.parse_args()
    module = REAL_DATASETS[args.dataset]
    download(module.ARCHIVES, args.data_dir.expanduser().resolve())
    print(f"{args.dataset} is in {args.data_dir}; run with torch-data-dir='{args.data_dir}' dataset='{args.dataset}'")


if __name__ == "__main__":
    main()
