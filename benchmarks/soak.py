"""Reliability soak (issue #17): the kill and concurrency checks of
tests/test_reliability_kills.py and tests/test_reliability_concurrency.py, with many SIGKILLs
at seeded random points.

    python benchmarks/soak.py --kills 300 --seed 0     # hundreds of kills: about an hour on 2 cores
    python benchmarks/soak.py --kills 40 --seed 0      # about ten minutes on 2 busy cores

Four suites share the kills (40/20/20/20%); each runs series until its share is spent:

- **GLEAN kills**: ``gcdbench run glean`` (smoke preset, tiny random BERT, a BANKING slice)
  asking a real chat-completions server on 127.0.0.1 (tests/llm_servers.py), killed 1-3
  times at seeded points (anywhere in the run, pre-training, the first round, a feedback
  batch, the record write, just after the record), each time started again, then run to
  its end.
- **--force kills**: K-means on MASSIVE scenario re-run with ``--force`` over its record,
  killed 1-3 times (inside the record write, or anywhere), while a reader checks that one
  whole record is always there; then ``--force`` to its end.
- **sweep kills**: ``gcdbench sweep`` of three K-means specs, killed 1-3 times (anywhere, or
  inside a record write).
- **concurrency**: four processes (two identical single runs, a plan run, a sweep) on one
  results store, ledger and cache, with overlapping GLEAN plans; each process killed with
  probability 1/2 at a seeded moment, rounds repeated until 1-3 kills, then all four run to
  their end.

After every series each result must equal an uninterrupted run's (metrics and predictions.csv
bytes). Per suite it prints kills (SIGKILLs that found their process running), processes,
runs (results the series had to record), and what must each be 0: results lost, duplicate
records, tracebacks (stderr lines starting with "Traceback"), questions asked twice (answers
the LLM server sent beyond one per question and those in flight at a kill), results that
differ from the uninterrupted run, leftovers (temporary files after the final run), other
problems (unreadable records, ledger integrity, failed runs). Exits 1 if any is not 0, and
lists the problems. Needs GCDBENCH_DATA (or ../shared/data beside the checkout).

The chat server prints a "Connection reset by peer" traceback on this script's stderr each
time a process is killed while its request is being read: that is the kill, not a failure
(only tracebacks in the gcdbench processes' stderr are counted).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from llm_servers import ScriptedChatServer  # noqa: E402

from tests.banking_slices import write_slices  # noqa: E402
from tests.test_reliability_concurrency import (  # noqa: E402
    PLANS,
    Tally,
    check_concurrent,
    concurrent_round,
)
from tests.test_reliability_kills import (  # noqa: E402
    CONCURRENCY,
    GLEAN_POINTS,
    LATENCY_S,
    SLICES,
    Inputs,
    KillLog,
    Reference,
    ServerCount,
    Tree,
    glean_reference,
    kill_and_restart_glean,
    kill_and_restart_kmeans,
    kill_and_restart_sweep,
    kmeans_reference,
    llm_spec,
)
from tests.training_fixtures import tiny_bert_folder  # noqa: E402

SHARES = {"GLEAN kills": 0.4, "--force kills": 0.2, "sweep kills": 0.2, "concurrency": 0.2}
COLUMNS = (
    "kills",
    "processes",
    "runs",
    "results lost",
    "duplicates",
    "tracebacks",
    "questions asked twice",
    "differing results",
    "leftovers",
    "other problems",
)
#: The columns that must read 0.
MUST_BE_ZERO = COLUMNS[3:]


@dataclass
class Soak:
    """Everything the suites share: inputs, the server, the references, the seeded draws."""

    inputs: Inputs
    server: ServerCount
    rng: random.Random
    workdir: Path
    keep: bool
    glean: Reference  # seed 0
    glean_all: Reference  # every seed PLANS run
    kmeans: Reference  # seeds 0-2
    trees: int = 0

    def tree(self, name: str) -> Tree:
        self.trees += 1
        return Tree(self.workdir / f"{self.trees:04d}-{name}")

    def done_with(self, tree: Tree) -> None:
        if not self.keep:
            shutil.rmtree(tree.root, ignore_errors=True)


@dataclass
class SuiteResult:
    name: str
    log: KillLog = field(default_factory=KillLog)
    seconds: float = 0.0

    def row(self) -> dict[str, int]:
        counts = self.log.counts()
        return {column: counts[column.replace(" ", "_")] for column in COLUMNS}


# -- the suites ------------------------------------------------------------------------------


def glean_suite(soak: Soak, kills: int) -> KillLog:
    log = KillLog()
    while log.kills < kills:
        tree = soak.tree("glean")
        points = soak.rng.choices(GLEAN_POINTS, k=soak.rng.randint(1, 3))
        log.add(
            kill_and_restart_glean(soak.inputs, tree, soak.server, soak.glean, points, soak.rng)
        )
        soak.done_with(tree)
    return log


def force_suite(soak: Soak, kills: int) -> KillLog:
    log = KillLog()
    tree = soak.tree("force")
    while log.kills < kills:
        points = soak.rng.choices(("record write", "anywhere"), k=soak.rng.randint(1, 3))
        log.add(
            kill_and_restart_kmeans(soak.inputs, tree, soak.kmeans, points, soak.rng, force=True)
        )
    soak.done_with(tree)
    return log


def sweep_suite(soak: Soak, kills: int) -> KillLog:
    log = KillLog()
    while log.kills < kills:
        tree = soak.tree("sweep")
        points = soak.rng.choices(("anywhere", "record write"), (3, 1), k=soak.rng.randint(1, 3))
        log.add(kill_and_restart_sweep(soak.inputs, tree, soak.kmeans, points, soak.rng))
        soak.done_with(tree)
    return log


def concurrency_suite(soak: Soak, kills: int) -> KillLog:
    log = KillLog()
    while log.kills < kills:
        tree = soak.tree("concurrency")
        log.add(concurrent_series(soak, tree, soak.rng.randint(1, 3)))
        soak.done_with(tree)
    return log


def concurrent_series(soak: Soak, tree: Tree, wanted: int) -> KillLog:
    """Rounds of the four PLANS commands started together, each killed with probability 1/2
    at a seeded moment, until ``wanted`` kills (at most 8 rounds); then a round run to its
    end. Each spec must be recorded once (a "done" outcome printed once), as uninterrupted."""
    seeds = {s for _, plan in PLANS for s in plan}
    log, tally = KillLog(runs=len(seeds)), Tally()
    before = soak.server.settle()
    for _ in range(8):
        if log.kills >= wanted:
            break
        delays = [
            soak.rng.uniform(0.0, soak.glean.duration_s) if soak.rng.random() < 0.5 else None
            for _ in PLANS
        ]
        killed = concurrent_round(soak.inputs, tree, delays, log, tally)
        log.count_lost(soak.server.settle() - before, tree, killed)
    concurrent_round(soak.inputs, tree, [None] * len(PLANS), log, tally)
    expected = soak.glean_all.results
    lost = log.lost_answers
    log.findings.add(
        check_concurrent(tree, seeds, soak.server, before, lost=lost, expected=expected)
    )
    log.findings.duplicates += tally.runs_twice()
    return log


SUITES: dict[str, Callable[[Soak, int], KillLog]] = {
    "GLEAN kills": glean_suite,
    "--force kills": force_suite,
    "sweep kills": sweep_suite,
    "concurrency": concurrency_suite,
}


# -- main ------------------------------------------------------------------------------------


def data_root() -> Path:
    for candidate in (os.environ.get("GCDBENCH_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "banking" / "train.tsv").is_file():
            return Path(candidate).resolve()
    sys.exit("error: benchmark data not found; set GCDBENCH_DATA to the data folder.")


def shares(kills: int) -> dict[str, int]:
    """Each suite's kills: its share of ``kills``, at least one."""
    return {name: max(1, round(kills * share)) for name, share in SHARES.items()}


def prepare(workdir: Path, server: ScriptedChatServer, rng: random.Random, keep: bool) -> Soak:
    data = data_root()
    write_slices(data, workdir / "slices", SLICES)
    bert = tiny_bert_folder(workdir / "bert")
    inputs = Inputs(workdir / "slices", data, bert, llm_spec(server.base_url))
    print("uninterrupted reference runs ...", file=sys.stderr, flush=True)
    glean = glean_reference(inputs, Tree(workdir / "ref-glean"))
    others = sorted({s for _, plan in PLANS for s in plan} - {0})
    rest = glean_reference(inputs, Tree(workdir / "ref-glean-rest"), ",".join(map(str, others)))
    glean_all = Reference(
        {**glean.results, **rest.results}, glean.questions | rest.questions, glean.duration_s
    )
    kmeans = kmeans_reference(inputs, Tree(workdir / "ref-kmeans"), (0, 1, 2))
    return Soak(inputs, ServerCount(server), rng, workdir, keep, glean, glean_all, kmeans)


def table(results: Sequence[SuiteResult]) -> list[str]:
    lines = [
        "| suite | " + " | ".join(COLUMNS) + " | minutes |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for result in results:
        row = result.row()
        cells = [str(row[c]) for c in COLUMNS] + [f"{result.seconds / 60:.1f}"]
        lines.append(f"| {result.name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=300, help="SIGKILLs in all (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--workdir", default=None, help="folder for the trees (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep every tree for inspection")
    args = parser.parse_args(argv)
    if args.kills < len(SUITES):
        parser.error(f"--kills must be at least {len(SUITES)} (one per suite)")
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="soak-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: list[SuiteResult] = []
    with ScriptedChatServer(latency_s=LATENCY_S) as server:
        soak = prepare(workdir, server, rng, args.keep)
        for name, kills in shares(args.kills).items():
            print(f"{name}: {kills} kills ...", file=sys.stderr, flush=True)
            suite_started = time.monotonic()
            log = SUITES[name](soak, kills)
            results.append(SuiteResult(name, log, time.monotonic() - suite_started))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print_report(args, results, time.monotonic() - started)
    return int(any(r.row()[c] for r in results for c in MUST_BE_ZERO))


def print_report(args: argparse.Namespace, results: Sequence[SuiteResult], wall: float) -> None:
    command = "python benchmarks/soak.py " + shlex.join(
        ["--kills", str(args.kills), "--seed", str(args.seed)]
    )
    print(f"`{command}`  ")
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{wall / 60:.1f} minutes; chat server latency {LATENCY_S} s, {CONCURRENCY} requests "
        "in flight per process"
    )
    print()
    for line in table(results):
        print(line)
    print()
    for result in results:
        points = ", ".join(f"{p} {n}" for p, n in sorted(result.log.points.items()))
        print(f"- {result.name}: kills landed at {points or 'nothing'}")
    problems = [(r.name, p) for r in results for p in r.log.findings.problems()]
    if problems:
        print()
        print(f"problems ({len(problems)}):")
        for name, problem in problems[:50]:
            print(f"- {name}: {problem}")


if __name__ == "__main__":
    sys.exit(main())
