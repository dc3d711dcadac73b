"""The results store: one folder per finished run, published in one step.

Layout::

    <results>/runs/<dataset>/<method>/<run id[:16]>/record.json
                                                      /predictions.csv
    <results>/splits/<dataset>-kr..-lr..-s..-<split hash[:12]>.json
    <results>/locks/<run id[:16]>.lock       while a process checks, runs and records that run
    <results>/.tmp/run-<run id[:16]>-<pid>-…/  a running run's scratch folder

What survives a kill (SIGKILL included; docs/results.md, "What survives a kill"):

* A run folder is filled under a hidden name (``.tmp-<name>-<pid>-…``) and renamed into
  place whole: no reader ever finds half a record.
* ``--force`` swaps the new folder with the old one in one step (``renameat2`` with
  ``RENAME_EXCHANGE`` on Linux, ``renamex_np`` with ``RENAME_SWAP`` on macOS), so at every
  instant the run's folder holds the old complete record or the new one. Where the system
  or file system cannot swap, the old folder is first renamed to ``.old-<name>-…``; a kill
  between the two renames leaves no visible record until the store is next opened, which
  renames the old one back.
* Every open of the store (``gcdbench run``, ``show``, ``leaderboard``) removes what dead
  writers left (``.tmp-`` and ``.old-`` folders, scratch folders, lock files) and puts back
  a record whose replacement was killed halfway. A writer is dead when its run's lock is
  free: the lock is held from the record check to the write, and the OS drops it when the
  process dies, so a live writer's folders are never touched.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from gcdbench.api.progress import Reporter
from gcdbench.api.record import ResultRecord
from gcdbench.api.spec import RunSpec
from gcdbench.errors import GcdbenchError
from gcdbench.runner.locks import lock_file, run_lock, try_run_lock
from gcdbench.util.files import write_json

if TYPE_CHECKING:  # only the runner, which has pandas loaded, writes records
    import pandas as pd

RECORD = "record.json"
#: Hidden names in a method's folder: a record being written, a record being replaced.
TMP, OLD = ".tmp-", ".old-"
#: Scratch folders of running runs, under ``<results>/.tmp``.
SCRATCH = "run-"
PROBE = ".probe-"
#: Training checkpoints of unfinished runs, ``<results>/.checkpoints/<run id[:16]>/``
#: (gcdbench/training/checkpoint.py), and sweeps' running markers, ``<results>/running/``.
CHECKPOINTS = ".checkpoints"
RUNNING = "running"
#: A writability probe lives microseconds; one this old was left by a killed process.
PROBE_MAX_AGE_S = 3600.0


class ResultsStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = root / "runs"
        self.splits = root / "splits"
        self.locks = root / "locks"
        self.scratch = root / ".tmp"
        self.recover()

    def check_writable(self) -> None:
        """Fail before any work when results could not be saved."""
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.runs, prefix=PROBE):
                pass
        except OSError as exc:
            raise GcdbenchError(
                f"results dir {self.root} is not writable ({exc.strerror or exc}); "
                "pass --results-dir (or set GCDBENCH_RESULTS) to a folder you can write."
            ) from None

    def run_dir(self, spec: RunSpec, run_id: str) -> Path:
        """Folders are named by the run id (gcdbench/runner/identity.py), not the spec: the
        same spec on changed data or code is another run."""
        return self.runs / spec.dataset / spec.method / run_id[:16]

    def find(self, spec: RunSpec, run_id: str) -> Path | None:
        path = self.run_dir(spec, run_id) / RECORD
        return path if path.is_file() else None

    @contextmanager
    def lock_run(
        self, spec: RunSpec, run_id: str, reporter: Reporter | None = None
    ) -> Iterator[bool]:
        """Hold the run's lock (waiting for another process that holds it) for "check for
        a record, run, write": two processes never compute one run id at once. On entry the
        run's folder is repaired (a holder killed while we waited may have left it half
        replaced). Yields whether it had to wait."""
        with run_lock(lock_file(self.locks, run_id), run_id[:10], reporter) as waited:
            self._repair(self.run_dir(spec, run_id))
            self._remove_scratch(run_id[:16])
            yield waited

    @contextmanager
    def work_dir(self, run_id: str) -> Iterator[Path]:
        """A run's scratch folder, removed afterwards; after a kill, by the next open of
        the store. It holds the run's lock, which tells others the folder is in use."""
        with run_lock(lock_file(self.locks, run_id), run_id[:10]):
            self.scratch.mkdir(parents=True, exist_ok=True)
            prefix = f"{SCRATCH}{run_id[:16]}-{os.getpid()}-"
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.scratch))
            try:
                yield path
            finally:
                shutil.rmtree(path, ignore_errors=True)

    def write(self, record: ResultRecord, predictions: pd.DataFrame) -> Path:
        final = self.run_dir(record.spec, record.run_id)
        # Re-entrant: the runner already holds it; another caller waits for a running run.
        with run_lock(lock_file(self.locks, record.run_id), record.run_id[:10]):
            self._repair(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f"{TMP}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                predictions.to_csv(tmp / record.predictions_file, index=False)
                write_json(tmp / RECORD, record.to_dict())
                publish_dir(tmp, final)
            finally:
                # Unfinished, or (after a swap) the old record: never the published one.
                shutil.rmtree(tmp, ignore_errors=True)
        return final / RECORD

    def recover(self) -> None:
        """Remove what killed writers left, and put back a record whose replacement was
        killed halfway. Runs whose lock is held are left alone: their writer is alive."""
        for name, folders in self._leftovers().items():
            try:
                with try_run_lock(lock_file(self.locks, name)) as free:
                    if free:
                        for final in {p.parent / name for p in folders if p.parent != self.scratch}:
                            self._repair(final)
                        self._remove_scratch(name)
            except OSError:
                continue  # a read-only store: readers skip hidden folders anyway
        self._remove_old_probes()
        self._remove_finished_checkpoints()
        self._remove_free_markers()

    def _remove_finished_checkpoints(self) -> None:
        """A run killed between writing its record and removing its checkpoints left them;
        every later command skips the run, so nothing else would remove them."""
        for folder in _listing(self.root / CHECKPOINTS, "*"):
            if not _listing(self.runs, f"*/*/{folder.name}/{RECORD}"):
                continue  # unfinished: the restart resumes from it
            with suppress(OSError), try_run_lock(lock_file(self.locks, folder.name)) as free:
                if free:
                    shutil.rmtree(folder, ignore_errors=True)

    def _remove_free_markers(self) -> None:
        """A sweep's running marker whose lock is free belonged to a killed process."""
        for marker in _listing(self.root / RUNNING, "*.lock"):
            with suppress(OSError), try_run_lock(marker):
                pass  # taken only if free; releasing a taken lock removes its file

    def _leftovers(self) -> dict[str, list[Path]]:
        """Hidden folders by run folder name (run id[:16]); lock files with no folders."""
        found: dict[str, list[Path]] = {}
        for path in _listing(self.runs, "*/*/.*-*"):
            if path.name.startswith((TMP, OLD)):
                found.setdefault(path.name.split("-")[1], []).append(path)
        for path in _listing(self.scratch, f"{SCRATCH}*"):
            found.setdefault(path.name.split("-")[1], []).append(path)
        for path in _listing(self.locks, "*.lock"):
            found.setdefault(path.stem, [])  # freed on release: a leftover of a killed holder
        return found

    def _repair(self, final: Path) -> None:
        """Call holding the run's lock: every ``.tmp-``/``.old-`` folder of ``final`` then
        belongs to a dead writer. A replacement killed between its two renames left the old
        record as ``.old-``: it goes back."""
        hidden = [p for p in _listing(final.parent, f".*-{final.name}-*") if _is_hidden(p)]
        old = [p for p in hidden if p.name.startswith(OLD) and (p / RECORD).is_file()]
        if old and not final.exists():
            newest = max(old, key=lambda p: p.stat().st_mtime)
            with suppress(OSError):
                os.rename(newest, final)
        for path in hidden:
            shutil.rmtree(path, ignore_errors=True)

    def _remove_scratch(self, name: str) -> None:
        """Call holding the run's lock, before opening a scratch folder of one's own."""
        for path in _listing(self.scratch, f"{SCRATCH}{name}-*"):
            shutil.rmtree(path, ignore_errors=True)

    def _remove_old_probes(self) -> None:
        cutoff = time.time() - PROBE_MAX_AGE_S
        for path in _listing(self.runs, f"{PROBE}*"):
            with suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def record_paths(self) -> Iterator[Path]:
        if not self.runs.is_dir():
            return
        for path in sorted(self.runs.glob(f"*/*/*/{RECORD}")):
            if not path.parent.name.startswith("."):
                yield path

    def records(self) -> Iterator[ResultRecord]:
        for path in self.record_paths():
            yield load_record(path)

    def lookup(self, prefix: str) -> Path:
        """The record whose run id starts with ``prefix`` (or a path to one)."""
        as_path = Path(prefix)
        if as_path.is_file():
            return as_path
        if (as_path / RECORD).is_file():
            return as_path / RECORD
        # Folders are named by the hash's first 16 characters; only a longer id needs a read.
        matches = [p for p in self.record_paths() if p.parent.name.startswith(prefix[:16])]
        if len(prefix) > 16:
            matches = [p for p in matches if load_record(p).run_id.startswith(prefix)]
        if not matches:
            raise GcdbenchError(
                f"no run {prefix!r} in {self.root}; `gcdbench show` with no argument lists runs."
            )
        if len(matches) > 1:
            raise GcdbenchError(
                f"run id {prefix!r} is ambiguous ({len(matches)} runs); give more of it."
            )
        return matches[0]


def load_record(path: Path) -> ResultRecord:
    try:
        return ResultRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GcdbenchError(
            f"cannot read result record {path} ({type(exc).__name__}: {exc}); "
            "delete it or re-run with --force."
        ) from None


def publish_dir(tmp: Path, final: Path) -> None:
    """Move the complete folder ``tmp`` to ``final``, replacing any folder there so that a
    reader always finds the old folder or the new one. After a swap ``tmp`` holds the old
    folder (the caller removes it); callers hold ``final``'s lock."""
    if not final.exists():
        os.rename(tmp, final)
    elif not _exchange(tmp, final):
        # No atomic swap here: a kill between these renames leaves only `old`, which the
        # next open of the store renames back (ResultsStore._repair).
        old = final.parent / f"{OLD}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)


#: renameat2/renamex_np errors meaning "this file system or kernel cannot swap".
_NO_SWAP = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # Linux renameat2 flag
_RENAME_SWAP = 2  # macOS renamex_np flag


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step; False where that is not possible here."""
    swap = _swap_function()
    if swap is None:
        return False
    if swap(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_SWAP:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


@cache
def _swap_function() -> Callable[[bytes, bytes], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        renameat2 = libc.renameat2
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        renameat2.argtypes += [ctypes.c_uint]
        renameat2.restype = ctypes.c_int
        return lambda a, b: int(renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE))
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        renamex_np = libc.renamex_np
        renamex_np.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        renamex_np.restype = ctypes.c_int
        return lambda a, b: int(renamex_np(a, b, _RENAME_SWAP))
    return None


def _listing(folder: Path, pattern: str) -> list[Path]:
    """``folder.glob(pattern)``, empty when the folder is missing or unreadable."""
    try:
        return list(folder.glob(pattern)) if folder.is_dir() else []
    except OSError:
        return []


def _is_hidden(path: Path) -> bool:
    return path.name.startswith((TMP, OLD))
