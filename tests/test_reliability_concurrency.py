"""Concurrency (issue #17, item 3): four processes — two identical single ``gcdbench run``,
a ``gcdbench run`` of a plan and a ``gcdbench sweep`` — share one results store, one ledger
and one cache, with overlapping plans. Nothing may be lost, interleaved or run twice: every
planned spec is recorded once ("done" in one process's output, "skipped" or "running
elsewhere" in the others'), each record is whole JSON, the ledger passes
``PRAGMA integrity_check`` and holds each key once, the run that finds its spec running in
another process waits for it, and the LLM server is asked each question once: the backend
requests the records count sum to the ledger's rows and to the requests the server answered.
Nothing temporary is left.

GLEAN (smoke preset, tiny random BERT) on a slice of the real BANKING data, asking a real
chat-completions server on 127.0.0.1 (tests/llm_servers.py); the processes are the command
line of tests/test_reliability_kills.py, whose helpers this file shares. benchmarks/soak.py
runs these rounds again and again, killing processes at seeded moments.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import test_reliability_kills as kills
from tests.test_reliability_kills import (
    SLICE,
    ZERO,
    Findings,
    Gcdbench,
    Inputs,
    KillLog,
    Result,
    ServerCount,
    Tree,
    check_store,
    compare_results,
    glean_args,
    ledger_keys,
    ledger_problems,
    leftovers,
    recorded_requests,
)

#: The kill suite's module fixtures, shared: a chat server and the inputs per module.
chat_server = kills.chat_server
inputs = kills.inputs

#: An outcome line of ``gcdbench run`` with a plan, and of ``gcdbench sweep`` (not -q).
OUTCOME = re.compile(
    r"\b(?P<status>done|skipped|running elsewhere|failed|crashed) glean(?: \[smoke\])? on "
    r"\S+ kr=\S+ seed=(?P<seed>\d+)"
)
#: The outcome line of a single ``gcdbench run``.
SINGLE = re.compile(r"glean on \S+, known ratio \S+, seed (?P<seed>\d+): (?P<status>\w+)")
WAITED = "waiting for run"
#: ("run" or "sweep", seeds): a command of GLEAN over those seeds.
Plan = tuple[str, tuple[int, ...]]
#: Two identical single runs (the loser says it waits), a plan run and a sweep overlapping
#: them and each other, each starting on another seed.
PLANS: tuple[Plan, ...] = (("run", (0,)), ("run", (0,)), ("run", (1, 2, 0)), ("sweep", (2, 0, 1)))


def glean_sweep_plan(path: Path, inputs: Inputs, tree: Tree, seeds: Sequence[int]) -> Path:
    """The plan file of ``glean_args`` with ``--seeds``: the same specs, the same run ids."""
    path.write_text(
        textwrap.dedent(
            f"""
            encoder = "{inputs.bert}"
            llm = "{inputs.llm}"
            ledger = "{tree.ledger}"
            data_dir = "{inputs.slices}"
            [axes]
            datasets = ["{SLICE}"]
            known_ratios = [0.5]
            seeds = {list(seeds)}
            [[methods]]
            name = "glean"
            preset = "smoke"
            """
        ),
        encoding="utf-8",
    )
    return path


def commands(inputs: Inputs, tree: Tree, plans: Sequence[Plan]) -> list[list[str]]:
    """The command line of each plan; sweeps' plan files are written into the tree."""
    tree.root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (kind, seeds) in enumerate(plans):
        if kind == "run":
            out.append(glean_args(inputs, tree, "--seeds", ",".join(map(str, seeds))))
        else:
            plan = glean_sweep_plan(tree.root / f"plan-{i}.toml", inputs, tree, seeds)
            out.append(["sweep", str(plan), "--results-dir", str(tree.results)])
    return out


@dataclass
class Tally:
    """What the processes of concurrent rounds said: outcomes per spec, waits."""

    outcomes: Counter[tuple[str, int]] = field(default_factory=Counter)  # (status, seed)
    waits: int = 0

    def add(self, run: Gcdbench) -> None:
        for line in run.err + run.out:
            match = OUTCOME.search(line) or SINGLE.search(line)
            if match:
                self.outcomes[match["status"], int(match["seed"])] += 1
        self.waits += sum(WAITED in line for line in run.err)

    def done(self) -> Counter[int]:
        """Seed -> how many processes ran its spec to a record."""
        return Counter({seed: n for (status, seed), n in self.outcomes.items() if status == "done"})

    def runs_twice(self) -> int:
        return sum(n - 1 for n in self.done().values())


def concurrent_round(
    inputs: Inputs,
    tree: Tree,
    delays: Sequence[float | None],
    log: KillLog,
    tally: Tally,
) -> int:
    """Start the PLANS commands together; SIGKILL each whose delay (seconds from the start)
    is set once it has passed, wait for the others. How many kills found their process
    running."""
    started = time.monotonic()
    runs = [Gcdbench(tree, argv) for argv in commands(inputs, tree, PLANS)]
    killed = 0
    for delay, i in sorted((d, i) for i, d in enumerate(delays) if d is not None):
        time.sleep(max(0.0, started + delay - time.monotonic()))
        killed += runs[i].kill()
    for run in runs:
        run.finish()
        log.ended(run, "concurrent")
        tally.add(run)
    log.after_kill(tree)
    return killed


def check_concurrent(
    tree: Tree,
    seeds: set[int],
    server: ServerCount,
    answered_before: int,
    *,
    lost: int = 0,
    expected: dict[int, Result] | None = None,
) -> Findings:
    """Once every process has ended: each seed's spec recorded once, whole (and as the
    ``expected`` uninterrupted run records it); the ledger whole, each key once; each
    question asked once, bar the ``lost`` answers (sent to processes killed before they
    stored them); nothing temporary left."""
    store = check_store(tree.results)
    out = store.findings
    recorded = {int(r["spec"]["seed"]) for r in store.records}
    out.lost += len(seeds - recorded)
    if expected is not None:
        out.add(compare_results(tree.results, SLICE, "glean", expected))
    out.broken += ledger_problems(tree.ledger)
    rows = len(ledger_keys(tree.ledger))
    answered = server.settle() - answered_before
    out.asked_twice += answered - rows - lost
    asked = sum(recorded_requests(r)[0] for r in store.records)
    if not lost and asked != rows:
        out.broken.append(f"the records count {asked} backend requests, the ledger {rows} rows")
    out.left += leftovers(tree)
    return out


@pytest.fixture(scope="module")
def summary() -> Iterator[Any]:
    """The module's counts, printed as one ``RELIABILITY {...}`` line when it ends."""
    from llm_servers import SuiteSummary

    counts = SuiteSummary("concurrency", zero=ZERO, positive=("processes", "runs", "waits"))
    yield counts
    counts.publish()
    assert not counts.problems(), counts.problems()


def test_four_processes_on_one_store_and_ledger_run_each_spec_once(
    inputs: Inputs, chat_server, summary, tmp_path: Path
) -> None:
    tree = Tree(tmp_path)
    server = ServerCount(chat_server)
    before = server.settle()
    seeds = {s for _, plan in PLANS for s in plan}
    log, tally = KillLog(runs=len(seeds)), Tally()
    concurrent_round(inputs, tree, [None] * len(PLANS), log, tally)
    log.findings.add(check_concurrent(tree, seeds, server, before))
    log.findings.duplicates += tally.runs_twice()
    summary.add(**log.counts(), waits=tally.waits)

    assert log.findings.problems() == []
    assert log.tracebacks == 0
    assert tally.done() == Counter(seeds), tally.outcomes  # each spec run by one process
    others = {status for status, _ in tally.outcomes} - {"done"}
    assert others <= {"skipped", "running elsewhere"}, tally.outcomes
    # The single run that lost the race for seed 0 said it waited, then skipped it.
    assert tally.waits >= 1, tally.outcomes
    assert tally.outcomes["skipped", 0] >= 1
