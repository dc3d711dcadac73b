"""Progress: stage lines and a rate limit on a non-terminal, a live display that fits 80
columns on a terminal, nothing with -q, questions counted as answers arrive (ledger hits
first), and a smoke GLEAN run that reports its stages."""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from rich.console import Console

from gcdbench.api.feedback import AskingPolicy, Query
from gcdbench.cli.progress import ProgressReporter, make_reporter
from gcdbench.feedback.asking import LLMOptions
from gcdbench.feedback.ledger import Ledger
from gcdbench.feedback.llm_provider import LLMFeedbackProvider
from gcdbench.llm.api import ChatRequest, ChatResult
from gcdbench.runner.context import Reporter, answers_reported_to
from gcdbench.runner.run import RunOptions, execute, resolve_spec
from tests.test_feedback_provider import QUERIES, WordOverlapTestDouble
from tests.test_glean_loop import SLICE, _one_thread, slices  # noqa: F401  (fixtures)
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain(clock: FakeClock) -> tuple[ProgressReporter, io.StringIO]:
    out = io.StringIO()
    return ProgressReporter(Console(file=out, width=80), clock=clock), out


def a_round(reporter: Reporter, clock: FakeClock, questions: int = 60, step_s: float = 2.5):
    """What a GLEAN round reports: mine, ask (one batch, a third from the ledger), train."""
    with reporter.stage("round 1/2"):
        with reporter.stage("mine"):
            reporter.message("clustered")
        with reporter.stage("ask"), reporter.questions("select-similar-instance", questions) as a:
            for i in range(questions):
                clock.now += step_s
                a(1, int(i % 3 == 0))
        with reporter.stage("train"), reporter.task("steps", total=10) as advance:
            for _ in range(10):
                clock.now += 1
                advance(1)


def test_plain_lines_per_stage_and_at_most_one_update_per_30_s() -> None:
    clock = FakeClock()
    reporter, out = plain(clock)
    a_round(reporter, clock)
    lines = out.getvalue().splitlines()
    assert "[0:00] round 1/2" in lines
    assert "[0:00] round 1/2: mine" in lines and "[0:00] clustered" in lines
    assert "[0:00] round 1/2: ask: select-similar-instance: 0/60 questions" in lines
    assert "[2:30] round 1/2: train" in lines
    done = "round 1/2: ask: select-similar-instance: 60/60 questions, 20 from ledger; took 2:30"
    assert f"[2:30] {done}" in lines
    updates = [line for line in lines if "ETA" in line]
    assert updates and all(re.search(r"/s|s/q|s/it", line) for line in updates)
    stamps = [
        int(m[1]) * 60 + int(m[2]) for m in (re.match(r"\[(\d+):(\d+)\]", u) for u in updates)
    ]
    # 150 s of questions and 10 s of steps: an update every 30 s at most.
    assert all(b - a >= 30 for a, b in itertools.pairwise(stamps))
    assert 4 <= len(updates) <= 6
    assert "12/60 questions, 4 from ledger, 2.5 s/q, ETA 2:00" in out.getvalue()


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = make_reporter(quiet=True)
    a_round(reporter, FakeClock())
    reporter.message("loading banking")
    assert capsys.readouterr() == ("", "")
    assert isinstance(make_reporter(quiet=False), ProgressReporter)


def test_live_display_fits_80_columns() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    reporter = ProgressReporter(console)
    with (
        reporter.stage("round 1/2"),
        reporter.stage("ask"),
        reporter.questions("select-similar-instance", 60) as advance,
    ):
        advance(12, 4)
        reporter.view.progress.refresh()  # type: ignore[attr-defined]
        frame = out.getvalue()
    assert reporter.view.progress is None  # type: ignore[attr-defined]  (stopped when idle)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frame)
    assert "round 1/2: ask" in text and "select-similar-instance" in text
    assert "12/60, 4 from ledger" in text and "ETA" in text
    assert all(len(line) <= 80 for line in text.replace("\r", "\n").splitlines())


# -- the provider reports questions as their answers arrive ---------------------------------


class ReportingDouble(WordOverlapTestDouble):
    """Answers one request at a time and says so (what the local backend would do)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[int] = []

    def chat_reporting(
        self, requests: Sequence[ChatRequest], on_result: Callable[[int], None]
    ) -> list[ChatResult]:
        results = []
        for index, request in enumerate(requests):
            results.extend(self.chat([request]))
            self.answered.append(len(results))
            on_result(index)
        return results


def _listen(provider: LLMFeedbackProvider, queries) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    with answers_reported_to(lambda done, hits: calls.append((done, hits))):
        provider.answer(queries)
    return calls


def test_ledger_hits_first_then_each_answer_as_it_arrives(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        LLMFeedbackProvider(WordOverlapTestDouble(), ledger).answer(QUERIES[:3])
        backend = ReportingDouble()
        calls = _listen(LLMFeedbackProvider(backend, ledger), QUERIES)
        assert calls[0] == (3, 3)  # answered from the ledger before anything is sent
        assert calls[1:] == [(1, 0)] * 5 and backend.answered == [1, 2, 3, 4, 5]
        # A backend without chat_reporting: the same answers, all counted when it returns.
        calls = _listen(LLMFeedbackProvider(WordOverlapTestDouble(), None), QUERIES)
        assert sum(done for done, _ in calls) == len(QUERIES)
    finally:
        ledger.close()


def test_a_question_asked_in_two_orders_is_done_when_both_are_in() -> None:
    backend = ReportingDouble()
    provider = LLMFeedbackProvider(backend, None, LLMOptions())
    twice = [Query(q.kind, q.payload, q.meta, AskingPolicy(orderings=2)) for q in QUERIES[:2]]
    calls = _listen(provider, twice)
    assert sum(done for done, _ in calls) == 2
    assert len(backend.requests) == 4  # two prompts per question, one report per question


# -- a smoke run reports its stages -----------------------------------------------------------


def test_smoke_glean_run_reports_its_stages(slices, tiny_bert, tmp_path: Path) -> None:  # noqa: F811
    spec = resolve_spec(
        "glean", SLICE, 0.5, 0, preset="smoke", encoder=str(tiny_bert), llm="oracle"
    )
    out = io.StringIO()
    reporter = ProgressReporter(Console(file=out, width=80), clock=FakeClock())
    outcome = execute(spec, RunOptions(tmp_path / "results", str(slices)), reporter)
    assert outcome.status == "done"
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    for stage in ("round 1/1", "round 1/1: mine", "round 1/1: ask", "round 1/1: train", "naming"):
        assert stage in lines, (stage, lines)
    asked = [line for line in lines if line.startswith("round 1/1: ask: ") and "took" in line]
    assert {line.split(": ")[2] for line in asked} == {
        "select-similar-instance",
        "characterize-cluster",
        "select-category",
    }
    assert all(re.search(r"(\d+)/\1 questions", line) for line in asked)  # every batch completes
    assert any(line.startswith("naming: characterize-cluster: 6/6 questions") for line in lines)
    assert not reporter.stages and not reporter.tasks
