"""Make our log lines show wherever Flower's do, at the level `FLWR_LOG_LEVEL` sets.

Under `flwr run`, Flower configures only its own `flwr` logger (a console handler whose level
`FLWR_LOG_LEVEL` sets), and the run's stream is what that handler writes. Records of our
packages' loggers (`logging.getLogger(__name__)`) would reach no handler and be lost, so they
are handed to the `flwr` logger, which filters, formats and streams them like its own. Without
flwr installed (e.g. benchmarking the split core on a GPU box) the `flwr` logger simply has no
handlers and records fall through to Python's defaults.

A bad run-config value is the user's input, not a bug: the traceback Flower logs with a failed
ServerApp is dropped for a `ConfigError`, so the stream shows one line naming the key, the
allowed values and the fix, and the run is still marked failed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from mpsl_flower.config import ConfigError

FLOWER_LOGGER = "flwr"
PROJECT_PACKAGES = ("mpsl_flower", "strategies", "tasks")


class _ToFlowerLogger(logging.Handler):
    """Hands every record to the `flwr` logger, whose handlers decide what shows."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(FLOWER_LOGGER).handle(record)


class _ConfigErrorWithoutTraceback(logging.Filter):
    """Folds a `ConfigError` logged with its traceback into the message line, traceback dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ConfigError):
            record.msg, record.args = f"{record.getMessage()}: invalid run config: {error}", ()
            record.exc_info, record.exc_text = None, None
        return True


def show_project_logs() -> None:
    """Route our packages' loggers through Flower's logger (idempotent)."""
    flower = logging.getLogger(FLOWER_LOGGER)
    if not any(isinstance(f, _ConfigErrorWithoutTraceback) for f in flower.filters):
        flower.addFilter(_ConfigErrorWithoutTraceback())
    for name in PROJECT_PACKAGES:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _ToFlowerLogger) for h in logger.handlers):
            logger.addHandler(_ToFlowerLogger())
        logger.setLevel(logging.DEBUG)  # Flower's handlers apply FLWR_LOG_LEVEL
        logger.propagate = False  # the `flwr` logger propagates to the root once


@contextlib.contextmanager
def weight_file_notes_silenced() -> Iterator[None]:
    """Our packages log errors only, inside the block: for tools that build models on random weights on
    purpose, where every missing weight file would be noted. The level is restored afterwards."""
    loggers = [logging.getLogger(name) for name in PROJECT_PACKAGES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
