"""What ``--executor ray`` needs beyond one task per run (docs/cluster.md):

* **Resources per run.** A method declares what one run needs (``Method.resources``);
  ``--ray-resources METHOD=cpus:N,gpus:N,memory_gb:N`` or ``GCDBENCH_RAY_RESOURCES`` override
  it for one sweep, and the executor asks Ray for exactly that. Not part of any identity:
  where a run runs does not change its result.
* **Workers without a shared disk** (``--ray-no-shared-disk`` or
  ``GCDBENCH_RAY_NO_SHARED_DISK=1``). A worker runs in a store and a ledger of its own, in a
  temporary folder, seeded with what the driver's store already knows about the spec (its
  records, so a done run is skipped; its failure record, so attempts keep counting) and a
  snapshot of the driver's ledger (so known answers are not asked again). It sends back the
  files its run wrote or removed and the ledger rows it added; the driver alone writes them
  into the real store (``publish_dir``, under the run's lock) and ledger (``insert_rows``,
  first answer wins). SQLite over a network file system is never involved.

Chosen rather than detected: a worker that sees *a* folder at the driver's results path may
see another machine's local folder, and records would scatter silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from gcdbench import registry
from gcdbench.api.executor import Outcome
from gcdbench.api.method import Resources
from gcdbench.api.spec import RunSpec
from gcdbench.api.values import parse_value
from gcdbench.errors import GcdbenchError
from gcdbench.llm.cluster_limit import ClusterLimit, limit_from_env
from gcdbench.runner.store import RECORD

if TYPE_CHECKING:
    from gcdbench.feedback.ledger import Ledger
    from gcdbench.runner.run import RunOptions
    from gcdbench.runner.store import ResultsStore

RESOURCES_ENV = "GCDBENCH_RAY_RESOURCES"
NO_SHARED_DISK_ENV = "GCDBENCH_RAY_NO_SHARED_DISK"
#: Where a worker without a shared disk keeps its temporary store (default: the system's).
SCRATCH_ENV = "GCDBENCH_RAY_SCRATCH"
RESOURCE_KEYS = ("cpus", "gpus", "memory_gb")
EXAMPLE = "glean=cpus:4,gpus:1,memory_gb:16"
GIB = 1024**3
#: Store folders a worker's run leaves that mean nothing elsewhere (locks, scratch).
LOCAL_ONLY = ("locks", "running", ".tmp")

Overrides = Mapping[str, Mapping[str, float | None]]


# -- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaySettings:
    """The Ray executor's settings: flags first, then the environment (``gcdbench sweep``
    reads them from there), checked before anything runs."""

    resources: Overrides = field(default_factory=dict)
    shared_disk: bool = True
    llm_limit: ClusterLimit = field(default_factory=ClusterLimit)

    @classmethod
    def resolve(
        cls, resources: Overrides | None = None, shared_disk: bool | None = None
    ) -> RaySettings:
        from_env = parse_resources(_env_entries(), RESOURCES_ENV)
        given = dict(resources or {})
        merged = {m: {**from_env.get(m, {}), **given.get(m, {})} for m in {*from_env, *given}}
        if shared_disk is None:
            shared_disk = not _env_flag(NO_SHARED_DISK_ENV)
        return cls(merged, shared_disk, limit_from_env())


def executor_options(
    executor: str, values: Sequence[str], no_shared_disk: bool, methods: Sequence[str]
) -> dict[str, Any]:
    """``gcdbench run``'s Ray flags as the executor's keyword arguments, checked (environment
    included) before anything is written."""
    if executor != "ray":
        if values or no_shared_disk:
            raise GcdbenchError(
                "--ray-resources and --ray-no-shared-disk apply to --executor ray; add "
                "--executor ray or drop them."
            )
        return {}
    resources = parse_resources(values, "--ray-resources")
    stray = sorted(set(resources) - set(methods))
    if stray:
        raise GcdbenchError(
            f"--ray-resources names {', '.join(map(repr, stray))}, which this command does not "
            f"run; name {', '.join(map(repr, methods))} or drop it."
        )
    return {"settings": RaySettings.resolve(resources, False if no_shared_disk else None)}


def parse_resources(values: Iterable[str], source: str) -> dict[str, dict[str, float | None]]:
    """``METHOD=cpus:N,gpus:N,memory_gb:N`` entries as {method: the fields they set}."""
    out: dict[str, dict[str, float | None]] = {}
    for value in values:
        method, sep, body = (part.strip() for part in value.partition("="))
        if not sep or not method or not body:
            raise GcdbenchError(
                f"{source} takes METHOD=cpus:N,gpus:N,memory_gb:N, got {value!r}; "
                f"e.g. {_example(source)}."
            )
        try:
            registry.get("method", method)
        except GcdbenchError as exc:
            raise GcdbenchError(f"{source}: {exc}") from None
        if method in out:
            raise GcdbenchError(f"{source} sets method {method!r} twice; give it one entry.")
        out[method] = _resource_fields(body, method, source)
    return out


def _resource_fields(body: str, method: str, source: str) -> dict[str, float | None]:
    fields: dict[str, float | None] = {}
    for item in body.split(","):
        key, sep, raw = (part.strip() for part in item.partition(":"))
        if key not in RESOURCE_KEYS:
            known = ", ".join(RESOURCE_KEYS)
            raise GcdbenchError(
                f"{source} {method}: unknown key {key!r}; use {known}, e.g. {_example(source)}."
            )
        if not sep or not raw:
            raise GcdbenchError(f"{source} {method}: {key} has no value; e.g. {key}:2.")
        try:
            none_ok = key == "memory_gb" and raw.lower() == "none"
            fields[key] = None if none_ok else float(parse_value(raw, float))
        except ValueError:
            raise GcdbenchError(
                f"{source} {method}: {key} must be a number, got {raw!r}."
            ) from None
    try:
        Resources(**fields)  # type: ignore[arg-type]
    except GcdbenchError as exc:
        raise GcdbenchError(f"{source} {method}: {exc}") from None
    return fields


def _example(source: str) -> str:
    if source == RESOURCES_ENV:
        return f'{RESOURCES_ENV}="{EXAMPLE};kmeans=cpus:1"'
    return f"{source} {EXAMPLE}"


def _env_entries() -> list[str]:
    return [e for e in os.environ.get(RESOURCES_ENV, "").split(";") if e.strip()]


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return False
    try:
        return bool(parse_value(raw, bool))
    except ValueError:
        raise GcdbenchError(f"{name}={raw!r} must be 1 or 0 (true or false).") from None


# -- resources ----------------------------------------------------------------------------------


def resources_for(method: str, overrides: Overrides) -> Resources:
    """What one run of ``method`` asks for: its declaration, then the sweep's overrides."""
    declared = getattr(registry.get("method", method), "resources", Resources())
    if not isinstance(declared, Resources):
        raise GcdbenchError(
            f"method {method!r} declares resources of type {type(declared).__name__}; the "
            "plugin must set gcdbench.api.method.Resources(cpus=..., gpus=..., memory_gb=...)."
        )
    return dataclasses.replace(declared, **overrides.get(method, {}))  # type: ignore[arg-type]


def ray_options(resources: Resources) -> dict[str, float]:
    """``Resources`` as Ray's task options."""
    options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus}
    if resources.memory_gb is not None:
        options["memory"] = float(int(resources.memory_gb * GIB))
    return options


def describe(resources: Resources) -> str:
    parts = [f"{resources.cpus:g} CPU", f"{resources.gpus:g} GPU"]
    if resources.memory_gb is not None:
        parts.append(f"{resources.memory_gb:.4g} GB memory")
    return ", ".join(parts)


def check_feasible(
    requests: Mapping[str, Resources], nodes: Sequence[Mapping[str, Any]], local_workers: bool
) -> None:
    """Stop, before any task waits forever, when no live node could run a method's run."""
    offers = [dict(n.get("Resources", {})) for n in nodes if n.get("Alive", True)]
    for method, wanted in sorted(requests.items()):
        if any(_fits(wanted, offer) for offer in offers):
            continue
        largest = Resources(
            cpus=max([o.get("CPU", 0.0) for o in offers] + [1e-9]),
            gpus=max([o.get("GPU", 0.0) for o in offers] + [0.0]),
            memory_gb=max([o.get("memory", 0.0) / GIB for o in offers] + [1e-9]),
        )
        more = ", give the local Ray instance more with --workers" if local_workers else ""
        raise GcdbenchError(
            f"--executor ray: one {method} run asks for {describe(wanted)}, more than any node "
            f"of the Ray cluster offers (at most {describe(largest)}); lower it with "
            f"--ray-resources {method}=cpus:N,gpus:N (or {RESOURCES_ENV}){more}, or add a node "
            "that has it."
        )


def _fits(wanted: Resources, offer: Mapping[str, float]) -> bool:
    memory = 0.0 if wanted.memory_gb is None else wanted.memory_gb * GIB
    return (
        wanted.cpus <= offer.get("CPU", 0.0)
        and wanted.gpus <= offer.get("GPU", 0.0)
        and memory <= offer.get("memory", 0.0)
    )


# -- workers without a shared disk: the worker's side -------------------------------------------


@dataclass
class Shipment:
    """What a worker's run changed, for the driver to write: the outcome (its record path
    relative to the store), files written (path -> bytes), seeded files it removed, the
    ledger rows it added (in ``gcdbench.feedback.ledger.COLUMNS`` order) and the path of
    the temporary ledger it added them to (records name it)."""

    outcome: Outcome
    files: dict[str, bytes]
    removed: list[str]
    ledger_rows: list[tuple[Any, ...]]
    worker_ledger: str


def run_shipped(
    job: Callable[[RunSpec], Outcome],
    spec: RunSpec,
    seeds: Mapping[str, bytes],
    snapshot: bytes | None,
) -> Shipment:
    """Run ``job`` on a store and ledger of this worker's own, and say what changed."""
    options = options_of(job)
    root = Path(os.environ.get(SCRATCH_ENV) or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gcdbench-ray-", dir=root))
    try:
        results, ledger = scratch / "results", scratch / "ledger.sqlite"
        for rel, data in seeds.items():
            (results / rel).parent.mkdir(parents=True, exist_ok=True)
            (results / rel).write_bytes(data)
        if snapshot is not None:
            ledger.write_bytes(snapshot)
        start = _last_rowid(ledger)
        moved = dataclasses.replace(options, results_dir=results, ledger=str(ledger))
        outcome = with_options(job, moved)(spec)
        files, removed = _changes(results, seeds)
        rows = _rows_after(ledger, start)
        return Shipment(_relative(outcome, results), files, removed, rows, str(ledger))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def options_of(job: Callable[[RunSpec], Outcome]) -> RunOptions:
    """The :class:`RunOptions` of a ``gcdbench run`` or ``sweep`` job."""
    from gcdbench.runner.run import RunOptions

    options = job.keywords.get("options") if isinstance(job, partial) else None
    if not isinstance(options, RunOptions):
        raise GcdbenchError(
            "--ray-no-shared-disk runs the jobs of gcdbench run and gcdbench sweep only; drop "
            f"it (or {NO_SHARED_DISK_ENV}) for this one."
        )
    return options


def with_options(job: Callable[[RunSpec], Outcome], options: RunOptions) -> Any:
    assert isinstance(job, partial)  # options_of checked it
    return partial(job.func, *job.args, **{**job.keywords, "options": options})


def _changes(results: Path, seeds: Mapping[str, bytes]) -> tuple[dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    for path in sorted(p for p in results.rglob("*") if p.is_file()):
        rel = path.relative_to(results)
        if rel.parts[0] in LOCAL_ONLY or any(part.startswith(".") for part in rel.parts):
            continue
        data = path.read_bytes()
        if seeds.get(rel.as_posix()) != data:
            files[rel.as_posix()] = data
    removed = [rel for rel in seeds if not (results / rel).exists()]
    return files, removed


def _relative(outcome: Outcome, results: Path) -> Outcome:
    if outcome.record_path is None:
        return outcome
    rel = Path(outcome.record_path).relative_to(results).as_posix()
    return dataclasses.replace(outcome, record_path=rel)


def _last_rowid(ledger: Path) -> int:
    if not ledger.is_file():
        return 0
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        if not _has_answers(db):
            return 0
        return int(db.execute("SELECT COALESCE(MAX(rowid), 0) FROM answers").fetchone()[0])


def _rows_after(ledger: Path, start: int) -> list[tuple[Any, ...]]:
    from gcdbench.feedback.ledger import COLUMNS

    if not ledger.is_file():
        return []
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        if not _has_answers(db):
            return []
        query = f"SELECT {','.join(COLUMNS)} FROM answers WHERE rowid > ? ORDER BY rowid"
        return [tuple(row) for row in db.execute(query, (start,))]


def _has_answers(db: sqlite3.Connection) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='answers'")
    return found.fetchone() is not None


# -- workers without a shared disk: the driver's side -------------------------------------------


class DriverStore:
    """The driver's results store and ledger, the only ones written: what each worker is
    given to start from, and what it sends back, written in."""

    def __init__(self, job: Callable[[RunSpec], Outcome], specs: Sequence[RunSpec]) -> None:
        from gcdbench.feedback.ledger import default_path
        from gcdbench.runner.store import ResultsStore

        self.options = options_of(job)
        self.store: ResultsStore = ResultsStore(self.options.results_dir)
        self.root = self.store.root
        self.ledger_path = default_path(self.options.ledger)
        self.asks_llm = any(spec.llm for spec in specs)
        self._ledger: Ledger | None = None
        self._records: dict[tuple[str, str], dict[str, list[Path]]] = {}

    def seeds(self, spec: RunSpec) -> dict[str, bytes]:
        """The spec's records (a done run is skipped) and failure record (attempts count
        on), relative to the store."""
        from gcdbench.runner.sweep_status import FailureLog

        failures = FailureLog(self.root)
        paths = [*self._records_of(spec), failures.path(spec), failures.traceback_path(spec)]
        return {p.relative_to(self.root).as_posix(): p.read_bytes() for p in paths if p.is_file()}

    def _records_of(self, spec: RunSpec) -> list[Path]:
        from gcdbench.runner.store import load_record

        key = (spec.dataset, spec.method)
        if key not in self._records:
            by_spec: dict[str, list[Path]] = {}
            folder = self.store.runs / spec.dataset / spec.method
            for path in sorted(folder.glob(f"*/{RECORD}")):
                if not path.parent.name.startswith("."):
                    by_spec.setdefault(load_record(path).spec.hash, []).append(path)
            self._records[key] = by_spec
        return self._records[key].get(spec.hash, [])

    def snapshot(self) -> bytes | None:
        """A consistent copy of the driver's ledger (SQLite's backup), for runs that ask."""
        if not self.asks_llm or not self.ledger_path.is_file():
            return None
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "ledger.sqlite"
            with contextlib.closing(sqlite3.connect(copy)) as target:
                self._open_ledger().connection.backup(target)
            return copy.read_bytes()

    def publish(self, shipment: Shipment) -> Outcome:
        """Write what a worker sent; its outcome, pointing into this store."""
        runs: dict[str, dict[str, bytes]] = {}
        for rel, data in shipment.files.items():
            parts = self._checked(rel).parts
            if parts[0] == "runs" and len(parts) >= 5:
                runs.setdefault("/".join(parts[:4]), {})["/".join(parts[4:])] = data
            else:
                # A failure's reason may name the worker's ledger copy (a --llm-offline miss):
                # name the ledger the copy was taken from, as the error's fix means.
                worker, here = shipment.worker_ledger.encode(), str(self.ledger_path).encode()
                self._write_file(rel, data.replace(worker, here) if parts[0] == "failed" else data)
        for folder, content in runs.items():
            if RECORD in content:
                content[RECORD] = self._ledger_named(content[RECORD], shipment.worker_ledger)
            self._publish_run(folder, content)
        for rel in shipment.removed:
            with contextlib.suppress(FileNotFoundError):
                (self.root / self._checked(rel)).unlink()
        if shipment.ledger_rows:
            self._open_ledger().insert_rows(shipment.ledger_rows)
        outcome = shipment.outcome
        if outcome.error is not None:
            error = outcome.error.replace(shipment.worker_ledger, str(self.ledger_path))
            outcome = dataclasses.replace(outcome, error=error)
        if outcome.record_path is not None:
            path = self.root / self._checked(outcome.record_path)
            outcome = dataclasses.replace(outcome, record_path=str(path))
        return outcome

    def _ledger_named(self, record: bytes, worker_ledger: str) -> bytes:
        """The record's ``feedback.ledger`` names the ledger its answers are now in (this
        one), not the worker's temporary copy, which is gone; nothing else changes."""
        data = json.loads(record)
        feedback = data.get("feedback")
        if not isinstance(feedback, dict) or feedback.get("ledger") != worker_ledger:
            return record
        feedback["ledger"] = str(self.ledger_path)
        # As gcdbench.util.files.write_json writes every record.
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        return text.encode("utf-8")

    def _checked(self, rel: str) -> PurePosixPath:
        path = PurePosixPath(rel)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise GcdbenchError(f"a Ray worker sent {rel!r}, a path outside the results store.")
        return path

    def _publish_run(self, folder: str, content: Mapping[str, bytes]) -> None:
        """A run's folder, filled under a hidden name and renamed into place under the
        run's lock, as the store writes its own; a record already there stays (as in the
        ledger, the first one wins) unless the runs were forced."""
        from gcdbench.runner.locks import lock_file, run_lock
        from gcdbench.runner.store import TMP, publish_dir

        final = self.root / folder
        with run_lock(lock_file(self.store.locks, final.name), final.name[:10]):
            if (final / RECORD).is_file() and not self.options.force:
                return
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f"{TMP}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                for rel, data in content.items():
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).write_bytes(data)
                publish_dir(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def _write_file(self, rel: str, data: bytes) -> None:
        from gcdbench.util.files import atomic_open

        with atomic_open(self.root / rel, "wb") as handle:
            handle.write(data)

    def _open_ledger(self) -> Ledger:
        from gcdbench.feedback.ledger import Ledger

        if self._ledger is None:
            self._ledger = Ledger(self.ledger_path)
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
