"""RunContext: what a method gets besides its task — seeded generators, the run's encoder
(frozen features or a trainable backbone), feedback, progress — and :func:`build_context`,
the one place a context is put together (the runner and the conformance checks both call
it)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api.encoder import Encoder
from gcdbench.api.feedback import FeedbackEnv, FeedbackProvider
from gcdbench.api.progress import AnswerSink, Reporter, answers_reported_to, report_answers
from gcdbench.api.spec import RunSpec
from gcdbench.api.task import TaskPart
from gcdbench.encoders.cache import FeatureCache
from gcdbench.errors import GcdbenchError
from gcdbench.runner.store import CHECKPOINTS
from gcdbench.util.random import keyed_generator

if TYPE_CHECKING:  # torch loads only when a method asks for a backbone
    from gcdbench.training.backbone import TextBackbone


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
    # Gold class ids by part, for released-code reproductions that read them (marks the run).
    gold_labels: Callable[[str], np.ndarray] | None = None
    leaked: list[str] = field(default_factory=list)
    # Every backbone handed out by load_backbone: what the record says was fine-tuned.
    backbones: list[dict[str, Any]] = field(default_factory=list)
    # Training checkpoints of this run (docs/resume.md); None: the run keeps none.
    checkpoint_dir: Path | None = None
    # Where the run continued from a checkpoint: the record's provenance.resumed.
    resumed: list[dict[str, Any]] = field(default_factory=list)
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

    def load_backbone(self, *, pooling: str, with_mlm_head: bool, max_length: int) -> TextBackbone:
        """The run's ``--encoder`` as a trainable backbone: the model that value names (a
        packaged alias, a local folder or a hub id; ``sentence-transformers:REF`` trains REF),
        freshly loaded on every call so a method may train it. A bag of words has no weights:
        one clear error. The record lists every backbone loaded under ``encoder``."""
        from gcdbench.encoders.trainable import load_backbone

        # The spec's value where there is one (the runner); a conformance check may hand over
        # an encoder object instead, whose model files are then the ones trained.
        encoder: str | Encoder = self.spec.encoder or self.encoder
        backbone = load_backbone(
            encoder,
            self.spec.method,
            pooling=pooling,
            with_mlm_head=with_mlm_head,
            max_length=max_length,
        )
        self.backbones.append(
            {
                **backbone.source,
                "with_mlm_head": with_mlm_head,
                "fingerprint": backbone.fingerprint,
                "deviations": list(backbone.deviations),
            }
        )
        return backbone

    def describe_encoder(self) -> dict[str, Any] | None:
        """The record's ``encoder``: name and weight fingerprint of the run's encoder (the
        ones the run identity hashes) whenever the run has one, used for features or not,
        plus every backbone a method loaded from it to fine-tune."""
        if not self.encoder_loaded and not self.spec.encoder and not self.backbones:
            return None
        out = dict(self.encoder.describe())
        if self.backbones:
            out["fine_tuned"] = [dict(b) for b in self.backbones]
        return out

    @property
    def feedback(self) -> FeedbackProvider:
        """The run's feedback provider (methods that list "feedback" in ``uses``)."""
        if self._feedback is None:
            if self.feedback_factory is None:
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
            raise GcdbenchError(f"{why} needs novel-class dev examples, which this run lacks.")
        self.leaked.append(why)
        return self.novel_dev_examples(per_class)

    def leak_gold_labels(self, part: str, why: str) -> np.ndarray:
        """Gold class ids of every text of ``part`` (``train`` pool or ``test``); the run is
        marked as leaking labels (``leaks_labels``)."""
        if self.gold_labels is None:
            raise GcdbenchError(f"{why} needs gold labels, which this run does not hold.")
        if part not in ("train", "test"):
            raise GcdbenchError(f"leak_gold_labels: part must be 'train' or 'test', got {part!r}.")
        self.leaked.append(why)
        return np.asarray(self.gold_labels(part)).copy()

    @property
    def feedback_loaded(self) -> bool:
        return self._feedback is not None

    def note_resumed(self, where: Mapping[str, Any]) -> None:
        self.resumed.append(dict(where))

    def discard_checkpoints(self) -> None:
        """Remove the run's checkpoints once its record is written: nothing is left to
        resume, and a later ``--force`` starts over."""
        if self.checkpoint_dir is not None:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

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
        if self.resumed:
            out["resumed"] = [dict(r) for r in self.resumed]
        return out


def build_context(
    spec: RunSpec,
    file_texts: Mapping[str, list[str]],
    work_dir: Path,
    *,
    uses: Collection[str],
    encoder: Encoder | None = None,
    feedback_env: FeedbackEnv | None = None,
    reporter: Reporter | None = None,
    features: FeatureCache | None = None,
    novel_dev_examples: Callable[[int], list[tuple[str, str]]] | None = None,
    gold_labels: Callable[[str], np.ndarray] | None = None,
    checkpoint_dir: Path | None = None,
) -> RunContext:
    """The context of one run of ``spec`` by a method that declares ``uses``.

    The encoder is the one ``spec.encoder`` names (checked now, built on first use), or
    ``encoder`` when given (an object, for checks that need no model); a method that
    declares no encoder gets none. Feedback comes from ``spec.llm`` through
    ``feedback_env`` when the method asks for it. Training methods checkpoint into
    ``checkpoint_dir`` (:func:`checkpoint_folder`) when given.
    """
    from gcdbench.encoders import encoder_factory

    encoder_source: Callable[[], Encoder]
    if encoder is not None:
        encoder_source = partial(_given, encoder)
    elif spec.encoder and "encoder" in uses:
        encoder_source = encoder_factory(spec.encoder)
    else:
        encoder_source = _no_encoder
    feedback_factory = None
    if "feedback" in uses and spec.llm and feedback_env is not None:
        from gcdbench.feedback.resolve import open_feedback

        feedback_factory = partial(open_feedback, spec.llm, feedback_env)
    return RunContext(
        spec=spec,
        file_texts=file_texts,
        encoder_factory=encoder_source,
        work_dir=work_dir,
        reporter=Reporter() if reporter is None else reporter,
        features=FeatureCache() if features is None else features,
        feedback_factory=feedback_factory,
        novel_dev_examples=novel_dev_examples,
        gold_labels=gold_labels,
        checkpoint_dir=checkpoint_dir,
    )


def checkpoint_folder(results_root: Path, run_id: str, *, fresh: bool = False) -> Path:
    """``<results>/.checkpoints/<run id[:16]>/``: where a run's training checkpoints live,
    named by its run id so a changed spec, data or engine never resumes another run's. Not
    the scratch folder, which the store empties on every open. ``fresh`` (``--force``)
    drops what a previous attempt left. Created when the first checkpoint is written; call
    holding the run's lock."""
    folder = results_root / CHECKPOINTS / run_id[:16]
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def _given(encoder: Encoder) -> Encoder:
    return encoder


def _no_encoder() -> Encoder:
    raise GcdbenchError("this method declares no encoder in `uses`; add 'encoder' to use one.")


# Re-exported: plugins written against ``gcdbench.runner.context`` keep working.
__all__ = [
    "AnswerSink",
    "Reporter",
    "RunContext",
    "answers_reported_to",
    "build_context",
    "checkpoint_folder",
    "report_answers",
]
