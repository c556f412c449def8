"""A SuperNode's own training data: its partition only, built once, memory-mapped by every later message.

In deployment Flower starts a fresh ClientApp process for every message, and a device may be a
small board. Taking the partition out of the whole task's data (`node.partitions.client_partition`,
right for a simulation whose virtual clients share one machine) would make each message parse,
decode and text-encode the whole dataset. A device instead:

1. finds its own training samples from the labels in the dataset's annotation lists (no media
   decoded) with the seeded partitioner: the rows the server and a simulation give it (when a
   sample is unreadable, the server's partitions, made over the decoded samples, shift by it;
   the skip is logged where it happens);
2. decodes only those samples, into the preprocessing cache on its own disk (`tasks.preprocess`),
   and encodes only their texts with the frozen text encoder;
3. writes its partition folder: the columns held in memory (text features, embedded tasks' inputs)
   as .npy files, references to the decoded columns, the labels, and a manifest written last.

Every later message reads the manifest and memory-maps the columns: no annotation parsing, no
decoding, no text encoder. With `data-dir` in the node config the device's own files, in the
task's official layout, are its partition: all of their training split. A rehearsal
(`rehearsal=true`) generates the task's data as a simulation does, and writes the device's
partition of it into the folder, as decoding would.

The folder is keyed by everything that chooses the samples and their features (task, seed,
split type, alpha, partition, data folder, text encoder); a changed setting builds a new folder.
Files changed in place under the same folder are not noticed: delete `<cache>/partitions` then.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from mpsl_flower.config import RunConfig
from mpsl_flower.models.pretrained import resolve_text_encoder
from mpsl_flower.split.model_inputs import rehearsal_of
from tasks.atomic import atomic_folder
from tasks.augment import step_view
from tasks.data import DiskColumn, SplitData

# Building a partition needs the partitioner, the decoders and the text encoder; the messages after
# it need none of them, so `_build` imports them (each message is a fresh process in deployment).

logger = logging.getLogger(__name__)
PARTITIONS_DIR = "partitions"
NODE_DATA_DIR = "data-dir"  # node config: the device's own files, in the task's layout
MANIFEST = "partition.json"
FORMAT = 1  # bump when the folder's layout changes, to build every partition anew
LABELS_FILE = "labels.npy"
WRITE_ROWS = 256  # a generated column is written this many rows at a time


def device_partition(
    config: RunConfig, partition_id: int, num_partitions: int, own_data_dir: Path | None = None
) -> SplitData:
    """This device's training samples (`own_data_dir`: all of its own files'), from its partition folder,
    which the first call builds."""
    check_partition_id(partition_id, num_partitions)
    folder = partition_folder(config, partition_id, num_partitions, own_data_dir)
    if (folder / MANIFEST).is_file():
        try:
            return _load(folder, config)
        except (OSError, ValueError, KeyError) as error:  # a damaged folder, or a decoded cache deleted since
            logger.warning("partition folder %s is unusable (%s); building it again", folder, error)
    logger.info("partition %d of %d: building its data in %s", partition_id, num_partitions, folder)
    _save(_build(config, partition_id, num_partitions, own_data_dir), folder)
    return _load(folder, config)


def check_partition_id(partition_id: int, num_partitions: int) -> None:
    """Refuse a partition id outside the node config's `num-partitions`, naming both."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition-id={partition_id} is outside 0..{num_partitions - 1} (num-partitions={num_partitions})"
        )


def partition_folder(config: RunConfig, partition_id: int, num_partitions: int, own_data_dir: Path | None) -> Path:
    """Where the partition is kept: under `pre-processors-cache-dir`, keyed by what chooses its samples."""
    cache_dir = config.resolved_path("cache_dir")
    if cache_dir is None:
        raise ValueError(
            "a device keeps its partition in pre-processors-cache-dir: set it to a folder on the device with free space"
        )
    data_dir = own_data_dir or config.resolved_path("data_dir")
    encoder = resolve_text_encoder(config).identity if config.task.text is not None else None
    identity = (
        FORMAT,
        config.task,
        config.seed,
        config.split_type,
        config.dirichlet_alpha,
        config.min_partition_size,
        str(data_dir),
        encoder,
    )
    rehearsal = rehearsal_of(config)
    if rehearsal is not None:  # kept out of the real partitions' identity, so their folders keep their names
        identity += (rehearsal,)
    if config.embedded_train_samples:  # likewise: the default task's folders keep theirs
        identity += (("embedded-train-samples", config.embedded_train_samples),)
    key = hashlib.sha256(repr(identity).encode()).hexdigest()[:20]
    return cache_dir / PARTITIONS_DIR / f"{config.dataset}-{key}" / f"partition-{partition_id}-of-{num_partitions}"


def _build(config: RunConfig, partition_id: int, num_partitions: int, own_data_dir: Path | None) -> SplitData:
    """The partition's samples with their text features, decoding and encoding only them; with `own_data_dir`,
    the training split found there."""
    from mpsl_flower.split.model_inputs import encode_per_sample
    from tasks.preprocess import build_split
    from tasks.registry import EMBEDDED, listed_samples, load_task_data

    task, seed, cache_dir = config.task, config.seed, config.resolved_path("cache_dir")
    rehearsal = rehearsal_of(config)
    if own_data_dir is not None and (config.dataset in EMBEDDED or rehearsal is not None):
        generated, other_run = (
            ("generated for the rehearsal", "rehearsal=false") if rehearsal else ("generated", "a real dataset")
        )
        raise ValueError(
            f"node config {NODE_DATA_DIR}='{own_data_dir}', but dataset={config.dataset!r} is {generated}, not read "
            f"from files: remove {NODE_DATA_DIR} from the node config, or run {other_run}"
        )
    if own_data_dir is not None:
        own = load_task_data(config.dataset, seed, own_data_dir, cache_dir, task).train
    elif config.dataset in EMBEDDED or rehearsal is not None:  # generated from the seed: nothing to decode
        train = load_task_data(
            config.dataset, seed, task=task, rehearsal=rehearsal, embedded_train_samples=config.embedded_train_samples
        ).train
        own = train.subset(partition_rows_of(config, train.labels, num_partitions)[partition_id])
    else:
        samples = listed_samples(config.dataset, config.resolved_path("data_dir"))["train"]
        labels = torch.tensor([sample.label for sample in samples], dtype=torch.long)
        rows = partition_rows_of(config, labels, num_partitions)[partition_id]
        own = build_split(task, [samples[row] for row in rows], cache_dir, "train")
    if task.text is None:
        return own
    encoder = resolve_text_encoder(config)
    logger.info("partition %d: computing %s text features of %d samples", partition_id, encoder.name, len(own))
    return own.with_inputs(text_feature=encode_per_sample(encoder, own.texts))


def partition_rows_of(config: RunConfig, labels: torch.Tensor, num_partitions: int) -> list[list[int]]:
    """Every partition's rows under the run's split settings, from the training labels alone (all the
    partitioner reads), so a device and the machine-wide data (`node.partitions`) split alike."""
    from tasks.partitioning import partition_rows

    index = SplitData({}, labels)
    return partition_rows(
        index,
        config.task.num_classes,
        config.split_type,
        num_partitions,
        config.dirichlet_alpha,
        config.seed,
        config.min_partition_size,
    )


def _save(own: SplitData, folder: Path) -> None:
    """Write the partition folder (replacing an unusable one): readers never see half a folder."""
    with atomic_folder(folder, replace=True) as partial:
        columns = {}
        for name, column in own.inputs.items():
            if isinstance(column, DiskColumn) and hasattr(column.array, "filename"):
                # decoded already, on this disk: reference it, never copy it
                np.save(partial / f"{name}.rows.npy", column.rows)
                columns[name] = {"file": str(Path(column.array.filename).resolve()), "rows": f"{name}.rows.npy"}
            elif isinstance(column, DiskColumn):  # generated (a rehearsal): the partition's rows, as decoding writes
                _write_rows(column, partial / f"{name}.npy")
                columns[name] = {"file": f"{name}.npy"}
            else:
                np.save(partial / f"{name}.npy", column.numpy())
                columns[name] = {"file": f"{name}.npy"}
        np.save(partial / LABELS_FILE, own.labels.numpy())
        (partial / MANIFEST).write_text(json.dumps({"format": FORMAT, "samples": len(own), "columns": columns}))


def _write_rows(column: DiskColumn, path: Path) -> None:
    """Write a column's rows into a .npy file a few at a time, never holding the whole column."""
    target = np.lib.format.open_memmap(path, mode="w+", dtype=column.array.dtype, shape=column.shape)
    for start in range(0, len(column), WRITE_ROWS):
        rows = np.arange(start, min(start + WRITE_ROWS, len(column)))
        target[rows] = column.take(rows).numpy()
    target.flush()


def _load(folder: Path, config: RunConfig) -> SplitData:
    """The partition, every column memory-mapped; raises ValueError when the folder does not add up."""
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest["format"] != FORMAT:
        raise ValueError(f"format {manifest['format']}, expected {FORMAT}")
    inputs = {}
    for name, entry in manifest["columns"].items():
        array = np.load(folder / entry["file"], mmap_mode="r")  # an absolute reference stays absolute
        rows = np.load(folder / entry["rows"]) if "rows" in entry else None
        inputs[name] = DiskColumn(array, rows)
        if len(inputs[name]) != manifest["samples"] or (rows is not None and rows.size and rows.max() >= len(array)):
            raise ValueError(f"column {name!r} does not match the {manifest['samples']} samples of the manifest")
    labels = torch.from_numpy(np.load(folder / LABELS_FILE))
    task = config.task
    return SplitData(inputs, labels, view=step_view(task.augmentation, task.image, task.audio, True))
