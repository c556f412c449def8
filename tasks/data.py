"""In-memory task data: tensors for the model, a `datasets.Dataset` index for partitioning.

Heavy inputs (pixels, fbanks, word ids) stay in tensors; the partitioners of flwr-datasets
only need the label column, so they work on a light `datasets.Dataset` of (row, label)
whose `row` points back into the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import ClassLabel, Dataset, Features, Value


@dataclass
class SplitData:
    """One split of a task: input tensors keyed by column, and integer labels."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, rows: torch.Tensor | list[int]) -> SplitData:
        """The samples at `rows`, in that order."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return SplitData({key: value[rows] for key, value in self.inputs.items()}, self.labels[rows])

    def index_dataset(self, class_names: tuple[str, ...]) -> Dataset:
        """A `datasets.Dataset` with one (row, label) per sample, for flwr-datasets partitioners."""
        features = Features({"row": Value("int64"), "label": ClassLabel(names=list(class_names))})
        return Dataset.from_dict(
            {"row": list(range(len(self))), "label": self.labels.tolist()}, features=features
        )


@dataclass
class TaskData:
    """The train and test splits of one task."""

    train: SplitData
    test: SplitData
