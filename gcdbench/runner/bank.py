"""Building a dataset's feedback bank (gcdbench/feedback/bank.py) the way GLEAN mines its
first round: data → split → the run's encoder, MTP-pre-trained (the shared pre-training
cache: a GLEAN or no-llm run on the same split has already paid for it) → K-means with the
true K, the DEC target p and its entropy → the ``size`` most uncertain pool texts as anchors
→ one random member of each of an anchor's top ``options`` clusters (similar instance) and
its top ⌊category_ratio·K⌋ clusters (category), with GLEAN's cpu-preset values.

Only this module reads gold labels while building: each question's right options (the
kind's own rule, gcdbench/api/query_kind.py) are stored with it.

A second, *calibration* bank is mined from the same state for fusing a provider's answers
with the encoder's (gcdbench/training/fusion.py): its anchors are labeled known-class texts
and its options too (instance) or clusters judged by their labeled members (category), so
whether an answer is right is known from the labels a method holds — no gold label of an
unlabeled text is read to build it. Banks are cached under
``<cache>/banks/`` keyed by everything that shapes them, and a build is deterministic (one
generator per stage from the seed), so the cache only saves time.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gcdbench import paths, registry
from gcdbench.api.feedback import Query
from gcdbench.api.method import params_dict
from gcdbench.api.query_kind import GoldView
from gcdbench.api.spec import DEFAULT_ENCODER, RunSpec, canonical_json
from gcdbench.api.task import GCDTask, Gold
from gcdbench.data.checks import check_dataset, stop_on_errors
from gcdbench.data.split import build_task, check_known_classes, check_ratio, make_split
from gcdbench.data.store import locate_dataset
from gcdbench.encoders import check_encoder
from gcdbench.engine import ENGINE_VERSION
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.bank import BANK_FORMAT, CATEGORY, INSTANCE, Bank, BankQuestion
from gcdbench.feedback.kinds import get_kind
from gcdbench.runner.context import Reporter, build_context
from gcdbench.runner.run import download_reporter


@dataclass(frozen=True)
class BankBuild:
    """A bank, its calibration bank (mined only when asked for) and the split's gold."""

    bank: Bank
    gold: Gold
    calibration: Bank | None = None


@dataclass(frozen=True)
class BankParams:
    """How questions are mined: GLEAN's cpu-preset values (docs/methods/glean.md)."""

    size: int = 100  # anchors, the most uncertain pool texts; each asked once per kind
    options: int = 5  # similar-instance candidates, one per top cluster
    category_ratio: float = 0.1  # offer the top floor(ratio*K) clusters
    demos_per_class: int = 5  # known-class dev examples shown with an instance question
    category_demos_per_class: int = 2  # ... with a category question
    representatives: int = 10  # texts per cluster a description is written from
    miner: str = "entropy"
    #: the pre-training preset: "cpu" (GLEAN's default run) or "smoke" (tests)
    preset: str = "cpu"

    @classmethod
    def for_preset(cls, preset: str, size: int) -> BankParams:
        """GLEAN's values for ``preset`` (its smoke preset asks smaller questions)."""
        if preset == "smoke":
            return cls(
                size=size,
                options=3,
                category_ratio=0.5,
                demos_per_class=1,
                category_demos_per_class=1,
                representatives=3,
                preset="smoke",
            )
        return cls(size=size, preset=preset)

    def check(self, num_classes: int) -> None:
        if self.size < 1:
            raise GcdbenchError(f"--size must be at least 1, got {self.size}.")
        if self.preset not in ("cpu", "smoke"):
            raise GcdbenchError(f"--preset {self.preset!r} is not cpu or smoke.")
        if not 1 <= self.options <= num_classes:
            raise GcdbenchError(
                f"--options {self.options} must be within 1..K = {num_classes}; lower it."
            )


def build_bank(
    dataset: str,
    known_ratio: float,
    seed: int,
    *,
    labeled_ratio: float = 0.1,
    encoder: str | None = None,
    params: BankParams | None = None,
    data_dir: str | None = None,
    download: bool = True,
    reporter: Reporter | None = None,
    calibration: bool = False,
) -> BankBuild:
    """The bank for (dataset, split, encoder, params), from the cache or built now, with the
    split's gold labels (for an oracle under test; the bank already holds each answer) and,
    when ``calibration`` is set, the calibration bank."""
    reporter = reporter or Reporter()
    params = params or BankParams()
    encoder = encoder or DEFAULT_ENCODER
    definition = registry.get("dataset", dataset)
    check_ratio("--known-ratio", known_ratio)
    check_ratio("--labeled-ratio", labeled_ratio)
    check_known_classes(definition.num_classes, known_ratio)
    params.check(definition.num_classes)
    check_encoder(encoder)
    registry.get("miner", params.miner)
    folder, _ = locate_dataset(
        definition, data_dir, download=download, on_progress=download_reporter(reporter)
    )
    parts = definition.load(folder)
    split = make_split(parts, known_ratio=known_ratio, labeled_ratio=labeled_ratio, seed=seed)
    stop_on_errors(check_dataset(parts, definition, split=split))
    source = {
        "format": BANK_FORMAT,
        "engine_version": ENGINE_VERSION,
        "dataset": dataset,
        "known_ratio": known_ratio,
        "labeled_ratio": labeled_ratio,
        "seed": seed,
        "split_hash": split.hash,
        "data_files": {f.name: f.sha256 for f in parts.files},
        "encoder": encoder,
        "params": asdict(params),
        "state": "mtp-pretrained (GLEAN's first round)",
    }
    path = bank_path(source)
    calibration_path = bank_path(calibration_source(source))
    task, gold = build_task(parts, split, task_word=definition.task)
    if path.is_file() and (not calibration or calibration_path.is_file()):
        bank = Bank.load(path)
        reporter.message(f"feedback bank {bank.bank_id[:12]} from the cache ({path})")
        extra = Bank.load(calibration_path) if calibration else None
        return BankBuild(bank, gold, extra)
    with reporter.stage("build bank"):
        bank, extra = _mine(task, gold, source, params, encoder, reporter)
    bank.save(path)
    extra.save(calibration_path)
    reporter.message(f"feedback bank {bank.bank_id[:12]} built and saved ({path})")
    return BankBuild(bank, gold, extra if calibration else None)


def calibration_source(source: dict[str, Any]) -> dict[str, Any]:
    return {**source, "anchors": "labeled known-class texts (calibration)"}


def bank_path(source: dict[str, Any]) -> Path:
    key = hashlib.sha256(canonical_json(source).encode("utf-8")).hexdigest()
    return paths.cache_dir() / "banks" / f"{source['dataset']}-{key[:16]}.json"


def _mine(
    task: GCDTask,
    gold: Gold,
    source: dict[str, Any],
    params: BankParams,
    encoder: str,
    reporter: Reporter,
) -> tuple[Bank, Bank]:
    # The engine (torch, scikit-learn) loads here, not when the CLI imports this module.
    from gcdbench.api import training
    from gcdbench.training.params import RoundParams, presets_for, resolve_topk
    from gcdbench.training.pipeline import prepare_training
    from gcdbench.training.seeding import isolated_torch_rng

    round_params = RoundParams(**presets_for(RoundParams)[params.preset])
    spec = RunSpec(
        method="feedback-bank",
        dataset=task.dataset,
        known_ratio=float(source["known_ratio"]),
        seed=int(source["seed"]),
        labeled_ratio=float(source["labeled_ratio"]),
        encoder=encoder,
        params=params_dict(round_params),
    )
    ctx = build_context(spec, {}, Path("."), uses=("encoder",), reporter=reporter)
    # The same stages as a training run's, so pre-training is the cached one GLEAN shares.
    with isolated_torch_rng(ctx.rng("torch")):
        setup = prepare_training(task, ctx, round_params, "feedback-bank")
    with reporter.stage("mine"):
        features = setup.mode.extract()
        if round_params.normalize:
            features = training.l2_normalise(features)
        k = resolve_topk(round_params.k, task.dataset, len(task.train))
        state = training.cluster_state(
            features,
            task.num_classes,
            k,
            spec.seed,
            round_params.variant,
            kmeans_n_init=round_params.round_kmeans_n_init,
            num_labeled=task.num_labeled,
        )
    rng = ctx.rng("feedback-bank")
    miner = registry.get("miner", params.miner)
    anchors = np.asarray(miner.select(state, min(params.size, state.size), rng), dtype=np.int64)
    view = GoldView(gold)
    members = training.cluster_members(state.assignments, task.num_classes)

    instance = training.instance_candidates(state, anchors, params.options, rng)
    instance_scores = _cosines(features[anchors], features[instance])
    category = training.category_candidates(state, anchors, params.category_ratio)
    centers = np.asarray(state.centers)
    category_scores = _cosines(features[anchors], centers[category])

    def question(kind: str, anchor: int, row: np.ndarray, scores: np.ndarray) -> BankQuestion:
        if kind == INSTANCE:
            meta: dict[str, Any] = {"anchor": anchor, "options": row.tolist()}
        else:
            meta = {"anchor": anchor, "option_members": [members[c].tolist() for c in row]}
        probe = Query(kind, {"query": "", "options": [""] * len(row)}, meta)
        correct = get_kind(kind).correct_options(probe, view)  # type: ignore[attr-defined]
        return _question(anchor, row.tolist(), list(correct), scores)

    questions = {
        INSTANCE: tuple(
            question(INSTANCE, int(a), row, s)
            for a, row, s in zip(anchors, instance, instance_scores, strict=True)
        ),
        CATEGORY: tuple(
            question(CATEGORY, int(a), row, s)
            for a, row, s in zip(anchors, category, category_scores, strict=True)
        ),
    }
    reps = training.representatives(state, params.representatives)
    shared: dict[str, Any] = {
        "texts": tuple(task.train.texts),
        "task": task.task_word,
        "known_names": tuple(task.known_class_names),
        "demonstrations": {
            INSTANCE: tuple(training.known_class_demonstrations(task, params.demos_per_class)),
            CATEGORY: tuple(
                training.known_class_demonstrations(task, params.category_demos_per_class)
            ),
        },
        "members": tuple(tuple(int(i) for i in m) for m in members),
        "representatives": tuple(tuple(int(i) for i in r) for r in reps),
    }
    calibration = _calibration(task, state, features, params, ctx.rng("calibration"))
    return (
        Bank(source=source, questions=questions, **shared),
        Bank(source=calibration_source(source), questions=calibration, **shared),
    )


def _calibration(
    task: GCDTask,
    state: Any,
    features: np.ndarray,
    params: BankParams,
    rng: np.random.Generator,
) -> dict[str, tuple[BankQuestion, ...]]:
    """The calibration questions GLEAN's fusion asks (gcdbench/training/calibration.py), with
    the encoder's similarities of each option."""
    from gcdbench.training.calibration import calibration_questions

    asked = calibration_questions(
        state,
        np.asarray(task.labeled_y),
        params.size,
        params.options,
        params.category_ratio,
        rng,
    )
    centers = np.asarray(state.centers)

    def banked(q: Any, option_vectors: np.ndarray) -> BankQuestion:
        scores = _cosines(features[[q.anchor]], option_vectors[np.asarray(q.options)][None])[0]
        return _question(q.anchor, list(q.options), list(q.correct), scores)

    return {
        INSTANCE: tuple(banked(q, features) for q in asked.instance),
        CATEGORY: tuple(banked(q, centers) for q in asked.category),
    }


def _question(
    anchor: int, options: list[int], correct: list[int], scores: np.ndarray
) -> BankQuestion:
    return BankQuestion(
        anchor,
        tuple(int(o) for o in options),
        tuple(int(c) for c in correct),
        int(np.argmax(scores)),
        tuple(float(s) for s in scores),
    )


def _cosines(anchors: np.ndarray, options: np.ndarray) -> np.ndarray:
    """[n, m] cosine similarity of each anchor ([n, d]) with its options ([n, m, d]): the
    encoder's own answer is the argmax, as GLEAN's ``encoder_choice`` and ``cluster_choice``."""
    a = anchors / np.maximum(np.linalg.norm(anchors, axis=1, keepdims=True), 1e-12)
    o = options / np.maximum(np.linalg.norm(options, axis=2, keepdims=True), 1e-12)
    return np.einsum("nd,nmd->nm", a, o)


__all__ = ["BankParams", "bank_path", "build_bank"]
