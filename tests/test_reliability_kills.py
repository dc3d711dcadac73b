"""Kills (issue #17, item 2): real ``gcdbench run`` and ``gcdbench sweep`` processes are
SIGKILLed by their PID at seeded random points, then run again with the same command; the
restarted command must end exactly where an uninterrupted one does.

After each kill: every visible record is whole, the ledger passes ``PRAGMA integrity_check``.
After the restart: metrics and ``predictions.csv`` bytes equal an uninterrupted run's, each
run is recorded once, the ledger holds the uninterrupted run's questions and no answer the
ledger kept was asked for again (counted by the LLM server), and nothing temporary is left
(the store's hidden folders, scratch folders and locks, the cache's temp folders, the system
temp folder's ``gcdbench*``).

The runs: GLEAN (smoke preset, tiny random BERT) on a slice of the real BANKING data, asking
a real chat-completions server on 127.0.0.1 (tests/llm_servers.py) through the ``openai``
backend, and K-means on MASSIVE scenario for ``--force`` and sweeps. benchmarks/soak.py
repeats these with hundreds of kills; the helpers here are what it runs.

Run as a script, this file is ``gcdbench`` with the BANKING slice registered as a dataset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SLICE = "banking-slice6"
SLICES = {SLICE: 6}
KMEANS_DATASET = "massive_scenario"  # the quickest real set
#: Two requests in flight, each answered after LATENCY_S: a question batch lasts long enough
#: (about a second) for a kill to land inside it.
LATENCY_S = 0.1
CONCURRENCY = 2
#: Where a kill lands in a GLEAN run; benchmarks/soak.py draws from these. "anywhere": a
#: seeded moment within the uninterrupted run's duration; "record written": as soon as the
#: record is visible, while the run tidies up.
GLEAN_POINTS = (
    "anywhere",
    "pre-training",
    "first round",
    "feedback batch",
    "record write",
    "record written",
)
#: Every wait in a test ends; a run here takes seconds (minutes on a very busy machine).
TIMEOUT_S = 300.0
#: The counts of a suite's summary line that must be 0 (docs/reliability.md).
ZERO = (
    "results_lost",
    "duplicates",
    "tracebacks",
    "questions_asked_twice",
    "differing_results",
    "leftovers",
    "other_problems",
)


# -- the places a user has -----------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """What every command reads: the data roots, the encoder folder, the LLM to ask."""

    slices: Path  # a data root holding SLICE
    data: Path  # the benchmark data (KMEANS_DATASET)
    bert: Path
    llm: str  # the --llm spec of the chat server


@dataclass(frozen=True)
class Tree:
    """One user's folders: results store, cache, ledger and system temp folder."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def systmp(self) -> Path:
        return self.root / "tmp"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GCDBENCH_CACHE": str(self.cache),
            "TMPDIR": str(self.systmp),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }


def llm_spec(base_url: str) -> str:
    return f"openai:m;base_url={base_url};concurrency={CONCURRENCY}"


def glean_args(inputs: Inputs, tree: Tree, *extra: str) -> list[str]:
    return [
        *("run", "glean", "-d", SLICE, "--known-ratio", "0.5", "--preset", "smoke"),
        *("--encoder", str(inputs.bert), "--llm", inputs.llm, "--ledger", str(tree.ledger)),
        *("--data-dir", str(inputs.slices), "--results-dir", str(tree.results), *extra),
    ]


def kmeans_args(inputs: Inputs, tree: Tree, *extra: str) -> list[str]:
    return [
        *("run", "kmeans", "-d", KMEANS_DATASET, "--known-ratio", "0.5", "--encoder"),
        *("bag-of-words", "-p", "n_init=1", "--data-dir", str(inputs.data)),
        *("--results-dir", str(tree.results), *extra),
    ]


def sweep_plan(folder: Path, inputs: Inputs, seeds: Sequence[int]) -> Path:
    """A plan of K-means runs; the same specs as ``kmeans_args`` with ``--seeds``."""
    path = folder / "plan.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            encoder = "bag-of-words"
            data_dir = "{inputs.data}"
            [axes]
            datasets = ["{KMEANS_DATASET}"]
            known_ratios = [0.5]
            seeds = {list(seeds)}
            [[methods]]
            name = "kmeans"
            params = {{ n_init = 1 }}
            """
        ),
        encoding="utf-8",
    )
    return path


# -- a command in its own process ------------------------------------------------------------


class Gcdbench:
    """``gcdbench ARGS`` (this file as the command line) in its own process; its stderr is
    read line by line as it comes, so a test can wait for a stage. A test file with other
    data sets registered runs itself instead by setting ``script``."""

    script = __file__

    def __init__(self, tree: Tree, args: Sequence[str]) -> None:
        tree.systmp.mkdir(parents=True, exist_ok=True)
        self.tree = tree
        self.args = list(args)
        self.proc = subprocess.Popen(
            [sys.executable, self.script, *args],
            cwd=REPO,
            env=tree.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err: list[str] = []
        self.out: list[str] = []
        self._readers = [
            threading.Thread(target=_drain, args=(self.proc.stderr, self.err), daemon=True),
            threading.Thread(target=_drain, args=(self.proc.stdout, self.out), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.err))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> bool:
        """SIGKILL it (the PID we started, nothing else); False when it had already ended."""
        if not self.alive:
            self.proc.wait()
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._join()
        return self.proc.returncode == -signal.SIGKILL

    def finish(self, timeout: float = TIMEOUT_S) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"gcdbench {self.args[:2]} ran past {timeout:.0f} s") from None
        self._join()
        return self.proc.returncode

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(timeout=10)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def tracebacks(self) -> int:
        return sum(line.startswith("Traceback") for line in self.err)


def _drain(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def run_to_end(tree: Tree, args: Sequence[str]) -> Gcdbench:
    run = Gcdbench(tree, args)
    code = run.finish()
    assert code == 0, f"gcdbench {' '.join(args[:2])} exited {code}:\n{run.stderr[-3000:]}"
    assert run.tracebacks() == 0, run.stderr[-3000:]
    return run


def wait_for(check: Callable[[], bool], run: Gcdbench, timeout: float = TIMEOUT_S) -> bool:
    """Poll ``check`` until it holds (True) or ``run`` ends first (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if not run.alive or time.monotonic() > deadline:
            return check()
        time.sleep(0.002)
    return True


# -- where a kill lands ------------------------------------------------------------------------


class ServerCount:
    """Answers a chat server sent, read from its counters (tests/llm_servers.py)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def hits(self) -> int:
        return sum(self.server.hits.values())

    def answered(self) -> int:
        return sum(self.server.answered.values())

    def settle(self, timeout: float = 30.0) -> int:
        """Answers sent once nothing is in flight: a killed client's last requests are still
        answered (into a closed socket)."""
        deadline = time.monotonic() + timeout
        while self.hits() != self.answered() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.answered()


def writing(results: Path, dataset: str, method: str) -> Callable[[], bool]:
    """True while a record folder is being filled (its hidden ``.tmp-`` name exists)."""
    folder = results / "runs" / dataset / method

    def check() -> bool:
        try:
            return any(name.startswith(".tmp-") for name in os.listdir(folder))
        except OSError:
            return False

    return check


def kill_glean(
    run: Gcdbench, point: str, rng: random.Random, server: ServerCount, reference: Reference
) -> bool:
    """SIGKILL a GLEAN run at ``point`` (one of GLEAN_POINTS) after a seeded delay, or a
    seeded number of the questions it still has to ask; whether the kill found the process
    running (False: it ended first)."""
    if point == "anywhere":
        deadline = time.monotonic() + rng.uniform(0.0, reference.duration_s)
        wait_for(lambda: time.monotonic() >= deadline, run)
    elif point == "pre-training":
        wait_for(lambda: run.said("pre-train"), run)
        time.sleep(rng.uniform(0.0, 0.4))
    elif point == "first round":
        wait_for(lambda: run.said("round 1/1"), run)
        time.sleep(rng.uniform(0.0, 0.2))
    elif point == "feedback batch":
        # Some answers stored, some in flight, the rest not asked yet.
        remaining = len(reference.questions) - len(ledger_keys(run.tree.ledger))
        target = server.hits() + rng.randint(1, max(1, remaining - 1))
        wait_for(lambda: server.hits() >= target, run)
    elif point == "record write":
        wait_for(writing(run.tree.results, SLICE, "glean"), run)
    elif point == "record written":
        wait_for(lambda: bool(check_store(run.tree.results).records), run)
    else:
        raise ValueError(f"unknown kill point {point!r}")
    return run.kill()


# -- what must hold ---------------------------------------------------------------------------


@dataclass
class Findings:
    """What went wrong, counted; each count must stay 0."""

    lost: int = 0  # an expected record missing
    duplicates: int = 0  # a run or a spec recorded more than once
    different: int = 0  # a result not identical to the uninterrupted run's
    asked_twice: int = 0  # answers paid again although the ledger had kept them
    broken: list[str] = field(default_factory=list)  # unreadable records, ledger damage, exits
    left: list[str] = field(default_factory=list)  # temporary files left behind

    def add(self, other: Findings) -> None:
        self.lost += other.lost
        self.duplicates += other.duplicates
        self.different += other.different
        self.asked_twice += other.asked_twice
        self.broken += other.broken
        self.left += other.left

    def problems(self) -> list[str]:
        counts = {
            "results lost": self.lost,
            "duplicate records": self.duplicates,
            "results differing from the uninterrupted run": self.different,
            "questions asked twice": self.asked_twice,
        }
        lines = [f"{n} {what}" for what, n in counts.items() if n]
        return lines + self.broken + [f"left behind: {path}" for path in self.left]


@dataclass
class StoreCheck:
    """The visible records of a store, each read whole."""

    records: list[dict[str, Any]] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)

    def per_spec(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record["spec_hash"]] = counts.get(record["spec_hash"], 0) + 1
        return counts


def check_store(results: Path) -> StoreCheck:
    """Read every visible record: whole JSON, its predictions beside it, in its own run's
    folder, each run and each spec once."""
    out = StoreCheck()
    broken = out.findings.broken
    for path in sorted(results.glob("runs/*/*/*/record.json")):
        if path.parent.name.startswith("."):
            continue  # a hidden folder: being written, or a dead writer's (see leftovers)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            broken.append(f"{path}: unreadable record ({exc})")
            continue
        if not str(record.get("run_id", "")).startswith(path.parent.name):
            broken.append(f"{path}: run id {record.get('run_id')!r} in another run's folder")
        if not (path.parent / "predictions.csv").is_file():
            broken.append(f"{path}: no predictions.csv beside the record")
        out.records.append(record)
    ids = [r.get("run_id") for r in out.records]
    out.findings.duplicates += len(ids) - len(set(ids))
    out.findings.duplicates += sum(n - 1 for n in out.per_spec().values())
    return out


def ledger_problems(ledger: Path) -> list[str]:
    """``PRAGMA integrity_check`` and each key once; none for a ledger not created yet."""
    if not ledger.exists():
        return []
    with closing(sqlite3.connect(ledger, timeout=60)) as db:
        integrity = [row[0] for row in db.execute("PRAGMA integrity_check")]
        problems = [] if integrity == ["ok"] else [f"{ledger}: integrity_check {integrity}"]
        try:
            repeated = db.execute(
                "SELECT key, COUNT(*) FROM answers GROUP BY key HAVING COUNT(*) > 1"
            ).fetchall()
        except sqlite3.OperationalError:
            return problems  # killed before the table was created
    return problems + [f"{ledger}: key {key[:12]} stored {n} times" for key, n in repeated]


def ledger_keys(ledger: Path) -> set[str]:
    if not ledger.exists():
        return set()
    with closing(sqlite3.connect(ledger, timeout=60)) as db:
        try:
            return {row[0] for row in db.execute("SELECT key FROM answers")}
        except sqlite3.OperationalError:
            return set()


def leftovers(tree: Tree) -> list[str]:
    """What finished commands must not leave: hidden or scratch folders, lock and marker
    files in the store, checkpoints of recorded runs, temp files in the store and the cache,
    ``gcdbench*`` in the system temp folder. Paths relative to the tree."""
    results = tree.results
    found = list(results.glob("runs/*/*/.*"))
    for sub in (".tmp", "locks", "running"):
        found += list((results / sub).glob("*"))
    recorded = {p.parent.name for p in results.glob("runs/*/*/*/record.json")}
    found += [p for p in (results / ".checkpoints").glob("*") if p.name in recorded]
    for root in (results, tree.cache):
        found += list(root.rglob(".*.tmp"))
    found += list(tree.systmp.glob("gcdbench*"))
    return sorted({str(p.relative_to(tree.root)) for p in found})


Result = tuple[dict[str, float], bytes]  # metrics, predictions.csv bytes


def results_of(results: Path, dataset: str, method: str) -> dict[int, list[Result]]:
    """seed -> the recorded results of ``method`` on ``dataset`` (one each, if all is well)."""
    found: dict[int, list[Result]] = {}
    for path in sorted(results.glob(f"runs/{dataset}/{method}/*/record.json")):
        if not path.parent.name.startswith("."):
            record = json.loads(path.read_text(encoding="utf-8"))
            result = (record["metrics"], (path.parent / "predictions.csv").read_bytes())
            found.setdefault(int(record["spec"]["seed"]), []).append(result)
    return found


def result_of(results: Path, dataset: str, method: str, seed: int = 0) -> Result:
    """The one recorded result of ``method`` with ``seed``."""
    found = results_of(results, dataset, method).get(seed, [])
    assert len(found) == 1, f"{len(found)} records of {method} seed {seed} in {results}"
    return found[0]


def compare_results(
    results: Path, dataset: str, method: str, expected: dict[int, Result]
) -> Findings:
    """Every expected seed recorded once, identical to the uninterrupted result."""
    out = Findings()
    found = results_of(results, dataset, method)
    for seed, result in expected.items():
        mine = found.get(seed, [])
        out.lost += not mine
        out.different += sum(r != result for r in mine)
    return out


def recorded_requests(record: dict[str, Any]) -> tuple[int, int]:
    """(backend requests, ledger hits) the run's feedback provider counted."""
    total = record["feedback"]["stats"]["total"]
    return int(total["backend_requests"]), int(total["ledger_hits"])


@dataclass
class Reference:
    """Uninterrupted runs: seed -> result, and the questions they asked."""

    results: dict[int, Result]
    questions: set[str]
    duration_s: float


def glean_reference(inputs: Inputs, tree: Tree, seeds: str = "0") -> Reference:
    started = time.monotonic()
    run_to_end(tree, glean_args(inputs, tree, "-q", "--seeds", seeds))
    elapsed = time.monotonic() - started
    found = results_of(tree.results, SLICE, "glean")
    return Reference({s: r[0] for s, r in found.items()}, ledger_keys(tree.ledger), elapsed)


@dataclass
class KillLog:
    """What a series of kills and restarts saw."""

    kills: int = 0  # SIGKILLs that found their process running
    processes: int = 0
    runs: int = 0  # runs the series had to record
    tracebacks: int = 0
    lost_answers: int = 0  # answers sent to a process that was killed before storing them
    points: Counter[str] = field(default_factory=Counter)  # where the kills landed
    findings: Findings = field(default_factory=Findings)

    def add(self, other: KillLog) -> None:
        self.kills += other.kills
        self.processes += other.processes
        self.runs += other.runs
        self.tracebacks += other.tracebacks
        self.lost_answers += other.lost_answers
        self.points.update(other.points)
        self.findings.add(other.findings)

    def counts(self) -> dict[str, int]:
        """Its counts, named as the suites' summary lines name them (ZERO must be 0)."""
        f = self.findings
        return {
            "kills": self.kills,
            "processes": self.processes,
            "runs": self.runs,
            "results_lost": f.lost,
            "duplicates": f.duplicates,
            "tracebacks": self.tracebacks,
            "questions_asked_twice": f.asked_twice,
            "differing_results": f.different,
            "leftovers": len(f.left),
            "other_problems": len(f.broken),
        }

    def ended(self, run: Gcdbench, point: str) -> None:
        """Count a command that was killed, or check one that ended first."""
        self.processes += 1
        self.tracebacks += run.tracebacks()
        if run.proc.returncode == -signal.SIGKILL:
            self.kills += 1
            self.points[point] += 1
        elif run.proc.returncode != 0:
            self.findings.broken.append(
                f"gcdbench {' '.join(run.args[:2])} exited {run.proc.returncode}: "
                f"{run.stderr[-1500:]}"
            )

    def count_lost(self, sent: int, tree: Tree, killed: int) -> None:
        """Answers the server ``sent`` since the series began that the ledger did not keep
        were lost with killed processes: at most the requests each had in flight. Any more
        were asked twice."""
        lost = sent - len(ledger_keys(tree.ledger))
        new = lost - self.lost_answers
        self.findings.asked_twice += max(0, new - killed * CONCURRENCY)
        self.lost_answers = lost

    def after_kill(self, tree: Tree) -> None:
        """What must hold the instant after a kill, before anything repairs the store."""
        self.findings.add(check_store(tree.results).findings)
        self.findings.broken += ledger_problems(tree.ledger)


def kill_and_restart_glean(
    inputs: Inputs,
    tree: Tree,
    server: ServerCount,
    reference: Reference,
    points: Sequence[str],
    rng: random.Random,
) -> KillLog:
    """Start the GLEAN command (seed 0) and kill it at each of ``points`` in turn, each on a
    fresh start of the same command; then run it to the end and compare with ``reference``."""
    log = KillLog(runs=1)
    answered_before = server.settle()
    args = glean_args(inputs, tree)  # not -q: kill points wait for its stage lines
    for point in points:
        if check_store(tree.results).records:
            point = "anywhere"  # recorded already: the command only checks and skips
        run = Gcdbench(tree, args)
        killed = kill_glean(run, point, rng, server, reference)
        log.ended(run, point)
        log.after_kill(tree)
        log.count_lost(server.settle() - answered_before, tree, killed)
    final = Gcdbench(tree, args)
    final.finish()
    log.ended(final, "none")
    if final.proc.returncode == 0:
        log.findings.add(check_glean(tree, reference, server, answered_before, log.lost_answers))
    else:
        log.findings.lost += 1
    return log


def check_glean(
    tree: Tree, reference: Reference, server: ServerCount, answered_before: int, lost: int
) -> Findings:
    """After the restart ended: the uninterrupted result, once; the same questions; no kept
    answer asked for again; the ledger whole; nothing temporary left."""
    store = check_store(tree.results)
    out = store.findings
    out.add(compare_results(tree.results, SLICE, "glean", reference.results))
    out.broken += ledger_problems(tree.ledger)
    keys = ledger_keys(tree.ledger)
    if keys != reference.questions:
        out.broken.append(
            f"the ledger holds {len(keys)} questions, the uninterrupted run asked "
            f"{len(reference.questions)} ({len(keys ^ reference.questions)} differ)"
        )
    out.asked_twice += server.settle() - answered_before - len(keys) - lost
    out.left += leftovers(tree)
    return out


# -- K-means: --force and sweeps -----------------------------------------------------------


def kmeans_reference(inputs: Inputs, tree: Tree, seeds: Sequence[int]) -> Reference:
    started = time.monotonic()
    seed_list = ",".join(map(str, seeds))
    run_to_end(tree, kmeans_args(inputs, tree, "-q", "--seeds", seed_list))
    elapsed = time.monotonic() - started
    found = results_of(tree.results, KMEANS_DATASET, "kmeans")
    return Reference({s: r[0] for s, r in found.items()}, set(), elapsed)


def kill_at(run: Gcdbench, point: str, rng: random.Random, duration_s: float) -> None:
    """SIGKILL a K-means run or sweep inside a record write, or at a seeded moment within
    ``duration_s`` (how long the uninterrupted command took)."""
    if point == "record write":
        wait_for(writing(run.tree.results, KMEANS_DATASET, "kmeans"), run)
    elif point == "anywhere":
        deadline = time.monotonic() + rng.uniform(0.0, duration_s)
        wait_for(lambda: time.monotonic() >= deadline, run)
    else:
        raise ValueError(f"unknown kill point {point!r}")
    run.kill()


@contextmanager
def watching_records(results: Path) -> Iterator[Findings]:
    """Reads the store in a loop while the block runs: every read must find exactly one
    whole record (--force swaps the new one in, in one step)."""
    seen = Findings()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            store = check_store(results)
            seen.lost = max(seen.lost, int(not store.records))
            seen.duplicates = max(seen.duplicates, store.findings.duplicates)
            seen.broken += store.findings.broken
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join(timeout=10)


def kill_and_restart_kmeans(
    inputs: Inputs,
    tree: Tree,
    reference: Reference,
    points: Sequence[str],
    rng: random.Random,
    *,
    force: bool,
) -> KillLog:
    """The K-means command (seed 0; with --force over an existing record) killed at each of
    ``points`` in turn, then run to the end and compared with ``reference``. Under --force a
    reader checks all along that the old or the new record is there, whole."""
    log = KillLog(runs=1)
    args = kmeans_args(inputs, tree, "-q", *(["--force"] if force else []))
    with ExitStack() as stack:
        if force:
            if not tree.results.joinpath("runs").is_dir():
                log.ended(run_to_end(tree, args[:-1]), "none")
            log.findings.add(stack.enter_context(watching_records(tree.results)))
        kill_at_each(log, tree, args, points, rng, reference.duration_s)
    finish_kmeans(log, tree, args, {0: reference.results[0]})
    return log


def kill_and_restart_sweep(
    inputs: Inputs,
    tree: Tree,
    reference: Reference,
    points: Sequence[str],
    rng: random.Random,
) -> KillLog:
    """``gcdbench sweep`` of K-means over the reference's seeds, killed at each of ``points``
    in turn, then run to the end: each spec recorded once, as the uninterrupted runs."""
    log = KillLog(runs=len(reference.results))
    tree.root.mkdir(parents=True, exist_ok=True)
    plan = sweep_plan(tree.root, inputs, sorted(reference.results))
    args = ["sweep", str(plan), "--results-dir", str(tree.results), "-q"]
    kill_at_each(log, tree, args, points, rng, reference.duration_s)
    finish_kmeans(log, tree, args, reference.results)
    return log


def kill_at_each(
    log: KillLog,
    tree: Tree,
    args: Sequence[str],
    points: Sequence[str],
    rng: random.Random,
    duration_s: float,
) -> None:
    """Start ``gcdbench ARGS`` and kill it at each of ``points`` in turn."""
    for point in points:
        run = Gcdbench(tree, args)
        kill_at(run, point, rng, duration_s)
        log.ended(run, point)
        log.after_kill(tree)


def finish_kmeans(
    log: KillLog, tree: Tree, args: Sequence[str], expected: dict[int, Result]
) -> None:
    """Run ``gcdbench ARGS`` to its end; each expected K-means seed recorded once, as
    uninterrupted, and nothing left behind."""
    final = Gcdbench(tree, args)
    final.finish()
    log.ended(final, "none")
    log.findings.add(check_store(tree.results).findings)
    log.findings.add(compare_results(tree.results, KMEANS_DATASET, "kmeans", expected))
    log.findings.left += leftovers(tree)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def summary() -> Iterator[Any]:
    """The module's counts, printed as one ``RELIABILITY {...}`` line when it ends."""
    from llm_servers import SuiteSummary

    counts = SuiteSummary("kills", zero=ZERO, positive=("kills", "processes", "runs"))
    yield counts
    counts.publish()
    assert not counts.problems(), counts.problems()


@pytest.fixture(scope="module")
def chat_server() -> Iterator[Any]:
    from llm_servers import ScriptedChatServer

    with ScriptedChatServer(latency_s=LATENCY_S) as server:
        yield server


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, chat_server) -> Inputs:
    from tests.banking_slices import write_slices
    from tests.training_fixtures import tiny_bert_folder

    root = tmp_path_factory.mktemp("kill-inputs")
    write_slices(shared_data, root / "slices", SLICES)
    bert = tiny_bert_folder(root / "bert")
    return Inputs(root / "slices", shared_data.resolve(), bert, llm_spec(chat_server.base_url))


@pytest.fixture(scope="module")
def glean_uninterrupted(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return glean_reference(inputs, Tree(tmp_path_factory.mktemp("glean-uninterrupted")))


@pytest.fixture(scope="module")
def kmeans_uninterrupted(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    tree = Tree(tmp_path_factory.mktemp("kmeans-uninterrupted"))
    return kmeans_reference(inputs, tree, (0, 1, 2))


# -- tests ---------------------------------------------------------------------------------------


def test_glean_killed_in_training_and_mid_batch_restarts_to_the_uninterrupted_result(
    inputs: Inputs, glean_uninterrupted: Reference, chat_server, summary, tmp_path: Path
) -> None:
    # One command killed twice, each time started again, then run to its end. (A kill in
    # pre-training may land in the cache's publish: tested on its own below.)
    rng = random.Random(17)
    points = ("first round", "feedback batch")
    server = ServerCount(chat_server)
    log = kill_and_restart_glean(inputs, Tree(tmp_path), server, glean_uninterrupted, points, rng)
    summary.add(**log.counts())
    assert log.findings.problems() == []
    assert log.tracebacks == 0
    assert log.kills == len(points), "a run ended before its kill: the test exercised nothing"


def test_record_write_and_force_killed_keep_one_whole_record(
    inputs: Inputs, kmeans_uninterrupted: Reference, summary, tmp_path: Path
) -> None:
    tree, rng = Tree(tmp_path), random.Random(3)
    first = kill_and_restart_kmeans(
        inputs, tree, kmeans_uninterrupted, ["record write"], rng, force=False
    )
    assert first.findings.problems() == []
    assert first.kills == 1, "the run ended before its kill"
    forced = kill_and_restart_kmeans(
        inputs, tree, kmeans_uninterrupted, ["record write"] * 2, rng, force=True
    )
    summary.add(**first.counts())
    summary.add(**forced.counts())
    assert forced.findings.problems() == []
    assert forced.kills >= 1, "no kill found --force running"
    assert first.tracebacks + forced.tracebacks == 0


def test_sweep_killed_mid_plan_records_each_spec_once(
    inputs: Inputs, kmeans_uninterrupted: Reference, summary, tmp_path: Path
) -> None:
    rng = random.Random(5)
    log = kill_and_restart_sweep(
        inputs, Tree(tmp_path), kmeans_uninterrupted, ["anywhere"] * 2, rng
    )
    summary.add(**log.counts())
    assert log.findings.problems() == []
    assert log.tracebacks == 0
    assert log.kills >= 1, "every sweep ended before its kill"


def test_a_killed_sweeps_running_marker_goes_once_its_spec_is_recorded(
    inputs: Inputs, kmeans_uninterrupted: Reference, tmp_path: Path
) -> None:
    tree = Tree(tmp_path)
    plan = sweep_plan(tmp_path, inputs, [0])
    sweep = Gcdbench(tree, ["sweep", str(plan), "--results-dir", str(tree.results), "-q"])
    wait_for(lambda: any((tree.results / "running").glob("*.lock")), sweep)
    assert sweep.kill(), "the sweep ended before its kill"
    run_to_end(tree, kmeans_args(inputs, tree, "-q"))  # the same spec, by `gcdbench run`
    assert result_of(tree.results, KMEANS_DATASET, "kmeans") == kmeans_uninterrupted.results[0]
    assert leftovers(tree) == []


def test_a_kill_while_the_pretrained_backbone_is_cached_leaves_no_temp_folder(
    inputs: Inputs, tmp_path: Path
) -> None:
    tree = Tree(tmp_path)
    # MTP is pre-training alone, cached as GLEAN's, Loop's and no-llm's pre-training is.
    args = [
        *("run", "mtp", "-d", SLICE, "--known-ratio", "0.5", "--preset", "smoke"),
        *("--encoder", str(inputs.bert), "--data-dir", str(inputs.slices)),
        *("--results-dir", str(tree.results)),
    ]
    cached = tree.cache / "pretrained"
    run = Gcdbench(tree, args)
    wait_for(lambda: cached.is_dir() and any(n.startswith(".") for n in os.listdir(cached)), run)
    assert run.kill(), "the run ended before its kill"
    run_to_end(tree, args)
    assert leftovers(tree) == []


def test_a_kill_just_after_the_record_leaves_no_checkpoints(inputs: Inputs, tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    args = glean_args(dataclasses.replace(inputs, llm="oracle"), tree)
    run = Gcdbench(tree, args)
    wait_for(lambda: bool(check_store(tree.results).records), run)
    assert run.kill(), "the run ended before its kill"
    if not (tree.results / ".checkpoints").is_dir():
        pytest.skip("this run keeps no checkpoints: nothing is left to remove")
    run_to_end(tree, args)
    assert leftovers(tree) == []


if __name__ == "__main__":  # gcdbench, with the BANKING slice the tests run on
    from gcdbench import registry
    from gcdbench.cli import cli
    from tests.banking_slices import SlicePlugin

    registry.register_plugin(SlicePlugin(SLICES), "test-kill-slices")
    cli.main(sys.argv[1:], prog_name="gcdbench")
