"""Per-run locks: one process at a time checks, computes and records a given run id.

A lock is an exclusive ``flock`` on ``<results>/locks/<run id[:16]>.lock``. The OS drops it
when its holder exits, however it exits (SIGKILL included), so a lock is never stale.
The holder writes its pid and host into the file, for the line a waiting process shows.

Lock files do not pile up: the holder deletes its file while it still holds it, and a
process that gets a lock on a file that is no longer the one at the path (deleted or
replaced meanwhile) drops it and locks the current file instead. On a file system without
``flock`` (some cluster file systems) runs go on unlocked and say so once.

Locks are re-entrant within a process (the runner holds the run's lock and the store's
``write`` takes it again), never across processes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gcdbench.api.progress import Reporter
from gcdbench.util.files import same_file

#: flock errors that mean "this file system cannot lock", not "someone else holds it".
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}

#: Errors opening the lock file that mean the store is read-only.
_READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}

_held: dict[str, int] = {}  # lock file -> depth, for the locks this process holds
_held_guard = threading.Lock()
_warned_unsupported = False


def lock_file(locks_dir: Path, run_id: str) -> Path:
    """Named like the run's folder (the run id's first 16 characters)."""
    return locks_dir / f"{run_id[:16]}.lock"


@contextmanager
def run_lock(path: Path, label: str, reporter: Reporter | None = None) -> Iterator[bool]:
    """Hold the lock at ``path``, waiting for its holder if there is one (shown on
    ``reporter`` as "waiting for run LABEL running in pid N"). Yields whether it waited."""
    key = str(path)
    if _enter_held(key):
        try:
            yield False
        finally:
            _leave_held(key)
        return
    fd, waited = _acquire(path, label, reporter or Reporter())
    _register(key)
    try:
        yield waited
    finally:
        _leave_held(key)
        if fd is not None:
            _release(path, fd)


@contextmanager
def try_run_lock(path: Path) -> Iterator[bool]:
    """Take the lock at ``path`` only if it is free: yields True while held, False when
    another process (or this one) holds it or the file system cannot lock."""
    key = str(path)
    with _held_guard:
        mine = key in _held
    fd = None if mine else _lock_if_free(path)
    if fd is None:
        yield False
        return
    _register(key)
    try:
        yield True
    finally:
        _leave_held(key)
        _release(path, fd)


def _lock_if_free(path: Path) -> int | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _lock_now(fd) and same_file(fd, path):
            return fd
    except OSError:
        pass  # the file system cannot lock: nobody can tell the holder is gone
    os.close(fd)
    return None


def _acquire(path: Path, label: str, reporter: Reporter) -> tuple[int | None, bool]:
    """The locked file's descriptor (None where this store cannot be locked) and whether
    another process held it first."""
    waited = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno not in _READ_ONLY:
                raise
            # A read-only store: nothing can be recorded, so nothing can be run twice
            # into it; a run that needs to write stops at the store's writability check.
            return None, waited
        try:
            if not _lock_now(fd):
                waited = True
                with reporter.stage(f"waiting for run {label} running in {_holder(fd)}"):
                    fcntl.flock(fd, fcntl.LOCK_EX)
            if same_file(fd, path):
                _stamp(fd)
                return fd, waited
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _UNSUPPORTED:
                raise
            _warn_unsupported(path, reporter)
            return None, waited
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder deleted it on release: lock the file now at the path


def _lock_now(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _stamp(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote (it may not have written yet)."""
    words = os.pread(fd, 512, 0).decode(errors="replace").split()
    if not words:
        return "another process"
    pid, host = words[0], (words[1] if len(words) > 1 else "")
    where = "" if host in ("", socket.gethostname()) else f" on {host}"
    return f"pid {pid}{where}"


def _release(path: Path, fd: int) -> None:
    try:
        # Deleted while still held: a process waiting on this file then sees that it is no
        # longer the one at the path and locks a fresh one, so nobody holds a dead file.
        if same_file(fd, path):
            os.unlink(path)
    except OSError:
        pass  # a read-only or vanished folder: the lock itself still goes with the close
    finally:
        os.close(fd)


def _enter_held(key: str) -> bool:
    with _held_guard:
        if key in _held:
            _held[key] += 1
            return True
    return False


def _register(key: str) -> None:
    with _held_guard:
        _held[key] = 1


def _leave_held(key: str) -> None:
    with _held_guard:
        _held[key] -= 1
        if not _held[key]:
            del _held[key]


def _warn_unsupported(path: Path, reporter: Reporter) -> None:
    global _warned_unsupported
    if not _warned_unsupported:
        _warned_unsupported = True
        reporter.message(
            f"warning: {path.parent} cannot be locked (no flock on this file system); "
            "runs are not protected against a second process running the same run id."
        )
