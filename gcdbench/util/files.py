"""Hashing and atomic writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import glob
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
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with _publish_lock(target):
        # Holding the lock, every temp folder of ``target`` left here is a killed writer's.
        for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
            # mkdtemp's names: the prefix, 8 random characters, the suffix (so a longer
            # target name that starts with this one is not taken for ours).
            if len(stale.name) == len(target.name) + 14:
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
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


@contextlib.contextmanager
def _publish_lock(target: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.<name>.lock`` beside ``target`` while its folder is
    built, so the temp folders a writer finds there belong to dead writers (the OS drops a
    killed holder's lock). The small lock file stays: removing it safely would need the
    same-file dance of gcdbench/runner/locks.py. Where locking is not possible, no lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    try:
        fd = os.open(target.parent / f".{target.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only folder: the rename below fails clearly on its own
        yield
        return
    try:
        with contextlib.suppress(OSError):  # a file system without flock: build unlocked
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
