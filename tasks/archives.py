"""Fetch a dataset's official archives with a progress bar, verify them, and unpack them.

Each real dataset's module lists its `ARCHIVES`; `python -m tasks.download` fetches them, and
a run fetches what a missing dataset needs (`tasks.registry`).

Verification: the byte count must equal the server's Content-Length, and the archive must
pass its own integrity check (every zip member's CRC, every tar member read) before it is
unpacked. A download is written under a private `.partial` name and renamed when verified, so an
interrupted one is never taken for complete. Without network, the error says which URL to
fetch by hand and where to put the file; a file already there is verified and reused.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from tasks.atomic import atomic_file
from tasks.preprocess import DatasetError

CHUNK = 1 << 20
TIMEOUT_S = 30


@dataclass(frozen=True)
class Archive:
    """One official archive: its URL, the file name it is saved as, the folder it unpacks into
    (relative to the data dir), and archives it contains (relative to that folder) that are
    unpacked where they lie, as MELD ships its clips."""

    url: str
    file_name: str
    unpack_to: str
    inner: tuple[str, ...] = ()


def fetch(archive: Archive, data_dir: Path) -> Path:
    """The verified archive under `<data_dir>/downloads/`, downloaded unless already there."""
    target = data_dir / "downloads" / archive.file_name
    if target.is_file():
        verify(target)
        return target
    with atomic_file(target) as partial:
        try:
            with urllib.request.urlopen(archive.url, timeout=TIMEOUT_S) as response, open(partial, "wb") as out:
                expected = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=expected, unit="B", unit_scale=True, desc=archive.file_name) as progress:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        progress.update(len(chunk))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise DatasetError(
                f"cannot download {archive.url} ({error}). Without network, fetch it by hand and save it as "
                f"{target}; it is then verified and unpacked"
            ) from error
        received = partial.stat().st_size
        if expected is not None and received != expected:
            raise DatasetError(f"{archive.url}: received {received} of {expected} bytes; run the download again")
        verify(partial)
    return target


def verify(path: Path) -> None:
    """Raise unless the archive reads back whole (zip CRCs, every tar member); other formats pass."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
            if broken is not None:
                raise DatasetError(f"{path} is damaged (member {broken} fails its CRC); delete it and download again")
        elif _is_tar(path):
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.isfile():
                        archive.extractfile(member).read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise DatasetError(f"{path} is damaged ({error}); delete it and download again") from error


def _is_tar(path: Path) -> bool:
    """By content, not name: a download is verified under its private name, before it takes its own."""
    return tarfile.is_tarfile(path)


def unpack(path: Path, destination: Path) -> None:
    """Unpack a zip or tar archive (Python's own readers) or a rar (needs `unrar` or `bsdtar`)."""
    destination.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".rar":
        shutil.unpack_archive(path, destination)
        return
    for tool in (
        ["unrar", "x", "-o+", str(path), f"{destination}/"],
        ["bsdtar", "-xf", str(path), "-C", str(destination)],
    ):
        if shutil.which(tool[0]):
            subprocess.run(tool, check=True)
            return
    raise DatasetError(
        f"{path} is a RAR archive: install `unrar` or `bsdtar` (libarchive-tools) and run the download again"
    )


def download(archives: list[Archive], data_dir: Path) -> None:
    """Fetch, verify and unpack each archive into its folder under `data_dir`."""
    for archive in archives:
        destination = data_dir / archive.unpack_to
        unpack(fetch(archive, data_dir), destination)
        for inner in archive.inner:
            verify(destination / inner)
            unpack(destination / inner, (destination / inner).parent)
