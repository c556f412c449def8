"""Task data: input columns for the model, a `datasets.Dataset` index for partitioning.

Inputs are columns keyed by name: in-memory tensors (the embedded tasks) or `DiskColumn`s,
memory-mapped arrays of the preprocessing cache that are read only when a batch is taken,
so a Ray worker hosting many clients never holds a whole image dataset in memory.
The partitioners of flwr-datasets only need the label column, so they work on a light
`datasets.Dataset` of (row, label) whose `row` points back into the columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Value


class DiskColumn:
    """Rows of a memory-mapped array; `take` reads them, `subset` narrows without reading."""

    def __init__(self, array: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.array = array
        self.rows = np.arange(len(array)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.array.shape[1:])

    def subset(self, rows) -> DiskColumn:
        return DiskColumn(self.array, self.rows[np.asarray(rows, dtype=np.int64)])

    def take(self, rows) -> torch.Tensor:
        picked = self.rows[np.asarray(rows, dtype=np.int64)]
        order = np.argsort(picked)  # read the file in order, then restore the asked order
        values = np.empty((len(picked), *self.array.shape[1:]), dtype=self.array.dtype)
        values[order] = self.array[picked[order]]
        return torch.from_numpy(values)


Column = torch.Tensor | DiskColumn


@dataclass
class SplitData:
    """One split of a task: input columns, integer labels, and the raw texts of each sample.

    `texts[i]` holds sample i's texts (one question, or five captions). They stay beside
    the columns because a frozen text encoder, chosen by the run config, turns them into
    the `text_feature` column (`mpsl_flower.model_inputs`).
    """

    inputs: dict[str, Column]
    labels: torch.Tensor
    texts: list[tuple[str, ...]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, rows: torch.Tensor | list[int]) -> SplitData:
        """The samples at `rows`, in that order, read into memory (a batch)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        inputs = {
            key: value.take(rows.numpy()) if isinstance(value, DiskColumn) else value[rows]
            for key, value in self.inputs.items()
        }
        return SplitData(inputs, self.labels[rows], self._texts(rows))

    def subset(self, rows: torch.Tensor | list[int]) -> SplitData:
        """The samples at `rows`, without reading disk columns (a client's partition)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        inputs = {
            key: value.subset(rows.numpy()) if isinstance(value, DiskColumn) else value[rows]
            for key, value in self.inputs.items()
        }
        return SplitData(inputs, self.labels[rows], self._texts(rows))

    def with_inputs(self, **columns: Column) -> SplitData:
        """The same samples with extra input columns."""
        return SplitData({**self.inputs, **columns}, self.labels, self.texts)

    def _texts(self, rows: torch.Tensor) -> list[tuple[str, ...]] | None:
        return [self.texts[row] for row in rows.tolist()] if self.texts is not None else None

    def index_dataset(self, num_classes: int) -> Dataset:
        """A `datasets.Dataset` with one (row, label) per sample, for flwr-datasets partitioners."""
        label = ClassLabel(num_classes=num_classes) if num_classes else Value("int64")  # retrieval: no classes
        features = Features({"row": Value("int64"), "label": label})
        return Dataset.from_dict({"row": list(range(len(self))), "label": self.labels.tolist()}, features=features)


@dataclass
class TaskData:
    """The train and test splits of one task."""

    train: SplitData
    test: SplitData
