"""Downloading official archives: progress, verification, reuse, and clear errors offline."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
import zipfile

import pytest
from support.fixtures_images import write_coco_qa

from tasks.archives import Archive, download, fetch
from tasks.datasets import coco_qa
from tasks.preprocess import DatasetError
from tasks.registry import load_task_data


class _Server(http.server.ThreadingHTTPServer):
    """Serves `files` (name -> bytes); `truncate` names a file sent with a too-large Content-Length."""

    def __init__(self, files: dict[str, bytes], truncate: str | None = None) -> None:
        self.files, self.truncate, self.requests = files, truncate, []
        super().__init__(("127.0.0.1", 0), _Handler)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        name = self.path.lstrip("/")
        self.server.requests.append(name)
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) * (2 if name == self.server.truncate else 1)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(files, truncate=None):
        server = _Server(files, truncate)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _zip_bytes(tmp_path, members: dict[str, str]) -> bytes:
    path = tmp_path / "made.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path.read_bytes()


def test_an_archive_is_downloaded_verified_unpacked_and_reused(tmp_path, serve):
    server = serve({"release.zip": _zip_bytes(tmp_path, {"train/questions.txt": "what is it\n"})})
    archive = Archive(server.url("release.zip"), "release.zip", "coco-qa")
    data_dir = tmp_path / "data"
    download([archive], data_dir)
    assert (data_dir / "coco-qa" / "train" / "questions.txt").read_text() == "what is it\n"
    download([archive], data_dir)
    assert server.requests == ["release.zip"]  # the verified file was reused


def test_a_truncated_transfer_is_refused_and_leaves_nothing_behind(tmp_path, serve):
    server = serve({"big.zip": _zip_bytes(tmp_path, {"a.txt": "x" * 1000})}, truncate="big.zip")
    with pytest.raises(DatasetError, match=r"received \d+ of \d+ bytes; run the download again"):
        fetch(Archive(server.url("big.zip"), "big.zip", "x"), tmp_path)
    assert not list((tmp_path / "downloads").iterdir())


def test_a_damaged_archive_already_on_disk_is_named(tmp_path):
    good = _zip_bytes(tmp_path, {"a.txt": "hello" * 100})
    damaged = bytearray(good)
    damaged[40] ^= 0xFF  # flip a byte inside the member's data: its CRC no longer matches
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "r.zip").write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match=r"r.zip is damaged"):
        fetch(Archive("http://127.0.0.1:9/r.zip", "r.zip", "x"), tmp_path)


def test_without_network_the_error_says_what_to_fetch_and_where_to_put_it(tmp_path):
    archive = Archive("http://127.0.0.1:9/release.zip", "release.zip", "coco-qa")  # nothing listens on port 9
    with pytest.raises(DatasetError) as error:
        fetch(archive, tmp_path)
    assert "http://127.0.0.1:9/release.zip" in str(error.value) and str(tmp_path / "downloads" / "release.zip") in str(
        error.value
    )


def test_archives_inside_an_archive_are_unpacked_where_they_lie(tmp_path, serve):
    def tar_gz(members: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    clips = tar_gz({"train_splits/dia0_utt0.mp4": b"clip"})
    server = serve(
        {"MELD.Raw.tar.gz": tar_gz({"MELD.Raw/train.tar.gz": clips, "MELD.Raw/train_sent_emo.csv": b"Sr No.\n"})}
    )
    archive = Archive(server.url("MELD.Raw.tar.gz"), "MELD.Raw.tar.gz", "meld", inner=("MELD.Raw/train.tar.gz",))
    download([archive], tmp_path)
    assert (tmp_path / "meld" / "MELD.Raw" / "train_splits" / "dia0_utt0.mp4").read_bytes() == b"clip"


def _zip_folder(folder, root) -> bytes:
    """A zip of every file under `folder`, named relative to `root`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def test_a_first_run_downloads_a_missing_dataset_as_the_original_does(serve, tmp_path, monkeypatch):
    release = tmp_path / "official"
    facts = write_coco_qa(release)
    files = {
        "cocoqa-2015-05-17.zip": _zip_folder(release / "coco-qa", release / "coco-qa"),
        "train2014.zip": _zip_folder(release / "coco" / "train2014", release / "coco"),
        "val2014.zip": _zip_folder(release / "coco" / "val2014", release / "coco"),
    }
    server = serve(files)
    archives = [Archive(server.url(a.file_name), a.file_name, a.unpack_to) for a in coco_qa.ARCHIVES]
    monkeypatch.setattr(coco_qa, "ARCHIVES", archives)  # the same archives, served on loopback
    data = load_task_data("coco-qa", 2024, tmp_path / "data", tmp_path / "cache")
    assert (len(data.train), len(data.test)) == (facts["train"], facts["test"])
    assert sorted(server.requests) == sorted(files)
    load_task_data.cache_clear()
    load_task_data("coco-qa", 2024, tmp_path / "data", tmp_path / "cache")  # there now: nothing fetched again
    assert len(server.requests) == len(files)


def test_offline_a_missing_dataset_says_which_file_to_fetch_by_hand(tmp_path, monkeypatch):
    archives = [Archive("http://127.0.0.1:9/cocoqa-2015-05-17.zip", "cocoqa-2015-05-17.zip", "coco-qa")]
    monkeypatch.setattr(coco_qa, "ARCHIVES", archives)  # port 9 (discard): nothing answers
    target = tmp_path / "data" / "downloads" / "cocoqa-2015-05-17.zip"
    with pytest.raises(DatasetError, match=rf"cannot download .* fetch it by hand and save it as {target}"):
        load_task_data("coco-qa", 2024, tmp_path / "data", tmp_path / "cache")
