"""Ambiguous-data mining for a round (§4): soft assignments, entropy, kNN, local
inconsistency, and the candidate rankings GLEAN and Loop build their queries from.

Everything here is O(N·K) or O(N·k) in memory: the official code broadcasts an N×K×d
difference tensor for the distances (8.3 GB for CLINC at d = 768); the squared distances come
from ‖z‖² + ‖μ‖² − 2zμᵀ instead (``benchmarks/round_memory.py`` measures both).

``variant="paper"`` is the method as described; ``variant="official"`` reproduces the
released code's quirks (§11.13): the Student-t exponent, the entropy of softmax(p), inner-
product neighbours on unnormalised features, and dropping the first kNN hit as "self".
Arrays in and out are NumPy; torch tensors on the CPU are accepted too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import softmax
from scipy.stats import entropy as shannon_entropy
from sklearn.cluster import KMeans
from sklearn.metrics.pairwise import euclidean_distances

from gcdbench.api.miner import ClusterState
from gcdbench.api.toolkit import l2_normalise
from gcdbench.errors import GcdbenchError
from gcdbench.training.params import VARIANTS

METRICS = ("cosine", "inner")


def _array(values: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise GcdbenchError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}.")


def squared_distances(features: Any, centers: Any) -> np.ndarray:
    """[N, K] squared Euclidean distances, via ‖z‖² + ‖μ‖² − 2zμᵀ, clipped at 0.

    scikit-learn's ``euclidean_distances`` does exactly this, upcasting float32 inputs to
    float64 block by block so the cancellation error stays small; memory is O(N·K).
    """
    return euclidean_distances(_array(features), _array(centers), squared=True)


def student_t(
    features: Any, centers: Any, alpha: float = 1.0, variant: str = "paper"
) -> np.ndarray:
    """Student's-t soft assignment q [N, K] (DEC), rows summing to 1.

    paper: q_ij ∝ (1 + d²_ij/α)^(−(α+1)/2). official: the reference code computes
    1/(1 + d²/α), raises it to the power α + 1 (operator precedence turned the intended
    (α+1)/2 into α + 1 — a square at α = 1) and halves it; the halving cancels in the
    normalisation. Computed in log space, so far-away centres cannot underflow a row to 0/0.
    """
    _check_choice("mining variant", variant, VARIANTS)
    if alpha <= 0:
        raise GcdbenchError(f"student_t: alpha must be positive, got {alpha}; the default is 1.")
    exponent = (alpha + 1.0) / 2.0 if variant == "paper" else alpha + 1.0
    log_kernel = -exponent * np.log1p(
        squared_distances(features, centers).astype(np.float64) / alpha
    )
    return softmax(log_kernel, axis=1)


def dec_target(q: Any) -> np.ndarray:
    """DEC's sharpened target p_ij ∝ q_ij² / Σ_i q_ij, rows normalised. Downstream (entropy,
    candidate ranking, :class:`ClusterState.soft`) uses this p, as the reference does."""
    q = _array(q, np.float64)
    weight = q**2 / q.sum(axis=0, keepdims=True)
    return weight / weight.sum(axis=1, keepdims=True)


def assignment_entropy(p: Any, variant: str = "paper") -> np.ndarray:
    """Per-row entropy (nats). paper: Shannon entropy of p. official: the entropy of
    softmax(p) — a softmax over probabilities, which compresses the range; the ranking is
    close to but not the same as the paper's."""
    _check_choice("mining variant", variant, VARIANTS)
    p = _array(p, np.float64)
    if variant == "official":
        p = softmax(p, axis=1)
    return shannon_entropy(p, axis=1)


def _faiss() -> Any | None:
    try:
        import faiss  # optional: exact flat search, faster at large N
    except ImportError:
        return None
    return faiss


def _top_hits(features: np.ndarray, hits: int, backend: str, chunk_size: int) -> np.ndarray:
    """Indices of the ``hits`` largest inner products per row, best first."""
    faiss = _faiss() if backend in ("auto", "faiss") else None
    if backend == "faiss" and faiss is None:
        raise GcdbenchError(
            "knn backend 'faiss' requested but faiss is not installed; "
            "pip install faiss-cpu, or use backend='torch'."
        )
    if faiss is not None:
        index = faiss.IndexFlatIP(features.shape[1])
        index.add(features)
        return index.search(features, hits)[1].astype(np.int64)
    bank = torch.from_numpy(features)
    out = np.empty((len(features), hits), dtype=np.int64)
    # Row chunks keep the similarity block at chunk_size × N instead of N × N.
    for start in range(0, len(features), chunk_size):
        block = bank[start : start + chunk_size] @ bank.T
        out[start : start + chunk_size] = torch.topk(block, hits, dim=1).indices.numpy()
    return out


def knn(
    features: Any,
    k: int,
    metric: str = "cosine",
    exclude_self: bool = True,
    *,
    official_first_hit: bool = False,
    backend: str = "auto",
    chunk_size: int = 2048,
) -> np.ndarray:
    """[N, k] nearest neighbours, most similar first, by cosine or raw inner product.

    Uses faiss (exact flat index) when importable, else torch top-k over row chunks
    (memory O(chunk_size · N)); ``backend`` forces one. With ``exclude_self`` the top k + 1
    are searched and the sample's own index removed wherever it sits: with "inner" on
    unnormalised vectors a sample need not be its own first hit (§11.13). When it
    is not among the k + 1 the last hit is dropped instead. ``official_first_hit`` mimics the
    reference code, which drops column 0 whatever it holds. Without ``exclude_self`` the top
    k are returned as found (usually self first: GLEAN's top-(k+1) positive list is
    ``knn(..., k + 1, exclude_self=False)``).
    """
    _check_choice("knn metric", metric, METRICS)
    _check_choice("knn backend", backend, ("auto", "faiss", "torch"))
    features = np.ascontiguousarray(_array(features, np.float32))
    n = len(features)
    hits = k + 1 if exclude_self else k
    if k < 1 or hits > n:
        most = n - 1 if exclude_self else n
        raise GcdbenchError(
            f"knn: k = {k} must be within 1..{most} for a pool of {n}; lower k for a small pool."
        )
    if metric == "cosine":
        features = l2_normalise(features)
    top = _top_hits(features, hits, backend, chunk_size)
    if not exclude_self:
        return top
    if official_first_hit:
        return top[:, 1:]
    is_self = top == np.arange(n)[:, None]
    # Rows without self drop their last (k+1-th) hit; stable sort keeps the rank order.
    is_self[~is_self.any(axis=1), -1] = True
    keep_order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(top, keep_order, axis=1)


def local_inconsistency(assignments: Any, neighbours: Any) -> np.ndarray:
    """Loop's C_i: how many of i's neighbours (self excluded) sit in a different cluster."""
    assignments = _array(assignments, np.int64)
    neighbours = _array(neighbours, np.int64)
    return (assignments[neighbours] != assignments[:, None]).sum(axis=1)


def top_clusters(p: Any, m: int) -> np.ndarray:
    """[N, m] cluster ids ranked by p, highest first; ties go to the lower cluster id."""
    p = _array(p)
    if not 1 <= m <= p.shape[1]:
        raise GcdbenchError(f"top_clusters: m = {m} must be within 1..K = {p.shape[1]}.")
    return np.argsort(-p, axis=1, kind="stable")[:, :m]


def nearest_to_centers(features: Any, centers: Any, n: int) -> np.ndarray:
    """[K, n] pool indices nearest each centre (Euclidean), nearest first, searched over all
    samples, not only the cluster's members (§5.2); ties go to the lower index."""
    distances = squared_distances(features, centers)
    if not 1 <= n <= len(distances):
        raise GcdbenchError(f"nearest_to_centers: n = {n} must be within 1..N = {len(distances)}.")
    return np.argsort(distances.T, axis=1, kind="stable")[:, :n]


def cluster_state(
    features: Any,
    num_clusters: int,
    k: int,
    seed: int,
    variant: str = "paper",
    kmeans_n_init: int = 10,
    *,
    alpha: float = 1.0,
    metric: str | None = None,
    num_labeled: int = 0,
) -> ClusterState:
    """One round's mining state: K-means (``random_state=seed``, ``n_init`` pinned because
    scikit-learn 1.4 changed its default), p = dec_target(student_t), entropy and kNN lists.

    ``metric`` defaults to cosine for "paper" and to inner product for "official" (which
    also drops the first hit as self, as the reference does).
    """
    _check_choice("mining variant", variant, VARIANTS)
    features = _array(features, np.float32)
    if not 1 <= num_clusters <= len(features):
        raise GcdbenchError(
            f"cluster_state: {num_clusters} clusters for {len(features)} samples; need 1 <= K <= N."
        )
    model = KMeans(n_clusters=num_clusters, n_init=kmeans_n_init, random_state=seed).fit(features)
    centers = model.cluster_centers_
    soft = dec_target(student_t(features, centers, alpha=alpha, variant=variant))
    neighbours = knn(
        features,
        k,
        metric=metric or ("inner" if variant == "official" else "cosine"),
        official_first_hit=variant == "official",
    )
    return ClusterState(
        features=features,
        assignments=model.labels_.astype(np.int64),
        soft=soft,
        neighbours=neighbours,
        centers=centers,
        entropy=assignment_entropy(soft, variant),
        variant=variant,
        num_labeled=num_labeled,
    )


__all__ = [
    "assignment_entropy",
    "cluster_state",
    "dec_target",
    "knn",
    "local_inconsistency",
    "nearest_to_centers",
    "squared_distances",
    "student_t",
    "top_clusters",
]
