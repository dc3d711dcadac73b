"""Shared pieces of the prototype-based GCD methods of An et al.: DPN (AAAI 2023,
``dpn``) and TAN (AAAI 2024, ``tan``). docs/methods/dpn.md and docs/methods/tan.md describe
what each computes; this module holds what both do the same way:

* :class:`PrototypeParams`: stage 1 is the engine's MTP (shared cache), stage 2 the fields
  below; both methods add their own weights.
* :func:`run_prototype_method`: pre-train, one seeded K-means of the pool, the method's own
  training loop (a :class:`StageTwo` subclass), then seeded K-means of the test features.
* prototype arithmetic: labeled class means, Hungarian alignment of K-means centroids with
  the labeled prototypes, clamped Euclidean distances, InfoNCE on two views.

Importing this module does not import torch or scikit-learn (tests/test_startup.py): every
heavy import sits inside the function that needs it.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api import GcdbenchError, GCDTask, RunContext, param, training
from gcdbench.api.toolkit import fit_kmeans, hungarian_mapping, l2_normalise

if TYPE_CHECKING:
    import torch

#: smallest squared distance a square root is taken of: the official code takes sqrt of
#: |a|^2 + |b|^2 - 2ab, which rounding can push below zero (NaN); clamping also keeps the
#: gradient finite where a feature sits on its prototype
MIN_SQUARED_DISTANCE = 1e-12


@dataclass(frozen=True)
class PrototypeParams(training.PretrainParams):
    """Stage 2 of DPN/TAN; the PretrainParams fields (stage 1) keep the engine's defaults so
    the MTP result is shared with every other method on the same split."""

    epochs: int = param(
        5, ge=0, help="stage-2 epochs; 0 = the official per-dataset value (see the method page)"
    )
    batch_size: int = param(64, ge=1, help="pool texts per step, and labeled texts per CE batch")
    lr: float = param(1e-4, gt=0, help="stage-2 learning rate (AdamW, linear warm-up/decay)")
    max_steps_per_epoch: int = param(
        60, ge=0, help="cap on steps per epoch; 0 = a full pass over the pool"
    )
    train_top: int = param(
        0,
        ge=0,
        help="top layers stage 2 trains; 0 = as `mode` (the official BERT setting is 3 for "
        "DPN, 4 for TAN)",
    )
    temperature: float = param(0.07, gt=0, help="softmax / InfoNCE temperature")
    kmeans_n_init: int = param(10, ge=1, help="restarts of the one K-means of the pool")


def per_dataset(value: float, table: Mapping[str, float], dataset: str, fallback: float) -> float:
    """``value`` unless it is 0, which selects the official per-dataset value."""
    if value:
        return value
    return table.get(dataset, fallback)


def check_mode(method: str, params: PrototypeParams) -> None:
    """Stage 2 trains the backbone's features: a frozen backbone would leave them, the
    K-means of the pool and every prototype unchanged."""
    if params.mode == "head" and params.train_top == 0:
        raise GcdbenchError(
            f"method {method!r} with mode=head trains nothing (its losses move the backbone's "
            "features); pass -p mode=top-2, or -p train_top=N."
        )


def cuts(params: PrototypeParams, paper: Mapping[str, Any]) -> list[str]:
    """What these parameters cut or change against the paper preset, one line each."""
    values = dataclasses.asdict(params)
    return [
        f"{name}={values[name]!r} (paper preset: {want!r})"
        for name, want in paper.items()
        if name in values and values[name] != want
    ]


# ---- prototype arithmetic ----------------------------------------------------------------
def class_means(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes, d] mean feature per class; a class without a text gets the mean of all
    rows (it then pulls nothing in particular, rather than towards the origin)."""
    means = np.zeros((num_classes, features.shape[1]), dtype=np.float64)
    fallback = features.mean(axis=0) if len(features) else means[0]
    for c in range(num_classes):
        rows = features[labels == c]
        means[c] = rows.mean(axis=0) if len(rows) else fallback
    return means.astype(np.float32)


def centroid_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] Euclidean distances (float64)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    squared = (a64**2).sum(1)[:, None] + (b64**2).sum(1)[None, :] - 2 * a64 @ b64.T
    return np.sqrt(np.maximum(squared, 0.0))


def align_clusters(prototypes: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DPN's decoupling: Hungarian matching (least Euclidean distance) of the n_known labeled
    prototypes with the K centroids. Returns ``order`` (new id -> old cluster: the matched
    centroids first, in known-class order, then the unmatched in their K-means order) and
    ``relabel`` (old cluster -> new id), so new id < n_known means "aligned with known
    class new id"."""
    num_known, k = len(prototypes), len(centers)
    if num_known > k:
        raise GcdbenchError(f"{num_known} known classes cannot be matched to {k} clusters")
    matched = hungarian_mapping(centroid_distances(prototypes, centers))
    first = [matched[j] for j in range(num_known)]
    rest = [c for c in range(k) if c not in set(first)]
    order = np.asarray(first + rest, dtype=np.int64)
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    return order, relabel


def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[len(a), len(b)] Euclidean distances, with the square clamped before the root (the
    released DPN/TAN code has no clamp: NaN when rounding makes it negative)."""
    import torch

    squared = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return torch.sqrt(torch.clamp(squared, min=MIN_SQUARED_DISTANCE))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


# ---- the shared run ----------------------------------------------------------------------
@dataclass
class PoolClustering:
    """The one K-means of the pool (stage-2 features before any stage-2 step)."""

    features: np.ndarray  # [pool, d], normalised when params.normalize
    labels: np.ndarray  # [pool] K-means cluster per pool text
    centers: np.ndarray  # [K, d]
    inertia: float


class StageTwo(ABC):
    """A method's stage-2 loop body. :func:`run_prototype_method` builds it after the pool
    K-means and calls :meth:`start_epoch` before each epoch and :meth:`step` per batch."""

    def __init__(
        self,
        task: GCDTask,
        params: PrototypeParams,
        mode: training.TrainingMode,
        pool: PoolClustering,
        generator: torch.Generator,
        enabled: Any,
    ) -> None:
        self.task, self.params, self.mode, self.pool = task, params, mode, pool
        self.generator = generator
        self.enabled = enabled  # Method.enabled: is this component switched on?
        self.device = mode.backbone.device
        self.info: dict[str, Any] = {}

    @abstractmethod
    def modules(self) -> list[torch.nn.Module]:
        """The trainable modules besides the backbone (classifiers)."""

    @abstractmethod
    def start_epoch(self, epoch: int) -> None: ...

    @abstractmethod
    def step(self, batch: np.ndarray, labeled: np.ndarray) -> dict[str, torch.Tensor]:
        """Named weighted loss terms of one step (summed for the update)."""

    # helpers the subclasses share
    def features(self, indices: np.ndarray, *, augment: bool = False) -> torch.Tensor:
        """Stage-2 features z of pool texts, with grad (L2-normalised when
        ``params.normalize``: the K-means and the prototypes live in that space)."""
        import torch.nn.functional as F

        z = self.mode.embed(indices, augment=augment, generator=self.generator).float()
        return F.normalize(z, dim=1) if self.params.normalize else z

    def extract(self, indices: np.ndarray | None = None) -> np.ndarray:
        features = self.mode.extract(indices)
        return l2_normalise(features) if self.params.normalize else features

    def labeled_prototypes(self) -> np.ndarray:
        """Current means of the labeled texts' features per known class (eval mode)."""
        labeled = self.extract(np.arange(self.task.num_labeled))
        return class_means(labeled, np.asarray(self.task.labeled_y), self.task.num_known)

    def tensor(self, values: np.ndarray) -> torch.Tensor:
        import torch

        return torch.as_tensor(np.asarray(values), device=self.device)


def run_prototype_method(
    task: GCDTask,
    ctx: RunContext,
    params: PrototypeParams,
    method: str,
    make_stage: Any,
    *,
    epochs: int,
    enabled: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stage 1 (the engine's MTP, cached), the pool K-means, ``epochs`` epochs of the
    stage-2 loop ``make_stage(task, params, mode, pool, generator, enabled)`` builds, and
    seeded K-means with the true K on the test features. Returns the test assignments and
    the diagnostics."""
    import torch

    with training.isolated_torch_rng(ctx.rng("torch")):
        setup = training.prepare_training(task, ctx, params, method)
    mode = setup.mode
    if params.train_top:
        # The official code pre-trains the whole BERT, then trains only its top layers.
        with ctx.timed("prepare_mode"):
            mode = training.make_mode(
                f"top-{params.train_top}",
                setup.backbone,
                task.train.texts,
                precision=params.precision,
                reporter=ctx.reporter,
                seed=training.torch_seed(ctx.rng("stage2-mode")),
            )
    with training.isolated_torch_rng(ctx.rng("stage2-torch")):
        with ctx.timed("pool_kmeans"), ctx.reporter.stage("cluster the pool"):
            features = mode.extract()
            if params.normalize:
                features = l2_normalise(features)
            # Seeded with the run seed (the official DPN call is unseeded).
            fit = fit_kmeans(features, task.num_classes, ctx.seed, n_init=params.kmeans_n_init)
        pool = PoolClustering(features, fit.labels, fit.centers.astype(np.float32), fit.inertia)
        rng = ctx.rng("stage2")
        generator = training.generator_for(rng, mode.backbone.device)
        stage: StageTwo = make_stage(task, params, mode, pool, generator, enabled)
        with ctx.timed("train"):
            history = _train(task, ctx, params, mode, stage, rng, epochs)
        mode.eval()
        with ctx.timed("encode_test"), ctx.reporter.stage("encode test"), torch.no_grad():
            test = mode.encode_texts(task.test.texts)
    with ctx.timed("kmeans"):
        assignments = training.cluster_test(
            test, task.num_classes, ctx.seed, normalize=params.normalize
        )
    sizes = np.bincount(pool.labels, minlength=task.num_classes)
    diagnostics = {
        "training": setup.diagnostics,
        "stage2_mode": mode.describe() if params.train_top else mode.name,
        "pool_kmeans": {
            "inertia": round(pool.inertia, 4),
            "cluster_sizes": {"min": int(sizes.min()), "max": int(sizes.max())},
        },
        "epochs_run": len(history),
        "epochs": history,
        **stage.info,
    }
    return assignments, diagnostics


def _train(
    task: GCDTask,
    ctx: RunContext,
    params: PrototypeParams,
    mode: training.TrainingMode,
    stage: StageTwo,
    rng: np.random.Generator,
    epochs: int,
) -> list[dict[str, Any]]:
    """The stage-2 loop: shuffled pool batches (capped per epoch), each with one labeled CE
    batch from a cycled, shuffled loader."""
    modules = stage.modules()
    pool_size = len(task.train)
    per_epoch = training.steps_per_epoch(pool_size, params.batch_size)
    if params.max_steps_per_epoch > 0:
        per_epoch = min(per_epoch, params.max_steps_per_epoch)
    optimisation = training.make_optimisation(
        [mode.backbone, *modules],
        [*mode.trainable_parameters(), *(p for m in modules for p in m.parameters())],
        lr=params.lr,
        total_steps=per_epoch * epochs,
    )
    labeled = training.cycling_batches(task.num_labeled, params.batch_size, rng)
    history: list[dict[str, Any]] = []
    with ctx.reporter.task("stage-2 training", total=per_epoch * epochs) as advance:
        for epoch in range(epochs):
            started = time.perf_counter()
            stage.start_epoch(epoch)
            mode.train()
            for module in modules:
                module.train()
            order = rng.permutation(pool_size)
            sums: dict[str, float] = {}
            for step in range(per_epoch):
                batch = order[step * params.batch_size : (step + 1) * params.batch_size]
                terms = stage.step(batch, next(labeled))
                total = sum(terms.values())
                optimisation.step(total)  # type: ignore[arg-type]
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
                advance(1)
            losses = {name: round(v / per_epoch, 5) for name, v in sums.items()}
            history.append(
                {
                    "epoch": epoch,
                    "steps": per_epoch,
                    "loss": losses,
                    "lr_end": optimisation.learning_rate,
                    "duration_s": round(time.perf_counter() - started, 3),
                }
            )
            ctx.reporter.message(f"epoch {epoch + 1}/{epochs}: {losses}")
    return history
