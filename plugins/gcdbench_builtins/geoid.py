"""``geoid``: GeoID (Tang et al., ACL 2024, "Learning Geometry-Aware Representations for New
Intent Discovery"; code zjutangk/GeoID @d15f345), docs/methods/geoid.md.

Stage 1 is the engine's MTP pre-training. Stage 2 trains the last encoder layer and a head
Linear -> ReLU -> Dropout -> Linear(d) -> BatchNorm -> L2 whose output f is scored against a
*fixed* simplex-ETF classifier E (d x K). Each epoch: semi-supervised K-means on the feature
bank (labeled texts pinned), its clusters matched to the ETF vertices by Hungarian; each step:
Sinkhorn pseudo-labels into a bank, per-class confidence selection with ramps, CE on the
selected rows, CE on the labeled rows, CE towards the matched vertex, SupCon over anchor and
neighbour views, R-drop and a marginal-entropy regulariser. The test texts' f are clustered by
seeded K-means with the true K.

Numbers in section marks (§) refer to docs/methods/geoid.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api import (
    Component,
    GcdbenchError,
    GCDTask,
    Method,
    MethodOutput,
    RunContext,
    hookimpl,
    param,
    training,
)
from gcdbench.api.toolkit import hungarian_mapping

if TYPE_CHECKING:  # torch loads inside run(), never at import (tests/test_startup.py)
    import torch
    from torch import Tensor

# -- constants of the released code (geoid.py), §1.4 --------------------------------------
#: L = 3w(L_known + L_novel) + 3 L_sup + L_cluster + 5 L_reg + L_rdrop + L_knn
W_OT, W_SUP, W_CLUSTER, W_REG, W_RDROP, W_KNN = 3.0, 3.0, 1.0, 5.0, 1.0, 1.0
#: temperature of the softmax whose batch mean the entropy regulariser pushes to uniform
REG_TEMPERATURE = 0.3
#: selection ratios: known classes 0.3 -> 0.8, novel 0.1 -> 0.8, ramped over 70% of epochs
RHO_KNOWN_START, RHO_NOVEL_START, RHO_END, RHO_RAMP_SHARE = 0.3, 0.1, 0.8, 0.7
#: the OT/selection CE weight w ramps 0 -> 1 over the first 30% of epochs
W_RAMP_SHARE = 0.3
#: neighbours per dataset in the official scripts (the paper: 64, StackOverflow 256)
OFFICIAL_TOPK: Mapping[str, int] = {"banking": 64, "clinc": 64, "stackoverflow": 256}
DEFAULT_TOPK = 64
#: the smallest feature size the automatic rule picks (StackOverflow's official 64)
MIN_AUTO_DIM = 64


@dataclass(frozen=True)
class GeoIDParams(training.PretrainParams):
    """Stage 1 = the engine's MTP fields (shared cache); stage 2 = the fields below.
    Defaults = the cpu preset."""

    train_mode: str = param(
        "top-1",
        pattern=training.MODE_PATTERN,
        allowed=training.MODES_HINT,
        help="what trains in stage 2 (official: the last encoder layer only = top-1)",
    )
    epochs: int = param(4, ge=1, help="stage-2 epochs (official 200)")
    batch_size: int = param(128, ge=2, help="pool texts per stage-2 step")
    max_steps_per_epoch: int = param(
        24, ge=0, help="cap on stage-2 steps per epoch; 0 = a full pass over the pool"
    )
    lr: float = param(1e-3, gt=0, help="stage-2 learning rate (official scripts 1e-3)")
    warmup_share: float = param(
        0.2, ge=0, lt=1, help="share of stage-2 steps with linear warm-up (then linear decay)"
    )
    feat_dim: int = param(
        0,
        ge=0,
        help="feature size d of f and the ETF (needs d >= K); 0 = the smallest power of two "
        ">= max(64, K): banking 128, clinc 256, stackoverflow 64 as in the official scripts",
    )
    k: int = param(
        0, ge=0, help="neighbours mined on f; 0 = the official value (64, stackoverflow 256)"
    )
    update_per_epoch: int = param(2, ge=1, help="re-mine the neighbours every N epochs")
    temperature: float = param(0.07, gt=0, help="SupCon temperature")
    sinkhorn_epsilon: float = param(0.05, gt=0, help="Sinkhorn-Knopp entropic regularisation")
    sinkhorn_iterations: int = param(3, ge=1, help="Sinkhorn-Knopp iterations per batch")
    kmeans_n_init: int = param(
        2, ge=1, help="restarts of the per-epoch semi-supervised K-means (official 100)"
    )
    kmeans_max_iter: int = param(
        100, ge=1, help="iterations per semi-supervised K-means restart (official 200)"
    )
    variant: str = param(
        "paper",
        choices=training.VARIANTS,
        help="paper: Eq. 6 positives, gold L_sup, Hungarian-matched vertex; official: the "
        "released code (pair + gold-label positives, OT targets for L_sup, inverse matching)",
    )


_PAPER: dict[str, Any] = {
    "pretrain_epochs": 50,
    "pretrain_patience": 20,
    "pretrain_batch_size": 100,
    "train_mode": "top-1",
    "epochs": 200,
    "batch_size": 128,
    "max_steps_per_epoch": 0,
    "lr": 1e-3,
    "warmup_share": 0.2,
    "feat_dim": 0,
    "k": 0,
    "update_per_epoch": 5,
    "temperature": 0.07,
    "kmeans_n_init": 100,
    "kmeans_max_iter": 200,
}
_SMOKE: dict[str, Any] = {
    "train_mode": "top-1",
    "epochs": 2,
    "batch_size": 8,
    "max_steps_per_epoch": 3,
    "feat_dim": 0,
    "k": 5,
    "update_per_epoch": 1,
    "kmeans_n_init": 1,
    "kmeans_max_iter": 20,
}


def feature_size(feat_dim: int, num_classes: int) -> int:
    """d: the requested size, or (0) the smallest power of two >= max(64, K)."""
    if feat_dim:
        return feat_dim
    return 1 << max(0, math.ceil(math.log2(max(MIN_AUTO_DIM, num_classes))))


def check_feature_size(feat_dim: int, num_classes: int) -> None:
    """One line when the ETF cannot be built: it needs d orthonormal columns for K classes."""
    if feat_dim and feat_dim < num_classes:
        raise GcdbenchError(
            f"method 'geoid': the simplex-ETF classifier needs feat_dim >= K = {num_classes} "
            f"classes, got feat_dim={feat_dim}; pass -p feat_dim=0 (automatic: "
            f"{feature_size(0, num_classes)}) or -p feat_dim={num_classes}."
        )


def topk_for(k: int, dataset: str, pool_size: int) -> int:
    wanted = k if k > 0 else OFFICIAL_TOPK.get(dataset, DEFAULT_TOPK)
    return max(1, min(wanted, pool_size - 1))


# -- numpy pieces: ETF, ramps, semi-supervised K-means, alignment, selection ---------------


def simplex_etf(dim: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """E = sqrt(K/(K-1)) * P (I - 11^T/K), P a random d x K matrix with orthonormal columns
    (QR of a uniform matrix, as the official code draws it). Columns are unit vectors with
    pairwise cosine -1/(K-1)."""
    if num_classes < 2:
        raise GcdbenchError("method 'geoid' needs at least 2 classes for a simplex ETF.")
    check_feature_size(dim, num_classes)
    basis, _ = np.linalg.qr(rng.random((dim, num_classes)))
    centring = np.eye(num_classes) - np.full((num_classes, num_classes), 1.0 / num_classes)
    scale = math.sqrt(num_classes / (num_classes - 1))
    return (scale * basis @ centring).astype(np.float32)


@dataclass(frozen=True)
class Ramps:
    """The per-epoch schedule of the released code (linear ramps, §1.4)."""

    w: float
    rho_known: float
    rho_novel: float


def ramps(epoch: int, epochs: int) -> Ramps:
    def ramp(end: float) -> float:
        return 1.0 if epoch >= end else (epoch / end if end > 0 else 1.0)

    progress = ramp(RHO_RAMP_SHARE * epochs)
    return Ramps(
        w=ramp(W_RAMP_SHARE * epochs),
        rho_known=RHO_KNOWN_START + (RHO_END - RHO_KNOWN_START) * progress,
        rho_novel=RHO_NOVEL_START + (RHO_END - RHO_NOVEL_START) * progress,
    )


def _squared_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)[:, None] - 2.0 * (x @ centers.T) + (centers * centers).sum(1)[None, :]
    return np.maximum(sq, 0.0)


def _kmeans_pp(
    unlabeled: np.ndarray, seeds: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """k-means++ over the unlabeled rows, starting from ``seeds`` (the labeled class means),
    each new centre drawn with probability proportional to the squared distance."""
    centers = list(seeds) if len(seeds) else [unlabeled[rng.integers(len(unlabeled))]]
    nearest = _squared_distances(unlabeled, np.asarray(centers)).min(1).astype(np.float64)
    while len(centers) < k:
        cumulative = np.cumsum(nearest)
        if cumulative[-1] > 0:
            pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            pick = min(pick, len(unlabeled) - 1)
        else:  # every row sits on a centre already: any row will do
            pick = int(rng.integers(len(unlabeled)))
        centers.append(unlabeled[pick])
        nearest = np.minimum(nearest, ((unlabeled - unlabeled[pick]) ** 2).sum(1))
    return np.asarray(centers, dtype=unlabeled.dtype)


@dataclass(frozen=True)
class SemiKMeansFit:
    labels: np.ndarray  # one cluster per row; labeled rows carry their class's cluster
    centers: np.ndarray  # k x d
    inertia: float
    n_iter: int


def semi_supervised_kmeans(
    features: np.ndarray,
    labeled_y: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    n_init: int,
    max_iter: int,
    tol: float = 1e-4,
) -> SemiKMeansFit:
    """K-means with the first ``len(labeled_y)`` rows pinned to their class's cluster
    (Vaze et al. 2022, as the released code runs it): labeled class means seed the first
    centres, k-means++ on the unlabeled rows adds the rest; only unlabeled rows are
    reassigned; centres are the means of all members. Clusters 0..C-1 are the C labeled
    classes in sorted order. The best of ``n_init`` restarts (least inertia) wins."""
    # float32: BLAS at half the cost of float64, ample for unit-norm features
    x = np.asarray(features, dtype=np.float32)
    n_lab = len(labeled_y)
    classes, pinned = np.unique(np.asarray(labeled_y, dtype=np.int64), return_inverse=True)
    if len(classes) > k:
        raise GcdbenchError(f"semi-supervised K-means: {len(classes)} labeled classes > k = {k}.")
    labeled, unlabeled = x[:n_lab], x[n_lab:]
    if len(unlabeled) == 0:
        raise GcdbenchError("semi-supervised K-means needs unlabeled rows.")
    seeds = _centroids(labeled, pinned, len(classes), np.zeros((len(classes), x.shape[1]), x.dtype))
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    best: SemiKMeansFit | None = None
    # One BLAS thread: these thin products lose more to thread hand-offs than they gain.
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(n_init):
            fit = _lloyd(x, pinned, _kmeans_pp(unlabeled, seeds, k, rng), max_iter, tol)
            if best is None or fit.inertia < best.inertia:
                best = fit
    assert best is not None
    return best


def _centroids(x: np.ndarray, labels: np.ndarray, k: int, previous: np.ndarray) -> np.ndarray:
    """Member means; an empty cluster keeps its previous centre (the released code's mean of
    nothing is NaN). Sums by sorting and ``reduceat``, not a one-hot product: multi-threaded
    BLAS on that thin product was 50x slower on a busy two-core machine."""
    counts = np.bincount(labels, minlength=k)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    filled = counts > 0
    centers = np.array(previous, dtype=x.dtype, copy=True)
    sums = np.add.reduceat(x[order], starts[filled], axis=0)
    centers[filled] = sums / counts[filled].astype(x.dtype)[:, None]
    return centers


def _lloyd(
    x: np.ndarray, pinned: np.ndarray, centers: np.ndarray, max_iter: int, tol: float
) -> SemiKMeansFit:
    n_lab, k = len(pinned), len(centers)
    labels = np.concatenate([pinned, np.zeros(len(x) - n_lab, dtype=np.int64)])
    inertia, iterations = 0.0, 0
    while iterations < max_iter:
        iterations += 1
        distances = _squared_distances(x[n_lab:], centers)
        labels[n_lab:] = distances.argmin(1)
        inertia = float(distances.min(1).sum())
        inertia += float(((x[:n_lab] - centers[pinned]) ** 2).sum())
        updated = _centroids(x, labels, k, centers)
        shift = float(np.sqrt(((updated - centers) ** 2).sum(1)).sum())
        centers = updated
        if shift**2 < tol:  # the released code's stopping rule
            break
    return SemiKMeansFit(labels.copy(), centers, inertia, iterations)


def align_to_vertices(
    centers: np.ndarray, vertices: np.ndarray, *, official: bool = False
) -> np.ndarray:
    """cluster id -> ETF vertex, by Hungarian on the Euclidean distances between the K-means
    centres and the vertices (rows of ``vertices``). ``official`` returns the inverse
    permutation, which is what the released code's column indexing computes (§6)."""
    cost = np.sqrt(_squared_distances(np.asarray(centers, np.float64), vertices.astype(float)))
    mapping = hungarian_mapping(cost)
    to_vertex = np.array([mapping[c] for c in range(len(centers))], dtype=np.int64)
    if not official:
        return to_vertex
    inverse = np.empty_like(to_vertex)
    inverse[to_vertex] = np.arange(len(to_vertex))
    return inverse


def select_confident(
    confidence: np.ndarray,
    predicted: np.ndarray,
    candidates: np.ndarray,
    num_known: int,
    num_classes: int,
    rho_known: float,
    rho_novel: float,
) -> np.ndarray:
    """Per class j, among candidate rows whose pseudo-label is j, the top floor(rho_j * n_j)
    by confidence (rho_known for known classes, rho_novel for novel ones). Returns per row
    0 (not chosen), 1 (chosen, known class) or 2 (chosen, novel class)."""
    rows = np.flatnonzero(candidates)
    chosen = np.zeros(len(confidence), dtype=np.int8)
    if len(rows) == 0:
        return chosen
    label, conf = predicted[rows], confidence[rows]
    order = np.lexsort((-conf, label))  # by class, most confident first
    sorted_label = label[order]
    counts = np.bincount(label, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - starts[sorted_label]
    is_known = np.arange(num_classes) < num_known
    keep_count = np.floor(counts * np.where(is_known, rho_known, rho_novel) + 1e-9)
    keep = rank < keep_count[sorted_label]
    chosen[rows[order[keep]]] = np.where(is_known[sorted_label[keep]], 1, 2)
    return chosen


# -- torch pieces: head, Sinkhorn, losses -------------------------------------------------


def build_head(hidden: int, dim: int) -> torch.nn.Sequential:
    """Linear(h, h) -> ReLU -> Dropout(0.1) -> Linear(h, d) -> BatchNorm1d(d); the caller
    L2-normalises (the released code's head plus its ETF classifier's BN and norm)."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(hidden, dim),
        torch.nn.BatchNorm1d(dim),
    )


def rdrop_loss(first: Tensor, second: Tensor) -> Tensor:
    """Symmetric KL between the two passes' softmax, summed over batch and classes, halved
    (the released code's compute_kl_loss)."""
    import torch.nn.functional as F

    p = F.kl_div(F.log_softmax(first, -1), F.softmax(second, -1), reduction="sum")
    q = F.kl_div(F.log_softmax(second, -1), F.softmax(first, -1), reduction="sum")
    return (p + q) / 2


def marginal_entropy_loss(logits: Tensor) -> Tensor:
    """KL(batch-mean softmax(logits / 0.3) || uniform): keeps every vertex in use."""
    import torch

    mean = torch.softmax(logits / REG_TEMPERATURE, dim=1).mean(0).clamp_min(1e-8)
    return (mean * torch.log(mean * logits.shape[1])).sum()


def masked_ce(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean CE over the rows of ``mask``; an exact, graph-connected 0 when there are none."""
    import torch.nn.functional as F

    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask], targets[mask])


# -- the training loop ----------------------------------------------------------------------


@dataclass
class _State:
    """What stage 2 keeps across steps: the banks (rows = pool texts) and the schedule."""

    features: np.ndarray  # [N, d] f of each text from its last clean train-mode pass
    pseudo: np.ndarray  # [N, K] OT pseudo-label distribution (labeled rows: gold one-hot)
    neighbours: np.ndarray  # [N, k + 1] top-(k+1) on f by inner product, self included
    aligned: np.ndarray | None = None  # [N] ETF vertex of each text's K-means cluster
    epochs: list[dict[str, Any]] = field(default_factory=list)


class _Stage2:
    """Stage 2 on a training mode: one object so the many pieces each step needs (mode, head,
    ETF, banks, generator) are not threaded through every function."""

    def __init__(
        self,
        task: GCDTask,
        ctx: RunContext,
        params: GeoIDParams,
        mode: training.TrainingMode,
        enabled: Callable[[str], bool],
    ) -> None:
        import torch

        self.task, self.ctx, self.params, self.mode, self.enabled = task, ctx, params, mode, enabled
        self.official = params.variant == "official"
        self.device = mode.backbone.device
        self.dim = feature_size(params.feat_dim, task.num_classes)
        self.k = topk_for(params.k, task.dataset, len(task.train))
        self.head = build_head(mode.backbone.hidden_size, self.dim).to(self.device)
        etf = simplex_etf(self.dim, task.num_classes, ctx.rng("etf"))
        self.etf = torch.as_tensor(etf, device=self.device)  # [d, K], never trained
        # "w/o ETF" (paper Table 3): a learnable linear classifier in the ETF's place
        self.linear: torch.nn.Linear | None = None
        if not enabled("etf"):
            self.linear = torch.nn.Linear(self.dim, task.num_classes, bias=False).to(self.device)
        self.rng = ctx.rng("geoid")
        self.generator = training.generator_for(self.rng, self.device)
        self.labeled_y = np.asarray(task.labeled_y, dtype=np.int64)
        self.gold = torch.as_tensor(self.labeled_y, dtype=torch.long, device=self.device)

    # ---- features and logits -----------------------------------------------------------
    def project(self, pooled: Tensor) -> Tensor:
        import torch.nn.functional as F

        return F.normalize(self.head(pooled), dim=-1)

    def logits(self, f: Tensor) -> Tensor:
        return self.linear(f) if self.linear is not None else f @ self.etf

    def vertices(self) -> np.ndarray:
        """[K, d] class centres the K-means clusters are matched to."""
        import torch.nn.functional as F

        if self.linear is not None:
            return F.normalize(self.linear.weight.detach(), dim=1).cpu().numpy()
        return self.etf.T.cpu().numpy()

    def eval_features(self, pooled: np.ndarray) -> np.ndarray:
        """f of backbone features in eval mode (BN running statistics, no dropout)."""
        import torch

        self.head.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(pooled), 512):
                chunk = torch.as_tensor(pooled[start : start + 512], device=self.device)
                out.append(self.project(chunk).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def pool_features(self) -> np.ndarray:
        return self.eval_features(self.mode.extract())

    # ---- banks ---------------------------------------------------------------------------
    def initial_state(self) -> _State:
        """Banks from one eval pass: f for K-means and kNN, Sinkhorn of the ETF logits in
        batch-sized chunks for the OT bank (the released code starts both at zero and fills
        them during epoch 0, which a capped epoch would not finish)."""
        import torch

        features = self.pool_features()
        pseudo = np.zeros((len(features), self.task.num_classes), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(features), self.params.batch_size):
                f = torch.as_tensor(features[start : start + self.params.batch_size])
                pseudo[start : start + len(f)] = self.pseudo_labels(self.logits(f.to(self.device)))
        self.pin_labeled(pseudo)
        return _State(features, pseudo, self.mine(features))

    def pseudo_labels(self, logits: Tensor) -> np.ndarray:
        import torch

        if self.enabled("ot"):
            q = training.sinkhorn(
                logits, self.params.sinkhorn_epsilon, self.params.sinkhorn_iterations
            )
        else:  # "w/o optimal transport": the classifier's own prediction
            q = torch.softmax(logits.detach().float(), dim=1)
        return q.cpu().numpy()

    def pin_labeled(self, pseudo: np.ndarray) -> None:
        n_lab = self.task.num_labeled
        pseudo[:n_lab] = 0.0
        pseudo[np.arange(n_lab), self.labeled_y] = 1.0

    def mine(self, features: np.ndarray) -> np.ndarray:
        # Inner product on the unit-norm f, the text itself included (official: faiss
        # IndexFlatIP, top k + 1).
        return training.knn(features, self.k + 1, metric="inner", exclude_self=False)

    def cluster(self, state: _State) -> dict[str, Any]:
        """Semi-supervised K-means on the feature bank, clusters matched to the vertices."""
        started = time.perf_counter()
        fit = semi_supervised_kmeans(
            state.features,
            self.labeled_y,
            self.task.num_classes,
            self.rng,
            n_init=self.params.kmeans_n_init,
            max_iter=self.params.kmeans_max_iter,
        )
        to_vertex = align_to_vertices(fit.centers, self.vertices(), official=self.official)
        state.aligned = to_vertex[fit.labels]
        known = np.arange(self.task.num_known)
        return {
            "inertia": round(fit.inertia, 3),
            "iterations": fit.n_iter,
            # clusters of labeled classes matched to their own vertex (paper: all of them)
            "known_clusters_on_own_vertex": int((to_vertex[known] == known).sum()),
            "duration_s": round(time.perf_counter() - started, 3),
        }

    # ---- one step ------------------------------------------------------------------------
    def step(
        self, state: _State, idx: np.ndarray, pair: np.ndarray, epoch: int, schedule: Ramps
    ) -> tuple[Tensor, dict[str, float]]:
        import torch

        mode, n_lab = self.mode, self.task.num_labeled
        # The clean view only feeds the feature bank (train mode, as the released code).
        with torch.no_grad():
            clean = self.project(mode.embed(idx, augment=False, generator=self.generator))
        state.features[idx] = clean.float().cpu().numpy()
        # R-drop: the same augmented view twice. The mode draws augmentation and dropout
        # from one generator, so replaying its state replays the top layer's dropout too;
        # the two passes differ by the head's dropout (§6).
        replay = self.generator.get_state()
        f1 = self.project(mode.embed(idx, augment=True, generator=self.generator))
        after = self.generator.get_state()
        self.generator.set_state(replay)
        f2 = self.project(mode.embed(idx, augment=True, generator=self.generator))
        self.generator.set_state(after)
        l1, l2 = self.logits(f1), self.logits(f2)

        labeled_rows = idx < n_lab
        q = self.pseudo_labels(l1)
        if self.official:
            state.pseudo[idx] = q  # labeled rows too, until the reset below
        else:
            state.pseudo[idx[~labeled_rows]] = q[~labeled_rows]
        chosen = self.choose(state, epoch, schedule)
        targets_np = state.pseudo[idx].argmax(1)
        if self.official:
            self.pin_labeled(state.pseudo)  # reset after the targets were read (§6)
        targets = torch.as_tensor(targets_np, dtype=torch.long, device=self.device)
        chosen_batch = torch.as_tensor(chosen[idx], device=self.device)
        lab_mask = torch.as_tensor(labeled_rows, device=self.device)

        losses: dict[str, Tensor] = {}
        # CE on the selected rows' pseudo-labels (OT, or the softmax when "ot" is ablated)
        losses["ce_known"] = masked_ce(l1, targets, chosen_batch == 1)
        losses["ce_novel"] = masked_ce(l1, targets, chosen_batch == 2)
        sup_targets = targets.clone()
        if not self.official and bool(lab_mask.any()):
            rows = torch.as_tensor(idx[labeled_rows], device=self.device)
            sup_targets[lab_mask] = self.gold[rows]
        losses["sup"] = masked_ce(l1, sup_targets, lab_mask)
        if state.aligned is not None:
            aligned = torch.as_tensor(state.aligned[idx], dtype=torch.long, device=self.device)
            losses["cluster"] = masked_ce(l1, aligned, chosen_batch == 2)
        if self.enabled("contrastive"):
            f_pair = self.project(mode.embed(pair, augment=True, generator=self.generator))
            positives = self.positives(state, idx, chosen).to(self.device)
            losses["knn"] = 0.5 * (
                training.supcon_loss(
                    torch.stack([f1, f_pair], 1), positives, self.params.temperature
                )
                + training.supcon_loss(
                    torch.stack([f2, f_pair], 1), positives, self.params.temperature
                )
            )
        if self.enabled("rdrop"):
            losses["rdrop"] = rdrop_loss(l1, l2)
        if self.enabled("entropy"):
            losses["reg"] = marginal_entropy_loss(l1)
        weights = {
            "ce_known": W_OT * schedule.w,
            "ce_novel": W_OT * schedule.w,
            "sup": W_SUP,
            "cluster": W_CLUSTER,
            "knn": W_KNN,
            "rdrop": W_RDROP,
            "reg": W_REG,
        }
        total = sum((weights[name] * value for name, value in losses.items()), l1.sum() * 0.0)
        values = {name: float(value.detach()) for name, value in losses.items()}
        values["selected_known"] = float((chosen == 1).sum())
        values["selected_novel"] = float((chosen == 2).sum())
        return total, values

    def choose(self, state: _State, epoch: int, schedule: Ramps) -> np.ndarray:
        """Rows whose OT pseudo-label trains them (none in epoch 0, as the released code)."""
        n = len(state.pseudo)
        if epoch < 1:
            return np.zeros(n, dtype=np.int8)
        candidates = np.ones(n, dtype=bool)
        if not self.official:  # labeled rows train on their gold label (L_sup) instead
            candidates[: self.task.num_labeled] = False
        rho = (schedule.rho_known, schedule.rho_novel) if self.enabled("filtering") else (1, 1)
        return select_confident(
            state.pseudo.max(1),
            state.pseudo.argmax(1),
            candidates,
            self.task.num_known,
            self.task.num_classes,
            *rho,
        )

    def positives(self, state: _State, idx: np.ndarray, chosen: np.ndarray) -> Tensor:
        """SupCon positives within the batch. Official: the pair view (diagonal) and labeled
        texts of the same gold class. Paper (Eq. 6): also the anchor's k nearest neighbours
        and selected texts with the same OT pseudo-label."""
        import torch

        batch = torch.as_tensor(idx, dtype=torch.long)
        n_lab = self.task.num_labeled
        if self.official:
            own = torch.arange(len(state.neighbours)).unsqueeze(1)
            return training.neighbour_adjacency(batch, own, n_lab, torch.as_tensor(self.labeled_y))
        adjacency = training.neighbour_adjacency(
            batch, torch.as_tensor(state.neighbours), n_lab, torch.as_tensor(self.labeled_y)
        )
        label = np.full(len(idx), -1, dtype=np.int64)
        picked = (chosen[idx] > 0) & (idx >= n_lab)
        label[picked] = state.pseudo[idx[picked]].argmax(1)
        label[idx < n_lab] = self.labeled_y[idx[idx < n_lab]]
        lab = torch.as_tensor(label)
        same = (lab.unsqueeze(1) == lab.unsqueeze(0)) & (lab >= 0).unsqueeze(1)
        return adjacency | same

    # ---- the loop ------------------------------------------------------------------------
    def batches(self) -> tuple[int, int]:
        """(steps per epoch, steps in a full pass). A trailing batch of one text is dropped:
        BatchNorm cannot normalise a single row in train mode."""
        n, size = len(self.task.train), self.params.batch_size
        full = n // size + int(n % size >= 2)
        cap = self.params.max_steps_per_epoch
        return (min(full, cap) if cap else full), full

    def train(self) -> _State:
        per_epoch, _ = self.batches()
        params = self.params
        modules: list[torch.nn.Module] = [self.mode.backbone, self.head]
        trainable = [*self.mode.trainable_parameters(), *self.head.parameters()]
        if self.linear is not None:
            modules.append(self.linear)
            trainable += list(self.linear.parameters())
        optimisation = training.make_optimisation(
            modules,
            trainable,
            lr=params.lr,
            total_steps=per_epoch * params.epochs,
            weight_decay=0.01,
            warmup_share=params.warmup_share,
        )
        with self.ctx.reporter.stage("banks"):
            state = self.initial_state()
        reporter = self.ctx.reporter
        with (
            reporter.stage("train"),
            reporter.task("steps", total=per_epoch * params.epochs) as advance,
        ):
            for epoch in range(params.epochs):
                self.epoch(state, epoch, per_epoch, optimisation, advance)
        self.mode.eval()
        self.head.eval()
        return state

    def epoch(
        self,
        state: _State,
        epoch: int,
        per_epoch: int,
        optimisation: training.Optimisation,
        advance: Callable[[int], None],
    ) -> None:
        started = time.perf_counter()
        params, n = self.params, len(self.task.train)
        schedule = ramps(epoch, params.epochs)
        record: dict[str, Any] = {"epoch": epoch, "w": round(schedule.w, 4)}
        record["rho"] = [round(schedule.rho_known, 4), round(schedule.rho_novel, 4)]
        if epoch > 0 and epoch % params.update_per_epoch == 0:
            state.neighbours = self.mine(self.pool_features())
            record["neighbours_refreshed"] = True
        if epoch >= 1 and self.enabled("clustering"):
            record["kmeans"] = self.cluster(state)
        # One pair view per text per epoch: uniform over its top-(k+1) list, itself included.
        pick = self.rng.integers(0, state.neighbours.shape[1], size=n)
        pairs = state.neighbours[np.arange(n), pick]
        order = self.rng.permutation(n)
        sums: dict[str, float] = {}
        self.mode.train()
        self.head.train()
        for step in range(per_epoch):
            idx = order[step * params.batch_size : (step + 1) * params.batch_size]
            total, values = self.step(state, idx, pairs[idx], epoch, schedule)
            optimisation.step(total)
            values["total"] = float(total.detach())
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            advance(1)
        record["steps"] = per_epoch
        record["loss"] = {name: round(v / per_epoch, 5) for name, v in sums.items()}
        record["lr_end"] = optimisation.learning_rate
        record["duration_s"] = round(time.perf_counter() - started, 3)
        state.epochs.append(record)
        self.ctx.reporter.message(f"epoch {epoch + 1}/{params.epochs}: {record['loss']}")


# -- the method -------------------------------------------------------------------------------


def _cuts(params: GeoIDParams, steps: int, full: int) -> list[str]:
    """What this run trains less than the official scripts, in words."""
    cuts = []
    if params.epochs < _PAPER["epochs"]:
        cuts.append(f"{params.epochs} stage-2 epochs (official 200)")
    if steps < full:
        cuts.append(
            f"{steps} of {full} steps per epoch: each epoch sees {steps * params.batch_size} "
            "random pool texts, not all"
        )
    if params.kmeans_n_init < _PAPER["kmeans_n_init"]:
        cuts.append(f"semi-supervised K-means: {params.kmeans_n_init} restarts (official 100)")
    if params.kmeans_max_iter < _PAPER["kmeans_max_iter"]:
        cuts.append(f"semi-supervised K-means: <= {params.kmeans_max_iter} iterations (200)")
    if params.pretrain_epochs < _PAPER["pretrain_epochs"]:
        cuts.append(
            f"MTP: {params.pretrain_epochs} epochs, patience {params.pretrain_patience}, mode "
            f"{params.mode} (official 50, patience 20, full fine-tuning)"
        )
    if params.update_per_epoch != _PAPER["update_per_epoch"]:
        cuts.append(f"neighbours re-mined every {params.update_per_epoch} epochs (official 5)")
    if params.precision != "fp32":
        cuts.append(f"{params.precision} autocast in the encoder (official fp32)")
    return cuts


def _departures(params: GeoIDParams, ablations: frozenset[str]) -> list[str]:
    out = [
        "the test set is clustered once, after the last epoch (the released code evaluates it "
        "every epoch and prints the best)",
        "R-drop passes share the augmented view and the top layer's dropout mask; they differ "
        "by the head's dropout (the released code re-runs dropout in every layer)",
        "feature and OT banks start from an eval pass (official: zeros filled in epoch 0)",
        "semi-supervised K-means: an empty cluster keeps its centre (official: NaN); seeded",
        "test K-means seeded with the run seed, n_init 10 (official: unseeded)",
        f"pooling {params.pooling} (the released code: CLS; the paper's text: mean pooling)",
    ]
    if params.variant == "paper":
        out += [
            "SupCon positives as the paper's Eq. 6: pair view, kNN, same gold or OT label "
            "(released code: pair view and same gold label only)",
            "L_sup on gold labels (released code: on the batch's OT argmax)",
            "K-means clusters trained towards their Hungarian-matched vertex (released "
            "code: the inverse permutation)",
            "labeled texts are not candidates of the OT selection (they train with L_sup)",
        ]
    else:
        out.append("variant official: the released code's positives, L_sup and matching")
    if ablations:
        out.append(f"ablated: {', '.join(sorted(ablations))}")
    return out


class GeoID(Method):
    name = "geoid"
    description = (
        "GeoID (Tang et al., ACL 2024): MTP, then a fixed simplex-ETF classifier trained "
        "with Sinkhorn pseudo-labels (confidence-selected), semi-supervised K-means labels "
        "matched to ETF vertices, kNN SupCon, R-drop and a marginal-entropy term; K-means "
        "on test features. Defaults = the cpu preset; presets: cpu, paper (GPU), smoke"
    )
    version = "1"
    uses = ("encoder",)
    trains_encoder = True
    components = (
        Component("mtp", "MTP pre-training (stage 2 starts from the untrained backbone)"),
        Component("ot", "Sinkhorn optimal transport (ablated: the softmax prediction)"),
        Component("clustering", "semi-supervised K-means pseudo-labels (L_cluster)"),
        Component("filtering", "per-class confidence selection (ablated: every row)"),
        Component("etf", "the fixed simplex ETF (ablated: a learnable linear classifier)"),
        Component("contrastive", "the kNN SupCon term L_knn"),
        Component("rdrop", "the R-drop consistency term"),
        Component("entropy", "the marginal-entropy regulariser"),
    )
    Params = GeoIDParams
    presets = training.presets_for(GeoIDParams, paper=_PAPER, smoke=_SMOKE)

    @classmethod
    def cross_check(cls, params: GeoIDParams, num_classes: int | None = None) -> None:
        if num_classes is not None:
            check_feature_size(params.feat_dim, num_classes)

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: GeoIDParams = self.params
        self.cross_check(params, task.num_classes)
        if task.num_labeled >= len(task.train):
            raise GcdbenchError("method 'geoid' needs unlabeled training texts to discover.")
        with training.isolated_torch_rng(ctx.rng("torch")):
            setup = training.prepare_training(
                task, ctx, params, self.name, with_mtp=self.enabled("mtp")
            )
        with training.isolated_torch_rng(ctx.rng("geoid-torch")):
            mode = self._stage2_mode(task, ctx, params, setup)
            stage = _Stage2(task, ctx, params, mode, self.enabled)
            with ctx.timed("train"), ctx.reporter.stage("geoid"):
                state = stage.train()
            with ctx.timed("encode_test"), ctx.reporter.stage("encode test"):
                features = stage.eval_features(mode.encode_texts(task.test.texts))
        with ctx.timed("kmeans"):
            assignments = training.cluster_test(
                features, task.num_classes, ctx.seed, normalize=params.normalize
            )
        steps, full = stage.batches()
        diagnostics = {
            "training": {**setup.diagnostics, "stage2_mode": mode.describe()},
            "geoid": {
                "feat_dim": stage.dim,
                "k": stage.k,
                "variant": params.variant,
                "steps_per_epoch": steps,
                "epochs": state.epochs,
            },
            "cuts": _cuts(params, steps, full),
            "departures": _departures(params, self.ablations),
        }
        return MethodOutput(test_assignments=assignments, diagnostics=diagnostics)

    @staticmethod
    def _stage2_mode(
        task: GCDTask, ctx: RunContext, params: GeoIDParams, setup: training.TrainingSetup
    ) -> training.TrainingMode:
        """The pre-training mode when it trains what stage 2 trains, else a new one on the
        same (pre-trained) backbone: by default MTP trains the top 2 layers, shared with the
        other methods' cache, and stage 2 only the last one, as the released code."""
        if params.train_mode == params.mode:
            return setup.mode
        with ctx.timed("prepare_stage2_mode"):
            return training.make_mode(
                params.train_mode,
                setup.backbone,
                task.train.texts,
                precision=params.precision,
                reporter=ctx.reporter,
                seed=training.torch_seed(ctx.rng("stage2-mode")),
            )


@hookimpl
def register_methods(register):
    register(GeoID)
