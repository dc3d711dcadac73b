"""RunContext: what a method gets besides its task — seeded generators, features, progress."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gcdbench.api.encoder import Encoder
from gcdbench.api.feedback import FeedbackProvider
from gcdbench.api.spec import RunSpec
from gcdbench.api.task import TaskPart
from gcdbench.encoders.cache import FeatureCache
from gcdbench.util.random import keyed_generator

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
            yield lambda done, hits=0: advance(done)


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


@dataclass
class RunContext:
    """Per-run services. Randomness comes only from :meth:`rng`: every stage draws from its
    own generator derived from the run seed and the stage name, so adding a stage or
    reordering calls never changes another stage's draws."""

    spec: RunSpec
    file_texts: Mapping[str, list[str]]  # data file sha256 -> every text of that file by row
    encoder_factory: Callable[[], Encoder]
    work_dir: Path
    reporter: Reporter = field(default_factory=Reporter)
    features: FeatureCache = field(default_factory=FeatureCache)
    timings: dict[str, float] = field(default_factory=dict)
    # Built on first use from the spec's --llm; the oracle gets gold labels from the runner.
    feedback_factory: Callable[[], FeedbackProvider] | None = None
    # Gold-labelled dev examples of the *novel* classes: only the explicitly leaky options
    # read them (GLEAN's official category demonstrations), and reading marks the run.
    novel_dev_examples: Callable[[int], list[tuple[str, str]]] | None = None
    leaked: list[str] = field(default_factory=list)
    _encoder: Encoder | None = None
    _feedback: FeedbackProvider | None = None

    @property
    def seed(self) -> int:
        return self.spec.seed

    def rng(self, stage: str) -> np.random.Generator:
        return keyed_generator(self.seed, stage)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = self.encoder_factory()
        return self._encoder

    @property
    def encoder_loaded(self) -> bool:
        return self._encoder is not None

    @property
    def feedback(self) -> FeedbackProvider:
        """The run's feedback provider (methods that list "feedback" in ``uses``)."""
        if self._feedback is None:
            if self.feedback_factory is None:
                from gcdbench.errors import GcdbenchError

                raise GcdbenchError(
                    "this method declares no feedback in `uses`; add 'feedback' to ask any."
                )
            self._feedback = self.feedback_factory()
        return self._feedback

    def leak_novel_examples(self, per_class: int, why: str) -> list[tuple[str, str]]:
        """``per_class`` (text, gold class name) pairs from the dev split of every novel
        class. This hands the method gold labels of novel classes: the run record says so
        (``leaks_labels``), and leaderboards mark the run."""
        if self.novel_dev_examples is None:
            from gcdbench.errors import GcdbenchError

            raise GcdbenchError(f"{why} needs novel-class dev examples, which this run lacks.")
        self.leaked.append(why)
        return self.novel_dev_examples(per_class)

    @property
    def feedback_loaded(self) -> bool:
        return self._feedback is not None

    def embed(self, part: TaskPart, encoder: Encoder | None = None) -> np.ndarray:
        """Features of ``part``'s rows, computed once per (encoder, data file) and cached."""
        encoder = encoder or self.encoder
        file_sha = part.file.sha256
        texts = self.file_texts[file_sha]

        def compute() -> np.ndarray:
            with self.reporter.task(f"encoding {part.file.name}", total=len(texts)) as advance:
                return encoder.encode(texts, on_progress=advance)

        with self.timed("embed"):
            features = self.features.get_or_compute(encoder.fingerprint, file_sha, compute)
        return features[part.rows]

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "feature_cache": {"hits": self.features.hits, "misses": self.features.misses}
        }
        if self.leaked:
            out["leaks_labels"] = list(self.leaked)
        return out
