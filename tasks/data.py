"""Task data: input columns for the model, a `datasets.Dataset` index for partitioning.

Inputs are columns keyed by name: in-memory tensors (the embedded tasks) or `DiskColumn`s,
memory-mapped arrays of the preprocessing cache that are read only when a batch is taken,
so a Ray worker hosting many clients never holds a whole image dataset in memory.
A split whose inputs are drawn anew at each step (`tasks.augment`) holds a `StepView`
that turns its cached columns into the model's inputs.
The partitioners of flwr-datasets only need the label column, so they work on a light
`datasets.Dataset` of (row, label) whose `row` points back into the columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # datasets pulls pandas: imported by the partitioner's index only, not by every client
    from datasets import Dataset


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

    def take(self, rows, variants: np.ndarray | None = None) -> torch.Tensor:
        """The rows, read in file order; with `variants`, only entry `variants[i]` of row i's
        second axis (one cached moment of a video)."""
        picked = self.rows[np.asarray(rows, dtype=np.int64)]
        order = np.argsort(picked, kind="stable")  # read the file in order, then restore the asked order
        skip = 1 if variants is None else 2
        values = np.empty((len(picked), *self.array.shape[skip:]), dtype=self.array.dtype)
        if variants is None:
            values[order] = self.array[picked[order]]
        else:
            values[order] = self.array[picked[order], np.asarray(variants)[order]]
        return torch.from_numpy(values)


Column = torch.Tensor | DiskColumn


def take(column: Column, rows, variants: np.ndarray | None = None) -> torch.Tensor:
    """`rows` of an in-memory or disk column (see `DiskColumn.take` for `variants`)."""
    if isinstance(column, DiskColumn):
        return column.take(rows, variants)
    rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    return column[rows] if variants is None else column[rows, torch.as_tensor(np.asarray(variants))]


class StepView:
    """Turns a split's cached columns into a batch's model inputs, making any random choice
    with `generator` (None: the deterministic input). See `tasks.augment`."""

    def inputs(
        self, columns: Mapping[str, Column], rows: np.ndarray, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass
class SplitData:
    """One split of a task: input columns, integer labels, and the raw texts of each sample.

    `texts[i]` holds sample i's texts (one question, or five captions). They stay beside
    the columns because a frozen text encoder, chosen by the run config, turns them into
    the `text_feature` column (`mpsl_flower.split.model_inputs`). `view`, when set, draws the inputs
    of a batch from the cached columns at each step.
    """

    inputs: dict[str, Column]
    labels: torch.Tensor
    texts: list[tuple[str, ...]] | None = None
    view: StepView | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, rows: torch.Tensor | list[int], generator: torch.Generator | None = None) -> SplitData:
        """The samples at `rows`, in that order, read into memory as model inputs (a batch).

        A split with a `view` draws them with `generator`, seeded by the caller from the step
        (`tasks.augment.input_generator`); None gives the deterministic inputs.
        """
        rows = torch.as_tensor(rows, dtype=torch.long)
        if self.view is not None:
            inputs = self.view.inputs(self.inputs, rows.numpy(), generator)
        else:
            inputs = {key: take(value, rows.numpy()) for key, value in self.inputs.items()}
        return SplitData(inputs, self.labels[rows], self._texts(rows))

    def subset(self, rows: torch.Tensor | list[int]) -> SplitData:
        """The samples at `rows`, without reading disk columns (a client's partition)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        inputs = {
            key: value.subset(rows.numpy()) if isinstance(value, DiskColumn) else value[rows]
            for key, value in self.inputs.items()
        }
        return SplitData(inputs, self.labels[rows], self._texts(rows), self.view)

    def with_inputs(self, **columns: Column) -> SplitData:
        """The same samples with extra input columns."""
        return SplitData({**self.inputs, **columns}, self.labels, self.texts, self.view)

    def _texts(self, rows: torch.Tensor) -> list[tuple[str, ...]] | None:
        return [self.texts[row] for row in rows.tolist()] if self.texts is not None else None

    def index_dataset(self, num_classes: int) -> Dataset:
        """A `datasets.Dataset` with one (row, label) per sample, for flwr-datasets partitioners."""
        from datasets import ClassLabel, Dataset, Features, Value

        label = ClassLabel(num_classes=num_classes) if num_classes else Value("int64")  # retrieval: no classes
        features = Features({"row": Value("int64"), "label": label})
        return Dataset.from_dict({"row": list(range(len(self))), "label": self.labels.tolist()}, features=features)


@dataclass
class TaskData:
    """The train and test splits of one task."""

    train: SplitData
    test: SplitData
