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
    """One split of a task: input tensors keyed by column, integer labels, raw texts if any.

    The raw texts are kept beside the tensors because a frozen text encoder, chosen by
    the run config, turns them into the `text_feature` column (`mpsl_flower.model_inputs`).
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, rows: torch.Tensor | list[int]) -> SplitData:
        """The samples at `rows`, in that order."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        texts = [self.texts[row] for row in rows.tolist()] if self.texts is not None else None
        return SplitData({key: value[rows] for key, value in self.inputs.items()}, self.labels[rows], texts)

    def with_inputs(self, **columns: torch.Tensor) -> SplitData:
        """The same samples with extra input columns."""
        return SplitData({**self.inputs, **columns}, self.labels, self.texts)

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
