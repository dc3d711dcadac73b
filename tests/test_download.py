"""Downloading from a real local HTTP server, and where a dataset's files are found."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcdbench.api.dataset import RemoteFile
from gcdbench.cli import cli
from gcdbench.data.store import (
    DownloadEvent,
    download_dataset,
    ensure_dataset,
    locate_dataset,
    resolve_data_root,
)
from gcdbench.errors import DataError
from gcdbench.paths import cache_dir
from gcdbench_builtins.datasets import DATASETS

BY_NAME = {d.name: d for d in DATASETS}
NAME = "stackoverflow"  # three files, about 1 MB
FILES = ("train.tsv", "dev.tsv", "test.tsv")


@dataclass
class Server:
    url: str
    served: Path
    requests: list[str] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)  # path -> 500s still to send


def _handler(server: Server):
    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append(self.path)
            if server.fail_first.get(self.path, 0) > 0:
                server.fail_first[self.path] -= 1
                self.send_error(500, "try again")
                return
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    return partial(Handler, directory=str(server.served))


@pytest.fixture
def server(tmp_path: Path, shared_data: Path) -> Iterator[Server]:
    served = tmp_path / "served"
    (served / NAME).mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(shared_data / NAME / name, served / NAME / name)
    state = Server("", served)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    # A short poll interval: shutdown() waits up to one interval.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies(server: Server, tmp_path: Path) -> None:
    defn = BY_NAME[NAME]
    events: list[DownloadEvent] = []
    got = download_dataset(defn, tmp_path / "data", mirror=server.url, on_progress=events.append)
    assert got == [tmp_path / "data" / NAME / f for f in FILES]
    for file in defn.files:
        assert _sha(tmp_path / "data" / NAME / file.name) == file.sha256
    assert sorted(p.name for p in (tmp_path / "data" / NAME).iterdir()) == sorted(FILES)
    assert [e.file for e in events if e.kind == "done"] == list(FILES)
    assert sorted(server.requests) == sorted(f"/{NAME}/{f}" for f in FILES)
    parts = defn.load(tmp_path / "data" / NAME)
    assert all(f.verified for f in parts.files)


def test_present_files_are_skipped(server: Server, tmp_path: Path) -> None:
    defn = BY_NAME[NAME]
    download_dataset(defn, tmp_path, mirror=server.url)
    server.requests.clear()
    events: list[DownloadEvent] = []
    download_dataset(defn, tmp_path, mirror=server.url, on_progress=events.append)
    assert server.requests == []
    assert [e.kind for e in events] == ["skip"] * 3
    download_dataset(defn, tmp_path, mirror=server.url, force=True)
    assert len(server.requests) == 3


def test_corrupted_file_is_not_kept(server: Server, tmp_path: Path) -> None:
    served = server.served / NAME / "dev.tsv"
    data = served.read_bytes()
    served.write_bytes(data[:100] + b"#" + data[101:])  # one byte changed
    with pytest.raises(DataError) as info:
        download_dataset(BY_NAME[NAME], tmp_path, mirror=server.url)
    message = str(info.value)
    expected = next(f.sha256 for f in BY_NAME[NAME].files if f.name == "dev.tsv")
    assert "dev.tsv" in message and expected in message and _sha(served) in message
    assert "\n" not in message
    assert not (tmp_path / NAME / "dev.tsv").exists()
    assert not [p for p in (tmp_path / NAME).iterdir() if p.name.startswith(".")]


def test_retries_on_server_errors(server: Server, tmp_path: Path) -> None:
    server.fail_first[f"/{NAME}/test.tsv"] = 2
    events: list[DownloadEvent] = []
    download_dataset(
        BY_NAME[NAME], tmp_path, mirror=server.url, on_progress=events.append, backoff=0.01
    )
    retries = [e for e in events if e.kind == "retry"]
    assert [(e.file, e.retries) for e in retries] == [("test.tsv", 1), ("test.tsv", 2)]
    assert "HTTP 500" in retries[0].message
    done = {e.file: e.retries for e in events if e.kind == "done"}
    assert done == {"train.tsv": 0, "dev.tsv": 0, "test.tsv": 2}
    assert _sha(tmp_path / NAME / "test.tsv") == _sha(server.served / NAME / "test.tsv")


def test_gives_up_after_retries(server: Server, tmp_path: Path) -> None:
    server.fail_first[f"/{NAME}/train.tsv"] = 10
    with pytest.raises(DataError, match="after 4 attempts"):
        download_dataset(BY_NAME[NAME], tmp_path, mirror=server.url, backoff=0.001)
    assert server.requests.count(f"/{NAME}/train.tsv") == 4
    assert not (tmp_path / NAME / "train.tsv").exists()


def test_missing_on_server_is_not_retried(server: Server, tmp_path: Path) -> None:
    (server.served / NAME / "dev.tsv").unlink()
    with pytest.raises(DataError, match="HTTP 404"):
        download_dataset(BY_NAME[NAME], tmp_path, mirror=server.url, backoff=0.001)
    assert server.requests.count(f"/{NAME}/dev.tsv") == 1


def test_mirror_from_environment(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GCDBENCH_DATA_MIRROR", server.url.rstrip("/"))
    download_dataset(BY_NAME[NAME], tmp_path)
    assert len(server.requests) == 3


def test_resolve_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GCDBENCH_DATA", raising=False)
    assert resolve_data_root(None) == (cache_dir() / "data", "cache")
    monkeypatch.setenv("GCDBENCH_DATA", str(tmp_path))
    assert resolve_data_root(None) == (tmp_path, "GCDBENCH_DATA")
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_data_root(str(other)) == (other, "--data-dir")
    with pytest.raises(DataError, match=r"--data-dir .*nope is not an existing folder"):
        resolve_data_root(tmp_path / "nope")
    monkeypatch.setenv("GCDBENCH_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"GCDBENCH_DATA .*gone is not an existing folder"):
        resolve_data_root(None)


def test_ensure_dataset(server: Server, tmp_path: Path) -> None:
    """The function the runner called before locate_dataset: same search, folder only."""
    defn = BY_NAME[NAME]
    user = tmp_path / "mine"
    (user / NAME).mkdir(parents=True)
    (user / NAME / "train.tsv").write_text("text\tlabel\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lacks dev\.tsv, test\.tsv"):
        ensure_dataset(defn, user, "--data-dir", mirror=server.url)
    assert server.requests == []
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"gcdbench data download {NAME}"):
        ensure_dataset(defn, cache, "cache", download=False)
    assert ensure_dataset(defn, cache, "cache", mirror=server.url) == cache / NAME
    assert len(server.requests) == 3
    assert ensure_dataset(defn, cache, "cache", mirror=server.url) == cache / NAME
    assert len(server.requests) == 3


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of this test's own, and no GCDBENCH_DATA."""
    monkeypatch.setenv("GCDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GCDBENCH_DATA", raising=False)
    return tmp_path / "cache" / "data"


def test_data_dir_without_the_dataset_falls_back_to_the_cache(
    server: Server, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defn = BY_NAME[NAME]
    user = tmp_path / "mine"
    (user / "other").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        locate_dataset(defn, str(user), download=False)
    message = str(info.value)
    assert str(user / NAME) in message and str(cache / NAME) in message
    assert f"gcdbench data download {NAME}" in message
    assert locate_dataset(defn, str(user), mirror=server.url) == (cache / NAME, "cache")
    assert not (user / NAME).exists()  # a folder the user chose is never written to
    monkeypatch.setenv("GCDBENCH_DATA", str(user))
    assert locate_dataset(defn, None, download=False) == (cache / NAME, "cache")
    shutil.copytree(server.served / NAME, user / NAME)
    assert locate_dataset(defn, None) == (user / NAME, "GCDBENCH_DATA")
    assert locate_dataset(defn, str(user)) == (user / NAME, "--data-dir")


def test_data_dir_with_a_partial_folder_is_an_error(
    server: Server, tmp_path: Path, cache: Path
) -> None:
    user = tmp_path / "mine"
    (user / NAME).mkdir(parents=True)
    shutil.copyfile(server.served / NAME / "train.tsv", user / NAME / "train.tsv")
    with pytest.raises(DataError, match=r"lacks dev\.tsv, test\.tsv \(--data-dir "):
        locate_dataset(BY_NAME[NAME], str(user), mirror=server.url)
    assert server.requests == []


def test_the_definitions_own_folder_comes_first(
    server: Server, tmp_path: Path, cache: Path
) -> None:
    own = tmp_path / "plugin-data"
    shutil.copytree(server.served / NAME, own)
    defn = replace(BY_NAME[NAME], local_dir=own)
    user = tmp_path / "mine"
    shutil.copytree(server.served, user)
    assert locate_dataset(defn, str(user)) == (own, "plugin")
    (own / "dev.tsv").unlink()  # incomplete: the next place is tried
    assert locate_dataset(defn, str(user)) == (user / NAME, "--data-dir")
    assert locate_dataset(defn, None, mirror=server.url) == (cache / NAME, "cache")
    with pytest.raises(DataError, match="not an absolute path"):
        locate_dataset(replace(defn, local_dir="data"), None)


def test_a_file_without_url_is_not_downloaded(tmp_path: Path, cache: Path) -> None:
    files = (RemoteFile("tickets.jsonl", "", "0" * 64),)
    defn = replace(BY_NAME["massive_scenario"], name="shipped", files=files)
    with pytest.raises(DataError) as info:
        locate_dataset(defn, None)
    message = str(info.value)
    assert "tickets.jsonl" in message and "no download URL" in message and "\n" not in message
    with pytest.raises(DataError, match=r"no download URL for tickets\.jsonl"):
        download_dataset(defn, tmp_path)


def test_download_command_writes_to_the_cache_not_gcdbench_data(
    server: Server, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("GCDBENCH_DATA", str(shared))
    args = ["data", "download", NAME, "--mirror", server.url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (cache / NAME).iterdir()) == sorted(FILES)
    assert list(shared.iterdir()) == []
    target = tmp_path / "mine"
    result = CliRunner().invoke(cli, [*args, "--to", str(target)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (target / NAME).iterdir()) == sorted(FILES)
    assert f"--data-dir {target}" in result.output
