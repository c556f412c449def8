"""Write-then-rename, for every file and folder the project writes that a reader or a crash could catch half
written: caches, downloads, node state, results.

A reader sees the old version or the new one, never a mix: the new one is written under a private name
beside its place (the process id in it, so two processes never share one) and renamed into place in one
step, which POSIX makes atomic on one file system. What was written is removed when the writing fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path: Path, keep_suffix: bool = False) -> Iterator[Path]:
    """A private path beside `path` to write to; when the block ends without an error it replaces `path`.

    Its name ends in `.partial`, so that no search for finished files (`*.mp4`, `revision-*.npz`) takes it,
    or with `keep_suffix` in `path`'s suffix, for writers that append their own otherwise (`numpy.savez`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if keep_suffix else ""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial{suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(folder: Path, replace: bool = False) -> Iterator[Path]:
    """A new, empty private folder beside `folder` to fill; when the block ends without an error it takes
    `folder`'s place. A folder already there is kept (another process built the same one first) unless
    `replace` (it is unusable and being rebuilt)."""
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        if replace:
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # a non-empty folder is there: another process finished first
            os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
