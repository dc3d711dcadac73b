"""One run seen text by text: its ``predictions.csv``, whether each test text's gold class is
known or novel, the confusion matrix of its largest classes, and the features the run's
encoder gives its test texts before any training.

The record keeps no features, so a projection re-embeds the test texts with the run's
``--encoder`` through the harness's own cached path (:meth:`RunContext.embed`, the feature
cache under the cache folder, keyed by encoder fingerprint and data file): the *frozen*
encoder's features, which are what K-means-style methods cluster but not what a method that
fine-tunes its encoder ended with.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gcdbench.api.dataset import DatasetParts
from gcdbench.api.progress import Reporter
from gcdbench.api.record import ResultRecord
from gcdbench.api.task import TaskPart
from gcdbench.errors import GcdbenchError

__all__ = [
    "PROJECTIONS",
    "Confusion",
    "RunPredictions",
    "TestTexts",
    "frozen_features",
    "locate_test_texts",
    "project_2d",
    "read_predictions",
    "top_class_confusion",
]

PREDICTION_COLUMNS = ("test_row", "gold", "cluster", "matched_class")
PROJECTIONS = ("pca", "tsne")
#: Every random choice of a projection is seeded with this, so a figure is the same each time.
PROJECTION_SEED = 0


@dataclass(frozen=True)
class RunPredictions:
    """``predictions.csv`` of one run, with each text's novelty read off the record's split."""

    record: ResultRecord
    record_path: Path
    test_rows: np.ndarray  # row of each text in the test file
    gold: np.ndarray  # gold class name
    clusters: np.ndarray  # predicted cluster id
    matched: np.ndarray  # class the cluster was matched to by the runner ("" if none)
    known: np.ndarray  # the gold class is one of the split's known classes


def read_predictions(record: ResultRecord, record_path: Path) -> RunPredictions:
    path = record_path.parent / record.predictions_file
    fix = "re-run it with --force, or pick another run with --run"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in PREDICTION_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise GcdbenchError(f"{path} lacks the column(s) {', '.join(missing)}; {fix}.")
            rows = list(reader)
    except FileNotFoundError:
        raise GcdbenchError(f"{path} is missing; {fix}.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GcdbenchError(f"cannot read {path} ({exc}); {fix}.") from None
    if not rows:
        raise GcdbenchError(f"{path} has no rows; {fix}.")
    try:
        test_rows = np.array([int(r["test_row"]) for r in rows], dtype=np.int64)
        clusters = np.array([int(r["cluster"]) for r in rows], dtype=np.int64)
    except ValueError as exc:
        raise GcdbenchError(
            f"{path} has a non-integer test_row or cluster ({exc}); {fix}."
        ) from None
    gold = np.array([r["gold"] for r in rows], dtype=object)
    known_classes = [str(c) for c in record.split.get("known_classes", [])]
    return RunPredictions(
        record=record,
        record_path=record_path,
        test_rows=test_rows,
        gold=gold,
        clusters=clusters,
        matched=np.array([r["matched_class"] for r in rows], dtype=object),
        known=np.isin(gold.astype(str), known_classes),
    )


# --- the confusion matrix of the largest classes ---------------------------------------------


@dataclass(frozen=True)
class Confusion:
    """Texts of the largest gold classes (rows, largest first) by the class their cluster was
    matched to (columns: the same classes, then every other cluster, matched elsewhere or to
    no class)."""

    classes: list[str]
    novel: list[bool]
    sizes: list[int]  # test texts of each class
    counts: np.ndarray  # len(classes) x (len(classes) + 1)
    disagreements: int  # texts matched here to another class than predictions.csv says


def top_class_confusion(pred: RunPredictions, top: int = 20) -> Confusion:
    """The matching is gcdbench.metrics' Hungarian one over all test texts, the matching ACC
    is read from. Gold classes are numbered in sorted order, as the data readers number
    them, so ties in the matching fall the way they fell when the run was scored; the number
    of texts on which it still disagrees with ``predictions.csv`` is kept to be shown."""
    from gcdbench.metrics import hungarian_mapping  # scipy: loaded when a matrix is drawn

    names, gold_ids = np.unique(pred.gold.astype(str), return_inverse=True)
    mapping = hungarian_mapping(gold_ids, pred.clusters)
    matched_ids = np.array([mapping.get(int(c), -1) for c in pred.clusters], dtype=np.int64)
    matched_names = np.array(
        [names[m] if m >= 0 else "" for m in matched_ids.tolist()], dtype=object
    )
    disagreements = int((matched_names != pred.matched.astype(str)).sum())
    sizes = np.bincount(gold_ids, minlength=len(names))
    # Largest first; equal sizes in name order, so the figure never depends on read order.
    chosen = sorted(range(len(names)), key=lambda i: (-int(sizes[i]), str(names[i])))[:top]
    position = {cls: i for i, cls in enumerate(chosen)}
    counts = np.zeros((len(chosen), len(chosen) + 1), dtype=np.int64)
    for gold_id, matched_id in zip(gold_ids.tolist(), matched_ids.tolist(), strict=True):
        row = position.get(gold_id)
        if row is not None:
            counts[row, position.get(matched_id, len(chosen))] += 1
    known_by_class = dict(zip(pred.gold.astype(str).tolist(), pred.known.tolist(), strict=True))
    return Confusion(
        classes=[str(names[i]) for i in chosen],
        novel=[not known_by_class[str(names[i])] for i in chosen],
        sizes=[int(sizes[i]) for i in chosen],
        counts=counts,
        disagreements=disagreements,
    )


# --- the frozen encoder's features of the test texts -----------------------------------------


@dataclass(frozen=True)
class TestTexts:
    """The run's test texts read back from its data, with what embedding them needs."""

    record: ResultRecord
    parts: DatasetParts
    part: TaskPart  # in predictions.csv order


def locate_test_texts(
    record: ResultRecord, pred: RunPredictions, data_dir: str | None
) -> TestTexts:
    """Find the run's data (``--data-dir``, ``GCDBENCH_DATA`` or the download cache; never
    downloads) and its test texts, checking the file is the one the run read. Also checks
    that the run's encoder can be loaded here; embeds nothing."""
    from gcdbench import registry
    from gcdbench.data.store import locate_dataset
    from gcdbench.encoders import check_encoder

    spec = record.spec
    run = record.run_id[:10]
    if not spec.encoder:
        raise GcdbenchError(
            f"run {run} ({spec.label}) used no encoder, so it has no features to project; "
            "pick another run with --run."
        )
    check_encoder(spec.encoder)
    definition = registry.get("dataset", spec.dataset)
    folder, _ = locate_dataset(definition, data_dir, download=False)
    parts = definition.load(folder)
    test_file = parts.test.file
    recorded = {f.get("name"): f.get("sha256") for f in record.data.get("files", [])}
    if recorded.get(test_file.name) not in (None, test_file.sha256):
        raise GcdbenchError(
            f"{test_file.path} is not the file run {run} read (sha256 {test_file.sha256[:12]}, "
            f"recorded {str(recorded[test_file.name])[:12]}); pass --data-dir with the data "
            "the run used, or re-run it."
        )
    text_of = dict(zip(parts.test.rows.tolist(), parts.test.texts, strict=True))
    try:
        texts = [text_of[row] for row in pred.test_rows.tolist()]
    except KeyError as exc:
        raise GcdbenchError(
            f"predictions.csv of run {run} names test row {exc.args[0]}, which {test_file.path} "
            "lacks; pass --data-dir with the data the run used, or re-run it."
        ) from None
    return TestTexts(record, parts, TaskPart(texts, test_file, pred.test_rows.copy()))


def frozen_features(test: TestTexts, reporter: Reporter | None = None) -> np.ndarray:
    """The run's encoder's features of its test texts, in predictions.csv order, through the
    harness's feature cache: a run that embedded this file left them there, so this costs a
    read; otherwise they are computed once and cached exactly as a run would cache them."""
    from gcdbench.runner.context import build_context

    # The runner's own map of data file -> texts by row: the feature cache holds whole
    # files, so an entry made here must equal the one a run would make.
    from gcdbench.runner.run import file_texts

    with tempfile.TemporaryDirectory(prefix="gcdbench-report-") as work:
        ctx = build_context(
            test.record.spec,
            file_texts(test.parts),
            Path(work),
            uses=("encoder",),
            reporter=reporter,
        )
        return np.asarray(ctx.embed(test.part), dtype=np.float64)


def project_2d(features: np.ndarray, how: str) -> np.ndarray:
    """Two coordinates per text: PCA, or t-SNE started from PCA; both seeded, so the same
    features always give the same picture."""
    if how not in PROJECTIONS:
        raise GcdbenchError(f"unknown projection {how!r}; use one of {', '.join(PROJECTIONS)}.")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3 or x.shape[1] < 2:
        raise GcdbenchError(
            f"{x.shape[0]} test texts with {x.shape[1] if x.ndim == 2 else 0} features are too "
            "few to project; pick a run on a larger test set with --run."
        )
    if how == "pca":
        from sklearn.decomposition import PCA

        return np.asarray(PCA(n_components=2, random_state=PROJECTION_SEED).fit_transform(x))
    from sklearn.manifold import TSNE

    # Perplexity must stay below the number of points; 30 is sklearn's default.
    perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=PROJECTION_SEED)
    return np.asarray(tsne.fit_transform(x))
