"""LLM faults through whole method runs (docs/reliability.md, "LLM faults and failure budget").

``gcdbench run glean`` and ``gcdbench run llm-cluster`` (smoke preset, the tiny random BERT,
a four-class BANKING slice) ask a real chat-completions server on 127.0.0.1
(tests/llm_servers.py) that fails on purpose: rate limits with and without Retry-After,
500/502/503, connection resets, timeouts, truncated and malformed bodies, answers without
choices, answers naming options that do not exist, and a server that dies mid-round and comes
back. Each test reads the record, the ledger and the server's own log:

- transient faults cost retries, spaced by a growing backoff, never results: the record
  equals that of a run against a server that never failed;
- a request that fails every retry makes its question an "error", counted in the record, and
  the run finishes;
- with ``--llm-option max_failures=N`` the run stops instead, with one line, exit code 2 and no
  record; run again once the server is back, it asks only what failed;
- every completion the client received is one ledger row, and none is asked for twice.

The module's counts end as one JSON line (``RELIABILITY {...}``, printed with ``-s``, or
appended to the file ``GCDBENCH_RELIABILITY_SUMMARY`` names).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from llm_servers import (
    ANSWERED,
    ScriptedChatServer,
    SuiteSummary,
    audit_ledger,
    valid_content,
)
from threadpoolctl import threadpool_limits

from gcdbench import registry
from gcdbench.cli import cli
from tests.banking_slices import SlicePlugin, write_slices
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)

DATASET = "banking-slice4"
#: retries fast enough for a test, slow enough to measure: waits of 0.1-0.2, 0.2-0.4, 0.4-0.8 s
BACKOFF_S = 0.2
#: the client's timeout (ample for an answer on a busy machine: a late one would be asked
#: twice), and how long a "slow" reply takes (past it)
TIMEOUT_S, SLOW_S = 3.0, 4.0
RETRIES = {"backoff": str(BACKOFF_S), "max_backoff": "2", "timeout": str(TIMEOUT_S)}
#: one of each fault, in turn, to the questions in the order they first arrive
FAULT_CYCLE = (
    "429", "429:0.3", "500", "502", "503", "reset", "truncated", "malformed", "empty", "slow",
)  # fmt: skip
CHARACTERIZE_PROMPT = "give the group a category name"  # GLEAN's cluster-naming question
ERROR, PARSE_FAILURE = "error", "parse-failure"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch/OpenMP thread: the models are tiny and the machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def summary() -> Iterator[SuiteSummary]:
    counts = SuiteSummary(
        "llm-faults",
        zero=("results_lost", "duplicates", "tracebacks", "questions_asked_twice"),
        positive=("faults_injected", "runs"),
    )
    yield counts
    counts.publish()
    assert not counts.problems(), counts.problems()


@pytest.fixture(scope="module")
def data_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("banking-slices")
    write_slices(shared_data, root, {DATASET: 4})
    registry.register_plugin(SlicePlugin({DATASET: 4}), "test-reliability-slices")
    yield root
    registry.unregister_plugin("test-reliability-slices")


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    records: list[dict[str, Any]]

    @property
    def record(self) -> dict[str, Any]:
        (record,) = self.records
        return record

    def per_kind(self, kind: str) -> dict[str, Any]:
        return dict(self.record["feedback"]["stats"]["per_kind"][kind])


@dataclass
class Gcdbench:
    """``gcdbench run METHOD`` on the slice, against one server, one ledger, one store."""

    data: Path
    encoder: Path
    folder: Path
    summary: SuiteSummary

    def run(self, method: str, server: ScriptedChatServer, *extra: str) -> Run:
        results = self.folder / "results"
        options = {**RETRIES, "base_url": server.base_url}
        args = [
            "run", method, "--dataset", DATASET, "--known-ratio", "0.5", "--seed", "0",
            "--preset", "smoke", "--encoder", str(self.encoder), "--data-dir", str(self.data),
            "--results-dir", str(results), "--ledger", str(self.ledger), "-q",
            "--llm", "openai:scripted",
            *(f"--llm-option={key}={value}" for key, value in options.items()), *extra,
        ]  # fmt: skip
        outcome = CliRunner().invoke(cli, args)
        self.summary.count_run(outcome.output, outcome.exception)
        records = [json.loads(p.read_text()) for p in sorted(results.rglob("record.json"))]
        return Run(outcome.exit_code, outcome.stdout, outcome.stderr, records)

    @property
    def ledger(self) -> Path:
        return self.folder / "ledger.sqlite"


@pytest.fixture
def gcdbench(
    data_root: Path,
    tiny_bert: Path,  # noqa: F811
    tmp_path: Path,
    summary: SuiteSummary,
) -> Callable[[str], Gcdbench]:
    """``gcdbench("name")``: a results store and ledger of their own under the test's folder."""
    return lambda name: Gcdbench(data_root, tiny_bert, tmp_path / name, summary)


@dataclass(frozen=True)
class Reference:
    """A run against a server that never fails: what every faulty run must come back to."""

    record: dict[str, Any]
    asked: frozenset[str]  # the digests of every request it sent


@pytest.fixture(scope="module")
def reference(
    data_root: Path,
    tiny_bert: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    summary: SuiteSummary,
) -> Callable[[str], Reference]:
    done: dict[str, Reference] = {}
    folder = tmp_path_factory.mktemp("reference")

    def get(method: str) -> Reference:
        if method not in done:
            g = Gcdbench(data_root, tiny_bert, folder / method, summary)
            with ScriptedChatServer(content=valid_content) as server:
                run = g.run(method, server)
                audit = audit_ledger(server, g.ledger, summary)
            assert run.exit_code == 0, run.stderr
            assert audit.rows == audit.answered and audit.asked_twice == 0
            done[method] = Reference(run.record, frozenset(e.digest for e in server.log))
        return done[method]

    return get


class FaultEachQuestion:
    """The k-th distinct request to arrive gets ``FAULT_CYCLE[k % 10]`` on its first attempts
    (two or three of them; one for a slow reply), then an answer: every fault is injected
    whatever order the questions come in."""

    def __init__(self) -> None:
        self.first_seen: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, request_id: str, attempt: int) -> str:
        with self.lock:
            k = self.first_seen.setdefault(request_id, len(self.first_seen))
        fault = FAULT_CYCLE[k % len(FAULT_CYCLE)]
        failing = 1 if fault == "slow" else 2 + (k // len(FAULT_CYCLE)) % 2
        return fault if attempt < failing else "ok"


def min_wait(retry: int) -> float:
    """The shortest wait before retry ``retry`` (1-based): half the exponential backoff."""
    return 0.5 * BACKOFF_S * 2 ** (retry - 1)


def check_backoff(server: ScriptedChatServer) -> int:
    """Every retry came after at least its backoff (or the server's Retry-After); the number
    of retries checked."""
    by_request: dict[str, list[Any]] = {}
    for exchange in sorted(server.log, key=lambda e: e.at):
        by_request.setdefault(exchange.request_id, []).append(exchange)
    checked = 0
    for exchanges in by_request.values():
        for retry, (before, after) in enumerate(itertools.pairwise(exchanges), 1):
            floor = min_wait(retry)
            if before.action.startswith("429:"):
                floor = max(floor, float(before.action.partition(":")[2]))
            if before.action == "slow":  # the client waited out its timeout, not less
                floor = TIMEOUT_S - 0.1  # (its clock started as it sent, a little earlier)
            gap = after.at - before.at
            assert gap >= floor - 0.01, (before.action, retry, gap, floor)
            checked += 1
    return checked


def statuses(record: dict[str, Any]) -> dict[str, dict[str, int]]:
    per_kind = record["feedback"]["stats"]["per_kind"]
    return {kind: dict(stats["statuses"]) for kind, stats in per_kind.items()}


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


# -- transient faults: retries, never results ------------------------------------------------


@pytest.mark.parametrize("method", ["glean", "llm-cluster"])
def test_transient_faults_cost_retries_not_results(method, gcdbench, reference, summary):
    clean = reference(method)
    g = gcdbench(method)
    with ScriptedChatServer(FaultEachQuestion(), slow_s=SLOW_S, content=valid_content) as server:
        run = g.run(method, server, "--llm-option=max_retries=3")
        audit = audit_ledger(server, g.ledger, summary)
    assert run.exit_code == 0, run.stderr
    injected = {e.action for e in server.faults()}
    assert injected == set(FAULT_CYCLE), f"never injected: {set(FAULT_CYCLE) - injected}"
    assert check_backoff(server) >= len(server.answered)  # a retry or more per request

    # The same questions, the same answers, the same result as without a single fault.
    assert {e.digest for e in server.log} == clean.asked
    assert run.record["metrics"] == clean.record["metrics"]
    assert run.record["clusters"] == clean.record["clusters"]
    assert statuses(run.record) == statuses(clean.record)
    assert ERROR not in json.dumps(statuses(run.record))
    # Every completion received is in the ledger once; a timed-out one was asked again.
    assert audit.rows == audit.answered == len(clean.asked)
    assert audit.asked_twice == 0
    assert sum(server.late.values()) >= 1


# -- retries spent: an error per question, and the run goes on --------------------------------


class FailNamingQuestions:
    """Half of GLEAN's cluster-naming questions fail every attempt with 503; the rest, and
    every other question, are answered."""

    def __init__(self) -> None:
        self.healthy = False

    def __call__(self, request_id: str, attempt: int) -> str:
        naming = CHARACTERIZE_PROMPT in request_id
        return "503" if naming and not self.healthy and fails(request_id) else "ok"


def fails(request_id: str) -> bool:
    return zlib.crc32(request_id.encode()) % 2 == 0


def test_retries_spent_make_an_error_per_question_and_the_run_finishes(gcdbench, summary):
    g = gcdbench("spent")
    script = FailNamingQuestions()
    retries = 1
    with ScriptedChatServer(script, content=valid_content) as server:
        first = g.run("glean", server, f"--llm-option=max_retries={retries}")
        assert first.exit_code == 0, first.stderr
        failing = {rid: n for rid, n in server.hits.items() if script(rid, 0) == "503"}
        assert failing, "no naming question failed: the test injected nothing"
        # Each asking of a failing question: 1 + max_retries attempts, then an error.
        assert all(n % (1 + retries) == 0 for n in failing.values()), failing
        askings = sum(n // (1 + retries) for n in failing.values())
        naming = first.per_kind("characterize-cluster")
        assert naming["statuses"][ERROR] == askings
        assert sum(naming["statuses"].values()) == naming["queries"] > askings
        assert first.record["feedback"]["stats"]["total"]["statuses"][ERROR] == askings
        assert check_backoff(server) >= askings * retries
        before = {e.digest for e in server.log if e.outcome == ANSWERED}

        # The endpoint recovers: the same run again asks for no answer it already got.
        script.healthy = True
        again = g.run("glean", server, f"--llm-option=max_retries={retries}", "--force")
        assert again.exit_code == 0, again.stderr
        audit = audit_ledger(server, g.ledger, summary)
    assert ERROR not in statuses(again.record)["characterize-cluster"]
    asked_again = {e.digest for e in server.log if e.outcome == ANSWERED} & before
    assert audit.asked_twice == 0, f"{len(asked_again)} answered questions were asked again"
    assert again.per_kind("characterize-cluster")["ledger_hits"] > 0
    assert audit.rows == audit.answered


# -- the failure budget, and a server that dies mid-round -------------------------------------


class DiesAfter:
    """Answers the first ``answers`` requests, then dies (``down``) until it comes back."""

    def __init__(self, answers: int) -> None:
        self.answers = answers
        self.seen = 0
        self.lock = threading.Lock()

    def __call__(self, request_id: str, attempt: int) -> str:
        with self.lock:
            self.seen += 1
            return "ok" if self.seen <= self.answers else "down"


def test_failure_budget_stops_the_run_and_a_restart_asks_only_what_failed(
    gcdbench, reference, summary
):
    clean = reference("glean")
    g = gcdbench("budget")
    kept = 5
    with ScriptedChatServer(DiesAfter(kept), content=valid_content) as server:
        stopped = g.run(
            "glean", server, "--llm-option=max_retries=2", "--llm-option=max_failures=1"
        )
        assert server.is_down
        line = one_error_line(stopped.stderr)
        assert stopped.exit_code == 2 and not stopped.records, line
        assert "more than the failure budget --llm-option max_failures=1" in line
        assert "e.g. --llm-option max_failures=" in line and "APIConnectionError" in line
        answered = {e.digest for e in server.log if e.outcome == ANSWERED}
        assert len(answered) == kept
        assert audit_ledger(server, g.ledger, summary).rows == kept  # every answer, kept

        # Back on the same port; the same run without a budget (it is no part of the ledger's
        # keys): it asks exactly what the stopped run did not get, and ends as a clean run.
        server.script = lambda rid, attempt: "ok"
        server.come_back()
        again = g.run("glean", server, "--llm-option=max_retries=2")
        audit = audit_ledger(server, g.ledger, summary)
    assert again.exit_code == 0, again.stderr
    asked_after = {e.digest for e in server.log if e.outcome == ANSWERED} - answered
    assert asked_after == clean.asked - answered
    assert again.record["feedback"]["stats"]["total"]["ledger_hits"] == kept
    assert again.record["metrics"] == clean.record["metrics"]
    assert audit.rows == audit.answered == len(clean.asked) and audit.asked_twice == 0
    with closing(sqlite3.connect(g.ledger)) as db:
        identities = {row[0] for row in db.execute("SELECT DISTINCT identity FROM answers")}
    assert all("max_failures" not in identity for identity in identities), identities


@pytest.mark.parametrize("value", ["-1", "lots", ""])
def test_a_bad_failure_budget_stops_before_anything_is_written(value, gcdbench, summary):
    g = gcdbench("bad-budget")
    with ScriptedChatServer() as server:
        run = g.run("glean", server, f"--llm-option=max_failures={value}")
    line = one_error_line(run.stderr)
    assert run.exit_code == 2 and "max_failures" in line and "e.g. --llm-option" in line, line
    assert not (g.folder / "results").exists() and not g.ledger.exists()
    assert not server.log


# -- replies naming options that do not exist -------------------------------------------------


@pytest.mark.parametrize(
    ("method", "kinds"),
    [
        ("glean", ("select-similar-instance", "select-category")),
        ("llm-cluster", ("classify-into-labels",)),
    ],
)
def test_replies_naming_options_that_do_not_exist_are_parse_failures(
    method, kinds, gcdbench, summary
):
    g = gcdbench(method)
    with ScriptedChatServer(lambda rid, attempt: "bad-option", content=valid_content) as server:
        run = g.run(method, server)
        audit = audit_ledger(server, g.ledger, summary)
    assert run.exit_code == 0, run.stderr
    for kind in kinds:
        stats = run.per_kind(kind)
        # Never turned into an answer: every such question is a parse failure, no position
        # was chosen, and nothing was asked again (the reply was constrained).
        assert stats["statuses"] == {PARSE_FAILURE: stats["queries"]} and stats["queries"] > 0
        assert not stats["chosen_positions"] and stats["parse_retries"] == 0
    assert audit.rows == audit.answered and audit.asked_twice == 0  # received: kept once
