"""Harness overhead per run (issue #16): the share of a smoke run's time that goes to the
harness (spec resolution and plan expansion, opening the store, the run identity, the run's
lock, the split file, round checkpoints, provenance, the record write, ledger writes)
rather than to loading data and running the method.

    python benchmarks/harness_overhead.py                # about 2 minutes on 2 busy cores
    python benchmarks/harness_overhead.py --seeds 5 --repeats 30

The runs: GLEAN (smoke preset, ``--llm oracle``) and no-llm (smoke preset) on a 6-class slice
of the real BANKING data (tests/banking_slices.py), encoder a tiny random BERT
(tests/training_fixtures.py; the packaged MiniLM when the test helpers cannot be imported).
The slice is registered by a plugin package (a dist-info with a ``gcdbench`` entry point)
written into the script's temporary folder and put on ``PYTHONPATH``, so every
``gcdbench`` process, its worker processes and Ray workers see it as an installed dataset.

Measured three ways, one after the other:

1. ``gcdbench run``, one process per run (``--seeds`` seeds per method): each record's
   ``provenance.durations_s.total`` (data load to metrics, the run's own timer) and the
   process's wall-clock time;
2. ``gcdbench sweep`` (local executor) of the same specs, all runs in one process: their
   ``durations_s.total``;
3. each harness part timed directly, in ``--processes`` fresh processes of this script one
   after the other: its first call (what a ``gcdbench run`` process pays: function caches
   and lazy imports cold; gcdbench's on-disk cache as the single runs left it, as a user's
   next run finds it) and the median of ``--repeats`` calls after it (what a run inside a
   sweep pays); per part, the median over the processes. The checkpoint is the real one of
   an in-process GLEAN run, captured when it saves (that save is the first call).

Harness per run = sum over parts of cost x calls per run: first-call costs for one run per
process, warm costs for sweep runs. The ratio is that over the median run time. Prints a
markdown block for benchmarks/RESULTS.md; progress goes to stderr. Needs GCDBENCH_DATA (or
../shared/data beside the checkout).

Also the common set-up of benchmarks/sweep_executors.py (slices, encoder, plugin, plans).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:  # gcdbench loads only where a step needs it (after the set-up)
    from gcdbench.api.spec import RunSpec
    from gcdbench.api.task import GCDSplit

REPO = Path(__file__).resolve().parents[1]
#: Slices of BANKING (name -> classes kept), each registered as a dataset.
SLICES = {"banking-slice6": 6, "banking-slice8": 8}
SLICE = "banking-slice6"
KNOWN_RATIO = 0.5
PLUGIN_MODULE = "gcdbench_bench_slices"
PLUGIN_DIST = "gcdbench-bench-slices"
PLUGIN_VERSION = "0.1"
FALLBACK_ENCODER = "all-MiniLM-L6-v2"
#: (method, whether it asks feedback): the two smoke runs measured.
METHODS = (("glean", True), ("no-llm", False))

console = Console(stderr=True, highlight=False)


# -- set-up shared with benchmarks/sweep_executors.py ----------------------------------------


@dataclass(frozen=True)
class Inputs:
    """What every benchmark run reads: the slices' data root, the encoder, the plugin."""

    slices: Path
    encoder: str
    site: Path  # the folder holding the slice plugin package

    def env(self, cache: Path) -> dict[str, str]:
        """A ``gcdbench`` process's environment: the slice plugin importable, one thread
        per process (the machine is shared), its own cache."""
        path = [str(self.site), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(path),
            "OMP_NUM_THREADS": "1",
            "GCDBENCH_CACHE": str(cache),
            "COLUMNS": "120",
        }


def shared_data() -> Path:
    """The benchmark data folder: GCDBENCH_DATA, else ../shared/data beside the checkout."""
    for candidate in (os.environ.get("GCDBENCH_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "banking" / "train.tsv").is_file():
            return Path(candidate)
    sys.exit("set GCDBENCH_DATA to the data folder (the one holding banking/train.tsv)")


def prepare_inputs(root: Path) -> Inputs:
    """Slices of the real BANKING data, the encoder, and the plugin that registers the
    slices, all under ``root``."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from tests.banking_slices import write_slices

    write_slices(shared_data(), root / "slices", SLICES)
    try:
        from tests.training_fixtures import tiny_bert_folder
    except ImportError:  # the test helpers need pytest: a small real encoder instead
        encoder = FALLBACK_ENCODER
    else:
        encoder = str(tiny_bert_folder(root / "tiny-bert"))
    site = root / "site"
    write_slice_plugin(site)
    return Inputs(root / "slices", encoder, site)


def write_slice_plugin(site: Path) -> None:
    """An installed-looking plugin package: the module, and a dist-info whose entry point
    in the ``gcdbench`` group registers :data:`SLICES` (read from ``<data root>/<name>``)."""
    info = site / f"{PLUGIN_MODULE}-{PLUGIN_VERSION}.dist-info"
    info.mkdir(parents=True)
    (site / f"{PLUGIN_MODULE}.py").write_text(
        '"""BANKING slices as datasets, for benchmarks/harness_overhead.py."""\n\n'
        "from tests.banking_slices import SlicePlugin\n\n"
        f"plugin = SlicePlugin({SLICES!r})\n",
        encoding="utf-8",
    )
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {PLUGIN_DIST}\nVersion: {PLUGIN_VERSION}\n",
        encoding="utf-8",
    )
    (info / "entry_points.txt").write_text(
        f"[gcdbench]\nbench-slices = {PLUGIN_MODULE}:plugin\n", encoding="utf-8"
    )


def write_plan(path: Path, inputs: Inputs, datasets: Sequence[str], seeds: Sequence[int]) -> Path:
    """A sweep plan: GLEAN (smoke, ``llm = "oracle"``) and no-llm (smoke) on ``datasets`` x
    ``seeds``, known ratio 0.5: 2 x datasets x seeds specs."""
    path.write_text(
        textwrap.dedent(
            f"""\
            encoder = "{inputs.encoder}"
            llm = "oracle"
            data_dir = "{inputs.slices}"

            [axes]
            datasets = {list(datasets)!r}
            known_ratios = [{KNOWN_RATIO}]
            seeds = {list(seeds)!r}
            """
        )
        + "".join(f'\n[[methods]]\nname = "{m}"\npreset = "smoke"\n' for m, _ in METHODS),
        encoding="utf-8",
    )
    return path


def gcdbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "gcdbench", *args]


def run_checked(argv: list[str], env: dict[str, str]) -> float:
    """Run a command to its end; its wall-clock seconds. Stops the script if it fails."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        sys.exit(f"{shlex.join(argv)} failed ({done.returncode}): " + " | ".join(tail))
    return seconds


def load_1m() -> float:
    """The 1-minute load average (the machine is shared with other jobs)."""
    return os.getloadavg()[0]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


# -- 1 and 2: real runs --------------------------------------------------------------------


@dataclass(frozen=True)
class RunTime:
    method: str
    total_s: float  # provenance.durations_s.total
    wall_s: float | None  # the process's wall clock (one run per process only)
    rounds: int
    questions: int


def single_runs(inputs: Inputs, work: Path, seeds: Sequence[int]) -> list[RunTime]:
    """``gcdbench run`` once per (method, seed), each in a fresh process."""
    results, env = work / "single-runs", inputs.env(work / "cache-single")
    walls: dict[tuple[str, int], float] = {}
    for seed in seeds:
        for method, asks in METHODS:
            console.log(f"gcdbench run {method} --seed {seed} (load {load_1m():.1f})")
            argv = [*run_args(inputs, method, asks, results), "--seed", str(seed)]
            walls[method, seed] = run_checked(argv, env)
    return read_runs(results, walls)


def run_args(inputs: Inputs, method: str, asks: bool, results: Path) -> list[str]:
    return gcdbench(
        *("run", method, "-d", SLICE, "--known-ratio", str(KNOWN_RATIO), "--preset", "smoke"),
        *(("--llm", "oracle") if asks else ()),
        *("--encoder", inputs.encoder, "--data-dir", str(inputs.slices)),
        *("--results-dir", str(results), "-q"),
    )


def sweep_runs(inputs: Inputs, work: Path, plan: Path) -> list[RunTime]:
    """The plan's runs by ``gcdbench sweep`` (local executor): one process for all."""
    results = work / "sweep-runs"
    console.log(f"gcdbench sweep {plan.name} (load {load_1m():.1f})")
    argv = gcdbench("sweep", str(plan), "--results-dir", str(results), "-q")
    run_checked(argv, inputs.env(work / "cache-sweep"))
    return read_runs(results, {})


def read_runs(results: Path, walls: dict[tuple[str, int], float]) -> list[RunTime]:
    from gcdbench.runner.store import ResultsStore

    out = []
    for record in ResultsStore(results).records():
        stats = (record.feedback or {}).get("stats", {})
        out.append(
            RunTime(
                method=record.spec.method,
                total_s=float(record.provenance["durations_s"]["total"]),
                wall_s=walls.get((record.spec.method, record.spec.seed)),
                rounds=len(record.diagnostics.get("rounds", [])),
                questions=int(stats.get("total", {}).get("queries", 0)),
            )
        )
    return out


# -- 3: the harness parts, timed directly --------------------------------------------------


#: How often a run calls a part, by the words the table shows.
ONCE, TWICE, NEVER, PER_ROUND, PER_QUESTION = "1", "2", "–", "1 per round", "1 per question"
COUNTS: dict[str, Callable[[RunTime], int]] = {
    ONCE: lambda run: 1,
    TWICE: lambda run: 2,
    NEVER: lambda run: 0,
    PER_ROUND: lambda run: run.rounds,
    PER_QUESTION: lambda run: run.questions,
}


@dataclass(frozen=True)
class Part:
    """One harness part: its cost (ms) on the first call and warm, and how often a run
    calls it (``per_run``: one run per process; ``per_sweep_run``: inside a sweep)."""

    name: str
    first_ms: float
    warm_ms: float
    per_run: str  # a key of COUNTS
    per_sweep_run: str
    llm_only: bool = False  # only runs whose answers come from an LLM (not an oracle)


def measure(prepare: Callable[[int], Callable[[], object]], repeats: int) -> tuple[float, float]:
    """(first call, median of ``repeats`` calls after it) in ms. ``prepare(i)`` sets call
    ``i`` up untimed (fresh folders) and returns what is timed."""
    times = []
    for i in range(repeats + 1):
        call = prepare(i)
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times[0], statistics.median(times[1:])


@dataclass
class Bench:
    """What the direct timings share: the inputs, the stores of the real runs, the plan,
    and this process's own scratch folder."""

    inputs: Inputs
    work: Path
    scratch: Path
    repeats: int
    plan: Path
    specs_in_plan: int
    parts: list[Part] = field(default_factory=list)

    def add(
        self,
        name: str,
        prepare: Callable[[int], Callable[[], object]],
        per_run: str,
        per_sweep_run: str,
        *,
        llm_only: bool = False,
        per_call: int = 1,
    ) -> None:
        console.log(f"timing {name} (load {load_1m():.1f})")
        first, warm = measure(prepare, self.repeats)
        self.parts.append(
            Part(name, first / per_call, warm / per_call, per_run, per_sweep_run, llm_only)
        )

    def folder(self, name: str, i: int) -> Path:
        return self.scratch / f"{name}-{i}"


@dataclass(frozen=True)
class RunObjects:
    """A real run's spec, split and data files, as the runner has them when it starts."""

    spec: RunSpec
    split: GCDSplit
    files: dict[str, str]  # data file name -> sha256


def run_objects(inputs: Inputs) -> RunObjects:
    from gcdbench import registry
    from gcdbench.data.split import make_split
    from gcdbench.data.store import locate_dataset
    from gcdbench.runner.run import resolve_spec

    spec = resolve_spec(
        "glean", SLICE, KNOWN_RATIO, 0, encoder=inputs.encoder, llm="oracle", preset="smoke"
    )
    definition = registry.get("dataset", SLICE)
    folder, _ = locate_dataset(definition, str(inputs.slices), download=False)
    parts = definition.load(folder)
    split = make_split(parts, known_ratio=KNOWN_RATIO, labeled_ratio=0.1, seed=0)
    return RunObjects(spec, split, {f.name: f.sha256 for f in parts.files})


def load_plugins() -> None:
    """Build every registry first: loading the plugins is the start-up of any ``gcdbench``
    command (benchmarks/startup.py), not a part of a run."""
    from gcdbench import registry

    for kind in registry.KINDS:
        registry.names(kind)


def time_resolution(bench: Bench) -> None:
    """``gcdbench run`` resolves its one spec; a sweep expands its plan into specs."""
    from gcdbench.cli.sweep import expand
    from gcdbench.runner.plan_file import load_plan
    from gcdbench.runner.run import resolve_spec

    inputs = bench.inputs

    def resolve(i: int) -> Callable[[], object]:
        return lambda: resolve_spec(
            "glean", SLICE, KNOWN_RATIO, i, encoder=inputs.encoder, llm="oracle", preset="smoke"
        )

    def expansion(_: int) -> Callable[[], object]:
        return lambda: expand(load_plan(bench.plan))

    bench.add("spec resolution (`gcdbench run`)", resolve, ONCE, NEVER)
    n = bench.specs_in_plan
    bench.add(f"plan expansion, per spec ({n}-spec plan)", expansion, NEVER, ONCE, per_call=n)


def time_status(bench: Bench, sweep_store: Path) -> None:
    """A sweep reads every spec's state (the data read, each split drawn, each run id
    computed) before it runs, and again for its closing table."""
    from gcdbench.cli.sweep import expand
    from gcdbench.runner.plan_file import load_plan
    from gcdbench.runner.sweep_status import StatusReader

    specs = [p.spec for p in expand(load_plan(bench.plan))]

    def status(_: int) -> Callable[[], object]:
        return lambda: StatusReader(sweep_store, str(bench.inputs.slices)).statuses(specs)

    n = bench.specs_in_plan
    bench.add("status read (data, split, run id), per spec", status, NEVER, TWICE, per_call=n)


def time_store(bench: Bench, run: RunObjects, single_store: Path) -> None:
    """Opening the store, the run identity, the run's lock and scratch folder, the split."""
    from gcdbench.data.split import save_split
    from gcdbench.runner.identity import run_identity
    from gcdbench.runner.store import ResultsStore

    def open_store(_: int) -> Callable[[], object]:
        return lambda: ResultsStore(single_store).check_writable()

    def identity(_: int) -> Callable[[], object]:
        return lambda: run_identity(run.spec, run.split.hash, run.files).run_id

    records = count_records(single_store)
    bench.add(f"store open (leftover cleanup, {records} records)", open_store, ONCE, ONCE)
    # Timed before anything else here computes an identity: its first call is the cold one.
    bench.add("run identity (plugin versions, encoder fingerprint)", identity, ONCE, ONCE)
    run_id = run_identity(run.spec, run.split.hash, run.files).run_id
    store = ResultsStore(bench.scratch / "lock-store")

    def lock(_: int) -> Callable[[], object]:
        def call() -> None:
            with store.lock_run(run.spec, run_id):
                store.find(run.spec, run_id)
                with store.work_dir(run_id):
                    pass

        return call

    def split(i: int) -> Callable[[], object]:
        return lambda: save_split(run.split, bench.folder("splits", i))

    bench.add("run lock acquire/release, record check, scratch folder", lock, ONCE, ONCE)
    bench.add("split file write", split, ONCE, ONCE)


def count_records(store: Path) -> int:
    return len(list(store.glob("runs/*/*/*/record.json")))


def time_record(bench: Bench, single_store: Path) -> None:
    """Provenance (git, packages, hardware, engine fingerprint) and the record write."""
    import pandas as pd

    from gcdbench.engine import engine_fingerprint
    from gcdbench.runner import provenance
    from gcdbench.runner.store import ResultsStore, load_record

    path = next(single_store.glob("runs/*/glean/*/record.json"))
    record = load_record(path)
    predictions = pd.read_csv(path.parent / record.predictions_file)

    def collect(_: int) -> Callable[[], object]:
        return lambda: (provenance.collect(), engine_fingerprint())

    def write(i: int) -> Callable[[], object]:
        store = ResultsStore(bench.folder("store", i))
        return lambda: store.write(record, predictions)

    bench.add("provenance (git state, packages, hardware, engine fingerprint)", collect, ONCE, ONCE)
    bench.add("record write (record.json + predictions.csv, atomic)", write, ONCE, ONCE)


def time_sweep_marker(bench: Bench, run: RunObjects) -> None:
    """What a sweep adds around each run: its running marker and failure-record check."""
    import contextlib

    from gcdbench.runner.sweep_status import FailureLog, running_marker

    def marker(i: int) -> Callable[[], object]:
        results = bench.folder("marker", i)

        def call() -> None:
            with running_marker(results, run.spec):
                pass
            with contextlib.suppress(OSError):
                FailureLog(results).clear(run.spec)

        return call

    bench.add("sweep running marker + failure-record clear", marker, NEVER, ONCE)


def time_ledger(bench: Bench) -> None:
    """An LLM run opens the ledger once and stores each answer as it arrives."""
    from gcdbench.api.spec import sha256_hex
    from gcdbench.feedback.ledger import Entry, Ledger

    # Runs share one ledger (<cache>/ledger.sqlite): it exists when a run opens it.
    ledger = Ledger(bench.scratch / "ledger.sqlite")

    def open_ledger(_: int) -> Callable[[], object]:
        return lambda: Ledger(ledger.path).close()

    def put(i: int) -> Callable[[], object]:
        entry = Entry(
            key=sha256_hex(f"question {i}"),
            kind="select-similar-instance",
            identity={"provider": "openai", "model": "m", "base_url": "http://127.0.0.1"},
            template_id="glean/select-similar-instance",
            template_sha256=sha256_hex("template"),
            raw_text="2",
            value=1,
            status="ok",
            confidence=0.93,
            option_logprobs={"1": -2.1, "2": -0.07, "3": -4.2},
            prompt_tokens=158,
            completion_tokens=1,
            latency_s=0.4,
            cost_usd=None,
            run_hash=sha256_hex("run"),
        )
        return lambda: ledger.put(entry)

    bench.add("ledger open (LLM runs)", open_ledger, ONCE, ONCE, llm_only=True)
    bench.add("ledger put, one answer (LLM runs)", put, PER_QUESTION, PER_QUESTION, llm_only=True)


def time_checkpoints(bench: Bench, run: RunObjects) -> None:
    """A real round checkpoint: an in-process GLEAN run, its save captured as it happens
    (that save's time is the first call); then the same state saved, removed (as after the
    record) and loaded again ``--repeats`` times each."""
    import shutil

    from gcdbench.runner.run import RunOptions, execute
    from gcdbench.training.checkpoint import RoundCheckpoints, RoundParts, RoundProgress

    captured: list[tuple[RoundCheckpoints, RoundParts, RoundProgress, float]] = []
    original = RoundCheckpoints.save

    def save_and_capture(
        self: RoundCheckpoints, parts: RoundParts, progress: RoundProgress
    ) -> Path | None:
        start = time.perf_counter()
        path = original(self, parts, progress)
        captured.append((self, parts, progress, (time.perf_counter() - start) * 1000))
        return path

    console.log(f"in-process GLEAN run for its checkpoint (load {load_1m():.1f})")
    # Wraps the real save to keep its arguments: the checkpoint timed is a run's own.
    RoundCheckpoints.save = save_and_capture  # type: ignore[method-assign]
    try:
        options = RunOptions(bench.scratch / "in-process", str(bench.inputs.slices))
        execute(run.spec, options)
    finally:
        RoundCheckpoints.save = original  # type: ignore[method-assign]
    if not captured:
        sys.exit("the in-process GLEAN run saved no round checkpoint")
    checkpoints, parts, state, in_run_ms = captured[-1]

    def save(i: int) -> Callable[[], object]:
        fresh = replace(checkpoints, folder=bench.folder("ckpt", i))
        return lambda: fresh.save(parts, state)

    def saved(name: str, i: int) -> RoundCheckpoints:
        fresh = replace(checkpoints, folder=bench.folder(name, i), resumed=None)
        fresh.save(parts, state)
        return fresh

    def remove(i: int) -> Callable[[], object]:
        folder = saved("ckpt-remove", i).folder
        return lambda: shutil.rmtree(folder)  # what ctx.discard_checkpoints does

    def load(i: int) -> Callable[[], object]:
        fresh = saved("ckpt-load", i)
        return lambda: fresh.restore(parts, len(state.rounds))

    bench.add("round checkpoint save", save, PER_ROUND, PER_ROUND)
    # The save inside the run is the true first call.
    bench.parts[-1] = replace(bench.parts[-1], first_ms=in_run_ms)
    bench.add("checkpoint folder removal (after the record)", remove, ONCE, ONCE)
    bench.add("round checkpoint load (only when a run resumes)", load, NEVER, NEVER)


# -- the tables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    runs: list[RunTime]
    in_sweep: bool
    llm: bool = False  # add the ledger writes an LLM's answers would cost


def harness_ms(parts: Sequence[Part], run: RunTime, row: Row) -> dict[str, float]:
    """Each part's ms for ``run``: first-call costs in a process of its own, warm ones in a
    sweep; ledger parts only for a row whose answers come from an LLM."""
    out = {}
    for part in parts:
        if part.llm_only and not row.llm:
            continue
        calls = COUNTS[part.per_sweep_run if row.in_sweep else part.per_run](run)
        out[part.name] = (part.warm_ms if row.in_sweep else part.first_ms) * calls
    return out


def print_report(
    parts: Sequence[Part],
    rows: Sequence[Row],
    encoder: str,
    loads: tuple[float, float],
    args: argparse.Namespace,
) -> None:
    command = "python benchmarks/harness_overhead.py " + shlex.join(sys.argv[1:])
    print("### Harness overhead per run (smoke runs)\n")
    print(
        f"`GCDBENCH_DATA=../shared/data {command.strip()}` — {machine()}; GLEAN "
        f"(`--preset smoke --llm oracle`) and no-llm (`--preset smoke`) on {SLICE} (the first "
        f"{SLICES[SLICE]} BANKING classes, known ratio {KNOWN_RATIO}), encoder "
        f"{encoder_label(encoder)}, seeds 0-{args.seeds - 1}, OMP_NUM_THREADS=1; load average "
        f"(1 min) {loads[0]:.2f} at the start, {loads[1]:.2f} at the end\n"
    )
    print(
        f"Harness parts, timed directly in {args.processes} fresh processes (first call: the "
        f"median of their first calls; warm: the median of their medians of {args.repeats} "
        "calls after it):\n"
    )
    print("| harness part | first call ms | warm ms | calls per run: `gcdbench run` | sweep |")
    print("|---|---:|---:|---|---|")
    for p in parts:
        print(
            f"| {p.name} | {p.first_ms:.2f} | {p.warm_ms:.2f} | {p.per_run} | {p.per_sweep_run} |"
        )
    print()
    print("Share of the run's time (run time: median `provenance.durations_s.total`):\n")
    print(
        "| runs | n | run time s | process wall s | harness ms/run | harness / run time | "
        "harness / wall | < 1% | < 1% from a run time of | largest part |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for row in rows:
        print(row_line(parts, row))
    print()


def encoder_label(encoder: str) -> str:
    return encoder if encoder == FALLBACK_ENCODER else "a tiny random BERT (2 layers, 32-d)"


def row_line(parts: Sequence[Part], row: Row) -> str:
    per_run = [harness_ms(parts, run, row) for run in row.runs]
    totals = [sum(p.values()) for p in per_run]
    harness = statistics.median(totals)
    run_s = statistics.median(r.total_s for r in row.runs)
    walls = [r.wall_s for r in row.runs if r.wall_s is not None]
    wall_s = statistics.median(walls) if walls else None
    share = harness / 1000 / run_s
    largest = max(per_run[0].items(), key=lambda kv: kv[1])
    wall_cells = (f"{wall_s:.2f}", f"{harness / 1000 / wall_s:.2%}") if wall_s else ("–", "–")
    return (
        f"| {row.label} | {len(row.runs)} | {run_s:.2f} | {wall_cells[0]} | {harness:.1f} | "
        f"{share:.2%} | {wall_cells[1]} | {'yes' if share < 0.01 else 'no'} | "
        f"{harness / 10:.1f} s | {largest[0]}: {largest[1]:.1f} ms ({largest[1] / harness:.0%}) |"
    )


def build_rows(single: Sequence[RunTime], swept: Sequence[RunTime]) -> list[Row]:
    def of(runs: Sequence[RunTime], method: str) -> list[RunTime]:
        return [r for r in runs if r.method == method]

    return [
        Row("`gcdbench run glean --llm oracle`, a process per run", of(single, "glean"), False),
        Row("`gcdbench run no-llm`, a process per run", of(single, "no-llm"), False),
        Row(
            "the glean runs + ledger writes of their questions (as if an LLM answered)",
            of(single, "glean"),
            False,
            llm=True,
        ),
        Row("`gcdbench sweep` (local): glean", of(swept, "glean"), True),
        Row("`gcdbench sweep` (local): no-llm", of(swept, "no-llm"), True),
        Row("sweep glean + ledger writes (as if an LLM answered)", of(swept, "glean"), True, True),
    ]


def time_in_fresh_processes(
    inputs: Inputs, work: Path, plan: Path, specs: int, args: argparse.Namespace
) -> list[Part]:
    """Every part timed in ``--processes`` fresh processes, one after the other: per part,
    the median of their first calls and of their warm medians. They use the single runs'
    cache, as a user's next run finds it (the encoder's fingerprint remembered, say)."""
    (work / "inputs.json").write_text(
        json.dumps({"slices": str(inputs.slices), "encoder": inputs.encoder,
                    "site": str(inputs.site), "plan": str(plan), "specs": specs}),
        encoding="utf-8",
    )  # fmt: skip
    measured: list[list[Part]] = []
    for k in range(args.processes):
        console.log(f"timing the harness parts in fresh process {k + 1}/{args.processes}")
        argv = [sys.executable, __file__, "--repeats", str(args.repeats)]
        argv += ["--time-parts", str(work), "--child", str(k)]
        env = inputs.env(work / "cache-single")
        done = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"timing process {k + 1} failed ({done.returncode})")
        measured.append([Part(**part) for part in json.loads(done.stdout)])
    return [
        replace(
            same[0],
            first_ms=statistics.median(p.first_ms for p in same),
            warm_ms=statistics.median(p.warm_ms for p in same),
        )
        for same in zip(*measured, strict=True)
    ]


def time_parts_here(work: Path, child: int, repeats: int) -> list[Part]:
    """The parts, timed in this (fresh) process, in the order a run meets them."""
    saved = json.loads((work / "inputs.json").read_text(encoding="utf-8"))
    inputs = Inputs(Path(saved["slices"]), saved["encoder"], Path(saved["site"]))
    scratch = work / f"timed-{child}"
    bench = Bench(inputs, work, scratch, repeats, Path(saved["plan"]), saved["specs"])
    load_plugins()
    time_resolution(bench)
    run = run_objects(inputs)
    # Before the status read, which computes identities: the identity's first call is cold.
    time_store(bench, run, work / "single-runs")
    time_status(bench, work / "sweep-runs")
    time_record(bench, work / "single-runs")
    time_sweep_marker(bench, run)
    time_ledger(bench)
    time_checkpoints(bench, run)
    return bench.parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (runs 0..N-1)")
    parser.add_argument("--repeats", type=int, default=20, help="warm calls per harness part")
    parser.add_argument(
        "--processes", type=int, default=3, help="fresh processes the parts are timed in"
    )
    # A timing process of this script (started by the script itself).
    parser.add_argument("--time-parts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.seeds, args.repeats, args.processes) < 1:
        sys.exit("--seeds, --repeats and --processes must be at least 1")
    if args.time_parts is not None:
        parts = time_parts_here(args.time_parts, args.child, args.repeats)
        print(json.dumps([dataclasses.asdict(p) for p in parts]))
        return
    load_start = load_1m()
    with tempfile.TemporaryDirectory(prefix="harness-overhead-") as folder:
        work = Path(folder)
        console.log(f"preparing slices, encoder and plugin in {work}")
        inputs = prepare_inputs(work / "inputs")
        seeds = list(range(args.seeds))
        plan = write_plan(work / "plan.toml", inputs, [SLICE], seeds)
        single = single_runs(inputs, work, seeds)
        swept = sweep_runs(inputs, work, plan)
        parts = time_in_fresh_processes(inputs, work, plan, len(swept), args)
    loads = (load_start, load_1m())
    print_report(parts, build_rows(single, swept), inputs.encoder, loads, args)


if __name__ == "__main__":
    main()
