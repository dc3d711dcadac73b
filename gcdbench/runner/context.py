"""RunContext: what a method gets besides its task — seeded generators, features, progress."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gcdbench.api.encoder import Encoder
from gcdbench.api.feedback import FeedbackProvider
from gcdbench.api.progress import AnswerSink, Reporter, answers_reported_to, report_answers
from gcdbench.api.spec import RunSpec
from gcdbench.api.task import TaskPart
from gcdbench.encoders.cache import FeatureCache
from gcdbench.util.random import keyed_generator


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


# Re-exported: plugins written against ``gcdbench.runner.context`` keep working.
__all__ = ["AnswerSink", "Reporter", "RunContext", "answers_reported_to", "report_answers"]
