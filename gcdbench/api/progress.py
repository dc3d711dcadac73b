"""Progress reporting: what a run says it is doing, and how the engine reports it.

It lives in the public API because the engine (training, feedback) and plugins report
progress, while the runner and the CLI decide how to show it; nothing here imports either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: ``advance(done, hits)``: ``done`` more questions answered, ``hits`` of them from the ledger.
AnswerSink = Callable[[int, int], None]


class Reporter:
    """Progress and messages; the CLI passes a rich-backed one
    (:func:`gcdbench.cli.progress.make_reporter`), executors this quiet one.

    Three kinds of progress, all optional to display: :meth:`stage` names what the run is
    doing (stages nest: ``round 1/2`` then ``ask`` reads "round 1/2: ask"), :meth:`task`
    counts units of work (encoding batches, epochs, steps) and :meth:`questions` counts
    questions answered and how many came from the feedback ledger. A reporter that only
    overrides :meth:`task` still shows questions, as a task.
    """

    def message(self, text: str) -> None:
        pass

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        yield lambda advance: None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield

    @contextmanager
    def questions(self, description: str, total: int) -> Iterator[AnswerSink]:
        with self.task(description, total) as advance:

            def answered(done: int, hits: int = 0) -> None:
                advance(done)

            yield answered


# Feedback providers sit below the run context (they are built by factories, with no
# reporter), so answers are reported through a context variable that the asker sets around
# each batch: providers call :func:`report_answers` and need no reference to any reporter.
_ANSWER_SINK: ContextVar[AnswerSink | None] = ContextVar("gcdbench_answer_sink", default=None)


def report_answers(done: int, hits: int = 0) -> None:
    """A provider's progress: ``done`` more questions of the current batch answered,
    ``hits`` of them wholly from the ledger. A no-op when nobody listens."""
    sink = _ANSWER_SINK.get()
    if sink is not None and (done or hits):
        sink(done, hits)


@contextmanager
def answers_reported_to(sink: AnswerSink) -> Iterator[None]:
    """Send :func:`report_answers` calls made inside the block to ``sink``."""
    token = _ANSWER_SINK.set(sink)
    try:
        yield
    finally:
        _ANSWER_SINK.reset(token)


@contextmanager
def tally_questions(reporter: Reporter, kind: str, total: int) -> Iterator[None]:
    """Count a batch of ``total`` questions on ``reporter`` as the provider reports them
    answered; what the provider did not report (oracles answer at once, silently) is
    counted at the end, so every batch ends complete."""
    if not total:
        yield
        return
    with reporter.questions(kind, total) as advance:
        reported = 0

        def sink(done: int, hits: int) -> None:
            nonlocal reported
            done = min(done, total - reported)
            reported += done
            advance(done, hits)

        with answers_reported_to(sink):
            yield
        if reported < total:
            advance(total - reported, 0)
