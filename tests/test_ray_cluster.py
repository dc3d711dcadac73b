"""Sweeps at cluster scale, on a real local Ray instance of 2 CPUs (docs/cluster.md): each run
asks Ray for its method's resources, one LLM limit holds across worker processes against a
real OpenAI-compatible server on 127.0.0.1, and without a shared disk the driver alone
writes records and ledger rows (an audit hook in every Ray worker logs each write it makes
under the driver's folders)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from llm_servers import ScriptedChatServer

from gcdbench import registry
from gcdbench.api.executor import Outcome
from gcdbench.api.method import Resources
from gcdbench.api.spec import RunSpec
from gcdbench.cli import cli
from gcdbench.errors import GcdbenchError
from gcdbench.llm import cluster_limit
from gcdbench.llm.api import ChatMessage, ChatRequest
from gcdbench.llm.resolve import open_backend
from gcdbench.runner.ray_executor import RayExecutor
from gcdbench.runner.ray_support import RaySettings, parse_resources, ray_options, resources_for
from gcdbench.runner.run import resolve_spec

ray = pytest.importorskip("ray")

FAST = ["--dataset", "massive_scenario", "--known-ratio", "0.5", "--encoder", "bag-of-words"]
LIMIT_ENVS = (cluster_limit.CONCURRENCY_ENV, cluster_limit.RPS_ENV)


# -- a server that keeps when each request was in flight ---------------------------------------


class TimedServer(ScriptedChatServer):
    """:class:`ScriptedChatServer` that also keeps (request id, start, end) of every request."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spans: list[tuple[str, float, float]] = []

    def _reply(self, body: dict[str, Any], auth: str) -> tuple[int, dict[str, str], bytes]:
        start = time.monotonic()
        try:
            return super()._reply(body, auth)
        finally:
            text = str((body.get("messages") or [{}])[-1].get("content", ""))
            with self._lock:
                self.spans.append((text.removeprefix("id="), start, time.monotonic()))


@pytest.fixture
def server() -> Iterator[Callable[..., TimedServer]]:
    servers: list[TimedServer] = []

    def make(**kwargs: Any) -> TimedServer:
        servers.append(TimedServer(**kwargs).__enter__())
        return servers[-1]

    yield make
    for started in servers:
        started.__exit__()


# -- the local Ray instance, with every worker's writes under watch -----------------------------


def _write_watcher(watched: dict[str, str], log_dir: str) -> Callable[[], None]:
    """A Ray worker setup hook: log every write (open for writing, create, rename, remove,
    SQLite connection) the worker makes under the ``watched`` folders, tagged by name."""

    def install() -> None:
        import os

        log = os.path.join(log_dir, f"{os.getpid()}.log")

        def targets(event: str, args: tuple[Any, ...]) -> list[Any]:
            if event == "open":
                path, mode, flags = args
                write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT
                writes = any(c in mode for c in "wax+") if isinstance(mode, str) else False
                writes = writes or (mode is None and bool((flags or 0) & write_flags))
                return [path] if writes else []
            if event == "os.rename":
                return list(args[:2])
            if event in ("os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "sqlite3.connect"):
                return [args[0]]
            return []

        def audit(event: str, args: tuple[Any, ...]) -> None:
            for target in targets(event, args):
                if isinstance(target, int) or target is None:
                    continue
                path = os.path.abspath(os.fsdecode(os.fspath(target)))
                for tag, root in watched.items():
                    if path == root or path.startswith(root + os.sep):
                        with open(log, "a", encoding="utf-8") as handle:
                            handle.write(f"{tag}\t{event}\t{path}\n")

        sys.addaudithook(audit)

    return install


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Any]:
    """``ray.init(num_cpus=2)`` once for the file. Driver stores live under ``driver``;
    workers without a shared disk keep theirs under ``scratch``."""
    base = tmp_path_factory.mktemp("ray-cluster")
    where = SimpleNamespace(
        driver=base / "driver", scratch=base / "worker-scratch", audit=base / "audit"
    )
    for folder in (where.driver, where.scratch, where.audit):
        folder.mkdir()
    # Workers unpickle this file's jobs and hook by value: they cannot import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    env = {
        "GCDBENCH_CACHE": str(tmp_path_factory.getbasetemp() / "gcdbench-cache"),
        "GCDBENCH_DATA": str(shared_data),
        "GCDBENCH_RAY_SCRATCH": str(where.scratch),
        "OMP_NUM_THREADS": "1",
    }
    watched = {"driver": str(where.driver), "scratch": str(where.scratch)}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": env,
            "worker_process_setup_hook": _write_watcher(watched, str(where.audit)),
        },
    )
    try:
        yield where
    finally:
        ray.shutdown()


def _worker_writes(where: Any) -> list[tuple[str, str, str]]:
    rows = []
    for log in where.audit.glob("*.log"):
        for line in log.read_text(encoding="utf-8").splitlines():
            tag, event, path = line.split("\t")
            rows.append((tag, event, path))
    return rows


@pytest.fixture(autouse=True)
def _no_limit_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIMIT_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cluster_limit, "_local", None)


def _encoder(method: str) -> str:
    """A method that fine-tunes its encoder needs one with weights (never loaded here)."""
    return "all-MiniLM-L6-v2" if registry.get("method", method).trains_encoder else "bag-of-words"


def _specs(method: str, seeds: list[int]) -> list[RunSpec]:
    return [
        resolve_spec(method, "massive_scenario", 0.5, seed, encoder=_encoder(method))
        for seed in seeds
    ]


# -- resources -------------------------------------------------------------------------------


def test_a_methods_resources_are_its_declaration_then_the_sweeps_override():
    assert resources_for("kmeans", {}) == Resources(cpus=1.0, gpus=0.0, memory_gb=None)
    overrides = parse_resources(["kmeans=gpus:1,memory_gb:4"], "--ray-resources")
    asked = resources_for("kmeans", overrides)
    assert asked == Resources(cpus=1.0, gpus=1.0, memory_gb=4.0)
    assert ray_options(asked) == {"num_cpus": 1.0, "num_gpus": 1.0, "memory": 4.0 * 1024**3}


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--ray-resources", "kmeans=cpu:2"], {}, "unknown key 'cpu'"),
        (["--ray-resources", "kmeans=cpus:0"], {}, "cpus must be a number > 0"),
        (["--ray-resources", "kmeans"], {}, "takes METHOD=cpus:N"),
        (["--ray-resources", "glean=gpus:1"], {}, "which this command does not run"),
        ([], {"GCDBENCH_RAY_RESOURCES": "kmean=cpus:2"}, "Did you mean 'kmeans'"),
        ([], {cluster_limit.CONCURRENCY_ENV: "many"}, "must be an integer > 0"),
        ([], {"GCDBENCH_RAY_NO_SHARED_DISK": "maybe"}, "must be 1 or 0"),
    ],
)
def test_bad_ray_settings_stop_before_anything_is_written(
    tmp_path, monkeypatch, shared_data, args, env, needle
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    results = tmp_path / "results"
    argv = ["run", "kmeans", *FAST, "--executor", "ray", *args, "--results-dir", str(results)]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith("error: ") and needle in result.stderr
    assert not results.exists()


def test_ray_flags_need_the_ray_executor(tmp_path):
    argv = ["run", "kmeans", *FAST, "--ray-no-shared-disk", "--results-dir", str(tmp_path)]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 2 and "apply to --executor ray" in result.stderr


def _report_resources(spec: RunSpec, out: str) -> Outcome:
    """A job that says what Ray gave it, and when it held it."""
    import os

    import ray as worker_ray

    start = time.monotonic()
    assigned = worker_ray.get_runtime_context().get_assigned_resources()
    time.sleep(1.0)
    report = {"method": spec.method, "cpu": assigned.get("CPU"), "start": start}
    report["end"] = time.monotonic()
    Path(out, f"{spec.method}-{spec.seed}-{os.getpid()}.json").write_text(json.dumps(report))
    return Outcome(spec, "done")


def test_each_run_asks_ray_for_its_methods_resources(local_ray, tmp_path):
    specs = _specs("kmeans", [0, 1]) + _specs("mtp", [0, 1])
    settings = RaySettings.resolve({"kmeans": {"cpus": 2}})
    outcomes = RayExecutor(settings=settings).map(
        partial(_report_resources, out=str(tmp_path)), specs
    )
    assert [o.status for o in outcomes] == ["done"] * 4
    reports = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert sorted((r["method"], r["cpu"]) for r in reports) == [
        ("kmeans", 2.0),
        ("kmeans", 2.0),
        ("mtp", 1.0),
        ("mtp", 1.0),
    ]
    # A run holding both CPUs shares the instance with no other run.
    for wide in (r for r in reports if r["cpu"] == 2.0):
        for other in (r for r in reports if r is not wide):
            assert other["end"] <= wide["start"] or other["start"] >= wide["end"]


def test_a_request_no_node_can_meet_stops_before_any_task(local_ray, tmp_path):
    settings = RaySettings.resolve({"kmeans": {"cpus": 3}})
    with pytest.raises(GcdbenchError, match="more than any node of the Ray cluster offers"):
        RayExecutor(settings=settings).map(
            partial(_report_resources, out=str(tmp_path)), _specs("kmeans", [0])
        )
    assert not list(tmp_path.glob("*.json"))


# -- one LLM endpoint, one limit ---------------------------------------------------------------


def _ask_endpoint(spec: RunSpec, base_url: str, n: int, together: str | None = None) -> Outcome:
    """A job that asks the endpoint ``n`` questions at once through the real backend. With
    ``together`` (a folder) it starts asking only once the other job is ready too (a worker
    runs one job at a time, so the two ask from two processes at once) and leaves there when
    it asked."""
    import openai  # noqa: F401 - loaded before the meeting: it takes a second on a busy CPU

    backend = open_backend("openai:test-model", {"base_url": base_url})
    if together is not None and not _meet(Path(together), spec.seed):
        return Outcome(spec, "failed", error="the other job never came")
    requests = [
        ChatRequest((ChatMessage("user", f"id=s{spec.seed}-{i}"),), max_tokens=8) for i in range(n)
    ]
    start = time.monotonic()
    results = backend.chat(requests)
    if together is not None:
        span = json.dumps([start, time.monotonic()])
        Path(together, f"span-{spec.seed}.json").write_text(span)
    errors = [r.error for r in results if not r.ok]
    return Outcome(spec, "failed" if errors else "done", error="; ".join(map(str, errors)) or None)


def _meet(folder: Path, seed: int, timeout_s: float = 60.0) -> bool:
    (folder / f"ready-{seed}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob("ready-*"))) < 2:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _ask_twice(server: TimedServer, n: int, folder: Path) -> tuple[list[Outcome], list[Any]]:
    """Two jobs, each asking ``n`` questions at once; their outcomes and asking spans."""
    together = folder / f"together-{time.monotonic_ns()}"
    together.mkdir()
    job = partial(_ask_endpoint, base_url=server.base_url, n=n, together=str(together))
    outcomes = RayExecutor().map(job, _specs("kmeans", [0, 1]))
    return outcomes, [json.loads(p.read_text()) for p in together.glob("span-*.json")]


def test_the_cluster_limit_holds_across_worker_processes(local_ray, server, monkeypatch, tmp_path):
    unlimited = server(latency_s=0.3)
    outcomes, _ = _ask_twice(unlimited, 6, tmp_path)
    assert [o.status for o in outcomes] == ["done", "done"]
    assert unlimited.max_in_flight > 2  # what the limit below must prevent

    monkeypatch.setenv(cluster_limit.CONCURRENCY_ENV, "2")
    limited = server(latency_s=0.3)
    outcomes, spans = _ask_twice(limited, 8, tmp_path)
    assert [o.status for o in outcomes] == ["done", "done"]
    assert len(limited.spans) == 16
    # both processes were asking at the same time, and the server saw 2 requests at most
    assert len(spans) == 2 and max(s for s, _ in spans) < min(e for _, e in spans)
    assert limited.max_in_flight == 2
    # the two waited for each other: 16 requests of 0.3 s, 2 at a time, take 8 x 0.3 s
    starts = [start for _, start, _ in limited.spans]
    assert max(end for _, _, end in limited.spans) - min(starts) >= 8 * 0.3 * 0.95


def test_the_cluster_rate_spaces_requests_of_every_worker(local_ray, server, monkeypatch, tmp_path):
    monkeypatch.setenv(cluster_limit.RPS_ENV, "8")
    paced = server()
    outcomes, spans = _ask_twice(paced, 5, tmp_path)
    assert [o.status for o in outcomes] == ["done", "done"]
    starts = sorted(start for _, start, _ in paced.spans)
    assert len(starts) == 10
    # 10 requests at 8 per second from one clock: at least 9/8 s from the first to the last
    assert starts[-1] - starts[0] >= 0.85 * 9 / 8
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # both asking at once


def test_outside_ray_the_limit_holds_per_process_with_one_warning(server, monkeypatch, capsys):
    monkeypatch.setenv(cluster_limit.CONCURRENCY_ENV, "2")
    endpoint = server(latency_s=0.2)
    spec = _specs("kmeans", [0])[0]
    for _ in range(2):
        assert _ask_endpoint(spec, endpoint.base_url, 6).status == "done"
    assert endpoint.max_in_flight == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "only under --executor ray" in warnings[0]


# -- workers without a shared disk ------------------------------------------------------------


def _ledger_rows(path: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT key, run_hash FROM answers").fetchall()


def test_without_a_shared_disk_the_driver_writes_every_record_and_answer(
    local_ray, server, monkeypatch, shared_data
):
    store = local_ray.driver / "no-shared-disk"
    results, ledger = store / "results", store / "ledger.sqlite"
    endpoint = server(latency_s=0.05)
    monkeypatch.setenv(cluster_limit.CONCURRENCY_ENV, "2")
    argv = [
        "run", "keyphrase", "--preset", "smoke", *FAST, "--seeds", "3,4",
        "--llm", "openai:test-model", "--llm-option", f"base_url={endpoint.base_url}",
        "--executor", "ray", "--ray-no-shared-disk", "--results-dir", str(results),
        "--ledger", str(ledger), "--data-dir", str(shared_data), "-q",
    ]  # fmt: skip

    def sweep() -> Any:
        return CliRunner().invoke(cli, argv, catch_exceptions=False)

    first = sweep()
    assert first.exit_code == 0, first.output
    records = sorted(results.glob("runs/*/keyphrase/*/record.json"))
    bodies = [json.loads(p.read_text()) for p in records]
    assert sorted(b["spec"]["seed"] for b in bodies) == [3, 4]
    assert all((p.parent / "predictions.csv").is_file() for p in records)
    assert {b["feedback"]["ledger"] for b in bodies} == {str(ledger)}
    rows = _ledger_rows(ledger)
    assert len(rows) == sum(endpoint.answered.values()) > 0
    assert {run_hash for _, run_hash in rows} == {b["spec_hash"] for b in bodies}
    assert endpoint.max_in_flight <= 2
    writes = _worker_writes(local_ray)
    assert [w for w in writes if w[2].startswith(str(store))] == []  # the driver wrote it all
    assert any(w[0] == "scratch" for w in writes)  # the workers wrote in their own stores
    assert list(local_ray.scratch.iterdir()) == []  # ... and removed them

    # Again: each worker is given the driver's records, so both runs are skipped.
    asked = sum(endpoint.hits.values())
    before = [p.read_bytes() for p in records]
    again = sweep()
    assert again.exit_code == 0, again.output
    assert again.stderr.count("skipped keyphrase") == 2
    assert sum(endpoint.hits.values()) == asked
    assert [p.read_bytes() for p in records] == before


def test_with_a_shared_disk_workers_write_the_store_themselves(local_ray, shared_data):
    """The watcher's control: the same kind of run, workers writing the driver's store."""
    results = local_ray.driver / "shared-disk" / "results"
    argv = ["run", "kmeans", *FAST, "--seeds", "5", "--executor", "ray"]
    argv += ["--results-dir", str(results), "--data-dir", str(shared_data), "-q"]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = {path for _, _, path in _worker_writes(local_ray) if path.startswith(str(results))}
    assert any(path.endswith("record.json") for path in written)
