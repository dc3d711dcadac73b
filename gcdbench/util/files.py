"""Hashing and atomic writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Write to a temp file beside ``path`` and move it into place only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); results are meant to be read by others.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(target: Path, complete: str) -> Iterator[Path]:
    """Fill the yielded temp folder beside ``target``; it is renamed into place in one step
    only on success, so readers see either nothing or the whole folder.

    ``complete`` names the file inside a finished folder: if another process published
    ``target`` first, its (equivalent) folder stays and ours is dropped.

    The writer holds an ``flock`` on its temp folder while filling it, so a temp folder
    nobody holds belongs to a killed writer: each publish removes those first. No lock file
    sits beside the folders (the caches' readers expect only published folders there).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temp_dirs(target.parent)
    tmp, fd = _claimed_temp_dir(target)
    try:
        yield tmp
        # mkdtemp makes the folder private (0700); caches are meant to be read by others.
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / complete).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)  # releases the claim, after the folder is published or gone


def remove_abandoned_temp_dirs(parent: Path) -> list[Path]:
    """Remove the ``atomic_dir`` temp folders in ``parent`` whose writer is dead (nobody holds
    their lock); return them. A live writer's folder is left alone."""
    removed = []
    for path in sorted(parent.glob(".*.tmp")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:  # gone meanwhile, or a file (atomic_open's temp files)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a live writer, or locks unsupported here: keep it
            os.close(fd)
            continue
        # Deleted while we hold its lock: a writer that claims it next sees that and retries.
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
        removed.append(path)
    return removed


def _claimed_temp_dir(target: Path) -> tuple[Path, int]:
    """A fresh temp folder beside ``target`` and an open descriptor holding its lock."""
    while True:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # a cleaner removed it before we could claim it
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a cleaner holds it
        except OSError:  # no locks on this file system: publish unclaimed, as before
            return tmp, fd
        if same_file(fd, tmp):
            return tmp, fd
        os.close(fd)  # a cleaner took it between our open and our lock: take another


def same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one deleted or replaced since)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def write_json(path: Path, obj: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False, default=_jsonable)
        fh.write("\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
