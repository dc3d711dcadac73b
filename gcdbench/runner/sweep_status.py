"""What a sweep knows about each spec: done, running, failed, stale or pending.

Beside the results store's records (never changed here) a sweep keeps two small things:

* ``<results>/failed/<spec hash[:16]>.json``: the last failure of a spec run by
  ``gcdbench sweep`` (its spec, a one-line reason, when, how many attempts) and
  ``<spec hash[:16]>.traceback.txt`` beside it; written atomically, removed when the spec
  later succeeds. Keyed by spec hash because a run can fail before its run id is known.
* ``<results>/running/<spec hash[:16]>.lock``: held with an exclusive ``flock`` by the
  process running the spec. The OS drops the lock when that process exits, however it
  exits, so a held lock means a live process; a file whose lock is free is a leftover.

A spec's state (:class:`StatusReader`) compares the store with the run id the spec would
get now (gcdbench/runner/identity.py): a record under that id is *done*; a record of the
same spec under another id (the data, code or model changed) is *stale*. docs/sweeps.md
says what each state can and cannot see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gcdbench import registry
from gcdbench.api.executor import Outcome
from gcdbench.api.record import ResultRecord
from gcdbench.api.spec import RunSpec
from gcdbench.errors import GcdbenchError
from gcdbench.runner.identity import run_identity, stale_reasons
from gcdbench.runner.store import RECORD, load_record
from gcdbench.runner.store import RUNNING as RUNNING_FOLDER
from gcdbench.util.files import atomic_open, same_file, write_json

if TYPE_CHECKING:
    from gcdbench.api.dataset import DatasetParts
    from gcdbench.api.task import GCDSplit
    from gcdbench.runner.run import RunOptions

DONE, RUNNING, FAILED, STALE, PENDING = "done", "running", "failed", "stale", "pending"
STATES = (DONE, RUNNING, FAILED, STALE, PENDING)
#: The Outcome status of a spec a sweep left alone because another process runs it.
BUSY = "running elsewhere"
FAILED_DIR, RUNNING_DIR = "failed", RUNNING_FOLDER
REASON_CHARS = 300


def spec_key(spec: RunSpec) -> str:
    return spec.hash[:16]


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to :data:`REASON_CHARS`."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


# -- failure records ---------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    spec_hash: str
    kind: str  # "error": a GcdbenchError (its message says the fix); "crash": anything else
    reason: str
    failed_at: str
    attempts: int
    traceback_file: str | None  # relative to the results folder


class FailureLog:
    """The failure records of one results store."""

    def __init__(self, results_dir: Path) -> None:
        self.root = results_dir
        self.folder = results_dir / FAILED_DIR

    def path(self, spec: RunSpec) -> Path:
        return self.folder / f"{spec_key(spec)}.json"

    def traceback_path(self, spec: RunSpec) -> Path:
        return self.folder / f"{spec_key(spec)}.traceback.txt"

    def record(self, spec: RunSpec, exc: BaseException, trace: str) -> Failure:
        previous = self.get(spec)
        tb_path = self.traceback_path(spec)
        with atomic_open(tb_path, "w", encoding="utf-8") as fh:
            fh.write(trace)
        failure = Failure(
            spec_hash=spec.hash,
            kind="error" if isinstance(exc, GcdbenchError) else "crash",
            reason=one_line(exc),
            failed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            attempts=(previous.attempts if previous else 0) + 1,
            traceback_file=str(tb_path.relative_to(self.root)),
        )
        body = {**dataclasses.asdict(failure), "spec": spec.to_dict()}
        write_json(self.path(spec), {**body, "host": socket.gethostname(), "pid": os.getpid()})
        return failure

    def clear(self, spec: RunSpec) -> None:
        for path in (self.path(spec), self.traceback_path(spec)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def get(self, spec: RunSpec) -> Failure | None:
        path = self.path(spec)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return Failure(**{k: raw[k] for k in Failure.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Still a failure (only a failing sweep writes here), with what went wrong.
            reason = f"failure record {path} is unreadable ({type(exc).__name__})"
            return Failure(spec.hash, "crash", reason, "", 1, None)


# -- running markers -----------------------------------------------------------------------


def marker_path(results_dir: Path, spec: RunSpec) -> Path:
    return results_dir / RUNNING_DIR / f"{spec_key(spec)}.lock"


@contextlib.contextmanager
def running_marker(results_dir: Path, spec: RunSpec) -> Iterator[bool]:
    """Hold the spec's running marker: yields True while held, False when another live
    process holds it. Where the file system cannot lock, yields True unmarked."""
    path = marker_path(results_dir, spec)
    fd = _take(path)
    if fd is False:
        yield False
        return
    try:
        yield True
    finally:
        if isinstance(fd, int):
            with contextlib.suppress(OSError):
                if same_file(fd, path):  # deleted while held: nobody can lock a dead file
                    path.unlink()
            os.close(fd)


def _take(path: Path) -> int | bool:
    """The locked marker's descriptor; False when held elsewhere; True when unlockable."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            return True
        if same_file(fd, path):
            stamp = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(stamp) + "\n").encode(), 0)
            return fd
        os.close(fd)  # its holder removed it as we opened it: lock the file there now


def is_running(results_dir: Path, spec: RunSpec) -> bool:
    """Whether a live process holds the spec's marker (read-only: creates nothing)."""
    try:
        fd = os.open(marker_path(results_dir, spec), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # cannot tell on this file system
    finally:
        os.close(fd)
    return False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- the job a sweep gives its executor ----------------------------------------------------


def sweep_job(spec: RunSpec, options: RunOptions) -> Outcome:
    """One spec of a sweep, in whatever process the executor runs it: marked running while
    it runs, its failure recorded, an earlier failure removed once it succeeds. Never raises
    for a failed run (an executor's job must not)."""
    from gcdbench.runner.run import execute  # NumPy, pandas: not for `gcdbench status`

    failures = FailureLog(options.results_dir)
    with running_marker(options.results_dir, spec) as mine:
        if not mine:
            return Outcome(spec, BUSY, error="another process is running this spec")
        try:
            outcome = execute(spec, options)
        except Exception as exc:
            status = "failed" if isinstance(exc, GcdbenchError) else "crashed"
            reason = one_line(exc)
            try:
                failures.record(spec, exc, traceback.format_exc())
            except OSError as write_error:
                reason += f" (not recorded: {one_line(write_error)})"
            return Outcome(spec, status, error=reason)
    with contextlib.suppress(OSError):
        failures.clear(spec)
    return outcome


# -- states ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecStatus:
    spec: RunSpec
    state: str
    detail: str = ""  # failed: the reason; stale: why; done: the run id


@dataclass
class StatusReader:
    """Reads the state of specs in one results store. Data sets are read once, each split
    drawn once; nothing is downloaded, nothing written to the store (the hash cache of
    data files may be, as any read of them does)."""

    results_dir: Path
    data_dir: str | None = None
    #: dataset -> why its run ids could not be computed (done/stale then come from the
    #: records' own checks, as in `gcdbench show`)
    notes: dict[str, str] = field(default_factory=dict)
    _parts: dict[str, DatasetParts | None] = field(default_factory=dict)
    _splits: dict[tuple[str, float, float, int], GCDSplit] = field(default_factory=dict)
    _records: dict[tuple[str, str], dict[str, list[tuple[ResultRecord, Path]]]] = field(
        default_factory=dict
    )

    def statuses(self, specs: Sequence[RunSpec]) -> list[SpecStatus]:
        self._records.clear()  # the store may have changed since the last call
        failures = FailureLog(self.results_dir)
        return [self.status(spec, failures) for spec in specs]

    def status(self, spec: RunSpec, failures: FailureLog) -> SpecStatus:
        records = self.records_of(spec)
        run_id = self.run_id(spec)
        current = [r for r, _ in records if r.run_id == run_id]
        if run_id is None:  # judged by the records' own checks
            current = [r for r, _ in records if not stale_reasons(r)]
        if current:
            return SpecStatus(spec, DONE, f"run {current[0].run_id[:10]}")
        if is_running(self.results_dir, spec):
            return SpecStatus(spec, RUNNING)
        failure = failures.get(spec)
        if failure is not None:
            return SpecStatus(spec, FAILED, failure.reason)
        if records:
            record = max((r for r, _ in records), key=_finished)
            why = "; ".join(stale_reasons(record)) or (
                f"recorded as run {record.run_id[:10]}, the run id is now {(run_id or '?')[:10]}"
            )
            return SpecStatus(spec, STALE, why)
        return SpecStatus(spec, PENDING)

    def records_of(self, spec: RunSpec) -> list[tuple[ResultRecord, Path]]:
        key = (spec.dataset, spec.method)
        if key not in self._records:
            by_spec: dict[str, list[tuple[ResultRecord, Path]]] = {}
            folder = self.results_dir / "runs" / spec.dataset / spec.method
            paths = sorted(folder.glob(f"*/{RECORD}")) if folder.is_dir() else []
            for path in paths:
                if not path.parent.name.startswith("."):  # a record being written
                    record = load_record(path)
                    by_spec.setdefault(record.spec_hash, []).append((record, path))
            self._records[key] = by_spec
        return self._records[key].get(spec.hash, [])

    def run_id(self, spec: RunSpec) -> str | None:
        """The run id ``spec`` would get now; None when its data cannot be read here."""
        parts = self.parts(spec.dataset)
        if parts is None:
            return None
        try:
            split = self.split(parts, spec)
            files = {f.name: f.sha256 for f in parts.files}
            return run_identity(spec, split.hash, files).run_id
        except (GcdbenchError, OSError) as exc:  # e.g. an encoder's weights not here
            self.notes.setdefault(spec.dataset, one_line(exc))
            return None

    def parts(self, dataset: str) -> DatasetParts | None:
        if dataset not in self._parts:
            from gcdbench.data.store import locate_dataset

            try:
                definition = registry.get("dataset", dataset)
                folder, _ = locate_dataset(definition, self.data_dir, download=False)
                self._parts[dataset] = definition.load(folder)
            except GcdbenchError as exc:
                self.notes[dataset] = str(exc)
                self._parts[dataset] = None
        return self._parts[dataset]

    def split(self, parts: DatasetParts, spec: RunSpec) -> GCDSplit:
        from gcdbench.data.split import make_split

        key = (spec.dataset, spec.known_ratio, spec.labeled_ratio, spec.seed)
        if key not in self._splits:
            self._splits[key] = make_split(
                parts,
                known_ratio=spec.known_ratio,
                labeled_ratio=spec.labeled_ratio,
                seed=spec.seed,
            )
        return self._splits[key]


def _finished(record: ResultRecord) -> str:
    return str(record.provenance.get("finished_at", ""))


def describe(spec: RunSpec) -> str:
    """One spec in a line, as the sweep's and status's lists show it."""
    preset = f" [{spec.preset}]" if spec.preset else ""
    return f"{spec.label}{preset} on {spec.dataset} kr={spec.known_ratio:g} seed={spec.seed}"


def summary(statuses: Sequence[SpecStatus]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for status in statuses:
        counts[status.state] += 1
    return counts
