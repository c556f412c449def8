"""The tasks a run can choose by name, and how to load their data."""

from __future__ import annotations

from tasks import embedded
from tasks.data import TaskData
from tasks.spec import TaskSpec

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (embedded.SHAPES_QA, embedded.SHAPES_AV)}


def load_task_data(name: str, seed: int) -> TaskData:
    """Train and test splits of task `name`; embedded tasks are generated from `seed`."""
    return embedded.generate(name, seed)
