"""GCD evaluation metrics: Hungarian-matched accuracy, ARI, NMI, and the known/novel split.

The protocol follows GLEAN/Loop: one Hungarian matching between predicted clusters and true
classes over the whole test set, and Known/Novel accuracy read off that *same* global
matching (never a separate matching per subset, which would inflate both). All values
returned by :func:`evaluate` are percentages (0-100), unrounded; rounding is for display.

Labels are any integers, not necessarily contiguous; a noise label such as -1 is treated as
one more cluster, since GCD methods here are expected to assign every sample.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = ["cluster_acc", "evaluate", "hungarian_mapping"]


def _labels(name: str, values: npt.ArrayLike, *, allow_empty: bool = False) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty; there is nothing to evaluate")
    # Floats are refused rather than truncated: a float label usually means a NaN or a
    # column read with the wrong dtype upstream, and silently casting would hide that.
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer labels, got dtype {arr.dtype}; cast with .astype(int)"
        )
    return arr.astype(np.int64, copy=False)


def _pair(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    true = _labels("y_true", y_true)
    pred = _labels("y_pred", y_pred)
    if true.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {true.size} and {pred.size}"
        )
    return true, pred


def _matching(true: np.ndarray, pred: np.ndarray) -> tuple[dict[int, int], np.ndarray]:
    """Maximum-weight matching on the cluster x class contingency table.

    Returns the cluster -> class mapping and a per-sample mask of the samples it gets right.
    The table may be rectangular: surplus clusters (or classes) stay unmatched, and their
    samples count as wrong.
    """
    classes, true_idx = np.unique(true, return_inverse=True)
    clusters, pred_idx = np.unique(pred, return_inverse=True)
    counts = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(counts, (pred_idx, true_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols, strict=True)}
    # Work in index space so that unmatched clusters get -1, which no class index equals,
    # whatever the label values are.
    class_of_cluster = np.full(clusters.size, -1, dtype=np.int64)
    class_of_cluster[rows] = cols
    return mapping, class_of_cluster[pred_idx] == true_idx


def hungarian_mapping(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[int, int]:
    """Cluster id -> class id under the matching that maximises correct samples.

    Clusters left unmatched (when there are more clusters than classes) are absent from
    the mapping; their samples are wrong under every accuracy computed here.
    """
    true, pred = _pair(y_true, y_pred)
    return _matching(true, pred)[0]


def cluster_acc(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Clustering accuracy in [0, 1]: share of samples right under the best one-to-one
    matching of clusters to classes (Hungarian), over all classes."""
    true, pred = _pair(y_true, y_pred)
    return float(_matching(true, pred)[1].mean())


def _harmonic(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == 0 or b == 0:
        return 0.0
    return 2 * a * b / (a + b)


def evaluate(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, known_classes: npt.ArrayLike
) -> dict[str, float]:
    """All GCD metrics for one test set, as percentages (0-100), unrounded.

    Keys: ``acc`` (Hungarian accuracy over all classes), ``ari``, ``nmi`` (sklearn, NMI with
    arithmetic normalisation), ``known_acc`` / ``novel_acc`` (accuracy on the samples whose
    true class is / is not in ``known_classes``, under the single global matching) and
    ``h_score`` (their harmonic mean; 0 when either is 0).

    When the test set has no known-class samples, ``known_acc`` is NaN (likewise
    ``novel_acc`` with no novel-class samples), and ``h_score`` is then NaN too: an
    undefined value is reported as undefined rather than as a misleading 0 or 100.
    """
    true, pred = _pair(y_true, y_pred)
    known = _labels("known_classes", known_classes, allow_empty=True)

    correct = _matching(true, pred)[1]
    is_known = np.isin(true, known)

    def subset_acc(mask: np.ndarray) -> float:
        return float(correct[mask].mean()) * 100 if mask.any() else math.nan

    known_acc = subset_acc(is_known)
    novel_acc = subset_acc(~is_known)
    return {
        "acc": float(correct.mean()) * 100,
        "ari": float(adjusted_rand_score(true, pred)) * 100,
        "nmi": float(normalized_mutual_info_score(true, pred)) * 100,
        "known_acc": known_acc,
        "novel_acc": novel_acc,
        "h_score": _harmonic(known_acc, novel_acc),
    }
