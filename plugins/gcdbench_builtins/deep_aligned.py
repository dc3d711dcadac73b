"""``deep-aligned``: DeepAligned (Zhang, Xu, Lin, Lyu — AAAI 2021), docs/methods/deep-aligned.md.

Stage 1: CE-only pre-training of the top layer(s) on the labeled known-class texts (the
engine's MTP with ``pretrain_mlm=False``), then the feature head Linear(h, h) → tanh →
dropout warmed up on the labeled texts. Stage 2, every epoch: K-means on the head's features
``z`` of the whole pool, silhouette-based early stopping, Hungarian alignment of the new
centroids to the previous epoch's, one epoch of CE on the aligned pseudo-labels of every pool
text through a fresh K-way classifier. Test: seeded K-means on the test texts' ``z``.

torch and scikit-learn load inside the functions that need them (tests/test_startup.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
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
from gcdbench.api.k_estimator import count_large_clusters
from gcdbench.api.toolkit import fit_kmeans, hungarian_mapping

if TYPE_CHECKING:
    import torch

#: the feature head's dropout (the official model uses BERT's hidden dropout, 0.1)
HEAD_DROPOUT = 0.1


@dataclass(frozen=True)
class DeepAlignedParams(training.PretrainParams):
    """Stage 1 (the engine's pre-training fields, CE only by default) and stage 2."""

    # The official code trains only BERT's layer 11 (+ its unused pooler): the last layer.
    mode: str = param(
        "top-1",
        pattern=training.MODE_PATTERN,
        allowed=training.MODES_HINT,
        help="how much of the backbone trains: full, the top N layers, or only the head",
    )
    # DeepAligned pre-trains with CE on labeled texts only (no MLM).
    pretrain_mlm: bool = param(False, help="add the MLM term on pool batches (paper: off)")
    # The official code clusters, scores and aligns raw z (Euclidean).
    normalize: bool = param(False, help="L2-normalise z before every K-means and silhouette")
    head_warmup_epochs: int = param(
        30,
        ge=0,
        help="epochs of CE on labeled texts training the feature head after pre-training",
    )
    epochs: int = param(8, ge=1, help="stage-2 epochs (K-means + alignment + one CE epoch)")
    patience: int = param(
        3, ge=1, help="stop after this many epochs without a better silhouette score"
    )
    lr: float = param(2e-4, gt=0, help="stage-2 learning rate (AdamW, linear warm-up/decay)")
    batch_size: int = param(128, ge=1, help="pool texts per stage-2 step")
    max_steps_per_epoch: int = param(
        0, ge=0, help="cap on stage-2 steps per epoch; 0 = every pool text once"
    )
    round_kmeans_n_init: int = param(3, ge=1, help="K-means restarts on the pool each epoch")
    silhouette_sample: int = param(
        3000, ge=0, help="texts the silhouette score is computed on; 0 = the whole pool"
    )
    variant: str = param(
        "paper",
        choices=training.VARIANTS,
        help="paper: shuffled batches, best-silhouette model kept; official: the released code",
    )
    k_estimate_factor: float = param(
        0.0,
        ge=0,
        help="0 = the true K; > 0: estimate K from factor*K K-means clusters (drop small ones)",
    )


_PAPER = {
    "mode": "top-1",
    "precision": "fp32",
    "pooling": "mean",
    "max_length": 55,
    "pretrain_epochs": 100,
    "pretrain_patience": 20,
    "pretrain_lr": 5e-5,
    "pretrain_batch_size": 128,
    "pretrain_mlm": False,
    "normalize": False,
    "head_warmup_epochs": 100,
    "epochs": 100,
    "patience": 20,
    "lr": 5e-5,
    "batch_size": 128,
    "max_steps_per_epoch": 0,
    "round_kmeans_n_init": 10,
    "silhouette_sample": 0,
}

_SMOKE = {
    "mode": "top-1",
    "precision": "fp32",
    "max_length": 24,
    "pretrain_epochs": 2,
    "pretrain_patience": 1,
    "pretrain_batch_size": 32,
    "head_warmup_epochs": 2,
    "epochs": 2,
    "patience": 1,
    "batch_size": 16,
    "max_steps_per_epoch": 3,
    "round_kmeans_n_init": 1,
    "silhouette_sample": 500,
}


def estimate_k_by_cluster_size(
    features: np.ndarray, k_max: int, seed: int, *, n_init: int = 10
) -> int:
    """DeepAligned's estimate of the number of clusters: K-means with ``k_max`` clusters
    (``k_max`` = factor · K, deliberately too many), then drop every cluster smaller than the
    mean size N / k_max; K̂ = the clusters that remain. The count is the API's, which the
    ``cluster-size`` K estimator (``--k estimate:cluster-size``) runs too."""
    return count_large_clusters(features, k_max, seed, n_init=n_init).k


def align_to_previous(
    previous: np.ndarray | None, centers: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Relabel a K-means partition so that the cluster whose centroid matches previous
    centroid i (Hungarian on the Euclidean distances) is called i; returns the relabelled
    labels and the centroids in that order (the next epoch's ``previous``). Without previous
    centroids (the first epoch) the partition is returned as it is."""
    if previous is None:
        return np.asarray(labels, dtype=np.int64), np.asarray(centers)
    distances = np.linalg.norm(previous[:, None, :] - centers[None, :, :], axis=2)
    match = hungarian_mapping(distances)  # previous i -> new cluster match[i]
    new_to_old = np.empty(len(centers), dtype=np.int64)
    for old, new in match.items():
        new_to_old[new] = old
    ordered = np.stack([centers[match[i]] for i in range(len(previous))])
    return new_to_old[np.asarray(labels)], ordered


class DeepAligned(Method):
    name = "deep-aligned"
    description = (
        "DeepAligned (Zhang et al., AAAI 2021): CE pre-training on labeled texts, then each "
        "epoch K-means on dense+tanh features, Hungarian-aligned centroids as pseudo-labels, "
        "one CE epoch, silhouette early stopping; K-means on test features. Defaults = the cpu "
        "preset (MiniLM, top-1 layer); presets: cpu, paper (GPU, bert-base-uncased), smoke"
    )
    version = "1"
    uses = ("encoder",)
    trains_encoder = True
    components = (
        Component("pretrain", "stage-1 CE pre-training and the head warm-up (paper: 'w/o Pre')"),
        Component(
            "align",
            "centroid alignment: each epoch's raw K-means labels with a re-initialised "
            "classifier instead (the paper's 'Reinit')",
        ),
    )
    Params = DeepAlignedParams
    presets = training.presets_for(DeepAlignedParams, paper=_PAPER, smoke=_SMOKE)

    @classmethod
    def cross_check(cls, params: DeepAlignedParams, num_classes: int | None = None) -> None:
        factor = params.k_estimate_factor
        if factor > 0 and num_classes is not None and int(factor * num_classes) < 2:
            raise GcdbenchError(
                f"k_estimate_factor={factor} gives fewer than 2 clusters for K={num_classes}; "
                "pass a larger factor (e.g. 2) or 0 for the true K."
            )

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: DeepAlignedParams = self.params
        self.cross_check(params, task.num_classes)
        with training.isolated_torch_rng(ctx.rng("torch")):
            setup = training.prepare_training(
                task, ctx, params, self.name, with_mtp=self.enabled("pretrain")
            )
        with training.isolated_torch_rng(ctx.rng("deep-aligned-torch")):
            stage = _Stage2(task, ctx, setup.mode, params, align=self.enabled("align"))
            warmup = stage.warm_up_head() if self.enabled("pretrain") else {"skipped": "ablated"}
            k_info = stage.choose_k()
            with ctx.timed("clustering_epochs"), ctx.reporter.stage("aligned clustering"):
                loop = stage.run()
            with ctx.timed("encode_test"), ctx.reporter.stage("encode test"):
                features = stage.features(setup.mode.encode_texts(task.test.texts))
        with ctx.timed("kmeans"):
            assignments = training.cluster_test(
                features, stage.k, ctx.seed, normalize=params.normalize
            )
        diagnostics = {
            "training": setup.diagnostics,
            "head_warmup": warmup,
            "k": k_info,
            **loop,
            "cuts": _cuts(params),
            "departures": _departures(params, setup.mode.name),
        }
        return MethodOutput(test_assignments=assignments, diagnostics=diagnostics)


class _Stage2:
    """The feature head, the classifier and the aligned-clustering epochs of one run."""

    def __init__(
        self,
        task: GCDTask,
        ctx: RunContext,
        mode: training.TrainingMode,
        params: DeepAlignedParams,
        *,
        align: bool,
    ) -> None:
        import torch

        self.task, self.ctx, self.mode, self.params, self.align = task, ctx, mode, params, align
        self.device = mode.backbone.device
        hidden = mode.backbone.hidden_size
        self.head = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.Tanh(), torch.nn.Dropout(HEAD_DROPOUT)
        ).to(self.device)
        self.k = task.num_classes
        self.generator = training.generator_for(ctx.rng("deep-aligned-train"), self.device)
        self.kmeans_rng = ctx.rng("deep-aligned-kmeans")

    # ---- features ---------------------------------------------------------------------
    def features(self, pooled: np.ndarray) -> np.ndarray:
        """z of pooled backbone features, eval mode (no dropout)."""
        import torch

        self.head.eval()
        with torch.no_grad():
            z = self.head(torch.as_tensor(pooled, device=self.device).float())
        return z.cpu().numpy()

    def pool_features(self) -> np.ndarray:
        return self.features(self.mode.extract())

    def _z(self, indices: np.ndarray) -> torch.Tensor:
        """z of pool texts with grad through the trainable layers and the head."""
        pooled = self.mode.embed(indices, augment=False, generator=self.generator)
        return self.head(pooled.float())

    # ---- stage 1's head ---------------------------------------------------------------
    def warm_up_head(self) -> dict[str, Any]:
        """CE on the labeled texts through head → Linear(h, n_known), the backbone frozen
        (its pre-trained pooled features computed once); the head state with the best dev
        accuracy is kept. Stands in for the official joint pre-training of backbone + head
        (the engine's pre-training has no head)."""
        import torch

        params, task = self.params, self.task
        if params.head_warmup_epochs == 0 or task.num_labeled == 0:
            return {"skipped": "no epochs" if task.num_labeled else "no labeled texts"}
        started = time.perf_counter()
        labeled = torch.as_tensor(
            self.mode.extract(np.arange(task.num_labeled)), device=self.device
        )
        labels = torch.as_tensor(task.labeled_y, dtype=torch.long, device=self.device)
        dev = torch.as_tensor(self.mode.encode_texts(task.dev.texts), device=self.device)
        dev_y = np.asarray(task.dev_y)
        classifier = torch.nn.Linear(labeled.shape[1], task.num_known).to(self.device)
        batch = params.pretrain_batch_size
        per_epoch = training.steps_per_epoch(task.num_labeled, batch)
        opt = training.make_optimisation(
            [self.head, classifier],
            [*self.head.parameters(), *classifier.parameters()],
            lr=params.pretrain_lr,
            total_steps=per_epoch * params.head_warmup_epochs,
        )
        rng = self.ctx.rng("deep-aligned-head")
        best_acc, best_epoch, best = -1.0, -1, _copy(self.head.parameters())
        accs: list[float] = []
        for epoch in range(params.head_warmup_epochs):
            self.head.train()
            order = rng.permutation(task.num_labeled)
            for start in range(0, task.num_labeled, batch):
                rows = torch.as_tensor(order[start : start + batch], device=self.device)
                logits = classifier(self.head(labeled[rows]))
                opt.step(torch.nn.functional.cross_entropy(logits, labels[rows]))
            self.head.eval()
            with torch.no_grad():
                predicted = classifier(self.head(dev)).argmax(1).cpu().numpy() if len(dev) else []
            acc = float((np.asarray(predicted) == dev_y).mean()) if len(dev_y) else 0.0
            accs.append(round(acc, 4))
            if acc > best_acc:
                best_acc, best_epoch, best = acc, epoch, _copy(self.head.parameters())
        _paste(self.head.parameters(), best)
        return {
            "epochs": len(accs),
            "best_epoch": best_epoch,
            "best_dev_acc": round(best_acc, 4),
            "dev_acc": accs,
            "duration_s": round(time.perf_counter() - started, 3),
        }

    def choose_k(self) -> dict[str, Any]:
        """The true K, or DeepAligned's estimate on the pre-trained pool features."""
        true_k = self.task.num_classes
        factor = self.params.k_estimate_factor
        if factor <= 0:
            return {"k": true_k, "true_k": true_k, "estimated": False}
        k_max = min(int(factor * true_k), self.mode.pool_size)
        seed = int(self.kmeans_rng.integers(2**31))
        with self.ctx.timed("estimate_k"):
            estimate = estimate_k_by_cluster_size(
                self._prepared(self.pool_features()),
                k_max,
                seed,
                n_init=self.params.round_kmeans_n_init,
            )
        # K-means and the silhouette score need two clusters at least.
        self.k = max(2, estimate)
        return {
            "k": self.k,
            "true_k": true_k,
            "estimated": True,
            "factor": factor,
            "k_max": k_max,
            "k_hat": estimate,
        }

    # ---- stage 2 ----------------------------------------------------------------------
    def _prepared(self, z: np.ndarray) -> np.ndarray:
        return training.l2_normalise(z) if self.params.normalize else z

    def _cluster(self) -> tuple[np.ndarray, np.ndarray, float, dict[str, float]]:
        """z of the pool, K-means (seeded per epoch) and the silhouette score of its
        partition, with the seconds each took."""
        from sklearn.metrics import silhouette_score

        clock = [time.perf_counter()]

        def lap() -> float:
            clock.append(time.perf_counter())
            return round(clock[-1] - clock[-2], 3)

        z = self._prepared(self.pool_features())
        extract_s = lap()
        fit = fit_kmeans(
            z, self.k, int(self.kmeans_rng.integers(2**31)), n_init=self.params.round_kmeans_n_init
        )
        kmeans_s = lap()
        sample = self.params.silhouette_sample
        try:
            score = float(
                silhouette_score(
                    z,
                    fit.labels,
                    sample_size=sample if 0 < sample < len(z) else None,
                    random_state=int(self.kmeans_rng.integers(2**31)),
                )
            )
        except ValueError:  # a sample holding a single cluster has no silhouette
            score = -1.0
        seconds = {"extract": extract_s, "kmeans": kmeans_s, "silhouette": lap()}
        return fit.labels, fit.centers, score, seconds

    def run(self) -> dict[str, Any]:
        import torch

        params = self.params
        pool = self.mode.pool_size
        classifier = torch.nn.Linear(self.mode.backbone.hidden_size, self.k).to(self.device)
        per_epoch = training.steps_per_epoch(pool, params.batch_size)
        if params.max_steps_per_epoch > 0:
            per_epoch = min(per_epoch, params.max_steps_per_epoch)
        opt = training.make_optimisation(
            [self.mode.backbone, self.head, classifier],
            [*self.mode.trainable_parameters(), *self.head.parameters(), *classifier.parameters()],
            lr=params.lr,
            total_steps=per_epoch * params.epochs,
        )
        order_rng = self.ctx.rng("deep-aligned-order")
        keep = [*self.mode.trainable_parameters(), *self.head.parameters()]
        best_score, best_epoch, best_state = -math.inf, -1, _copy(keep)
        wait, centers, previous = 0, None, None
        history: list[dict[str, Any]] = []
        stop = "epochs"
        with self.ctx.reporter.task("epochs", total=params.epochs) as advance:
            for epoch in range(params.epochs):
                clock = time.perf_counter()
                labels, new_centers, score, seconds = self._cluster()
                # The check runs before training, so epoch 0 scores the pre-trained model.
                if score > best_score:
                    best_score, best_epoch, best_state, wait = score, epoch, _copy(keep), 0
                else:
                    wait += 1
                    if wait >= params.patience:
                        _paste(keep, best_state)
                        stop = "patience"
                        history.append(_epoch_row(epoch, score, None, None, clock, seconds))
                        break
                if self.align:
                    labels, centers = align_to_previous(centers, new_centers, labels)
                else:
                    _reinitialise(classifier, opt)
                changed: float | None = (
                    None if previous is None else float(np.mean(labels != previous))
                )
                previous = labels
                loss = self._train_epoch(classifier, opt, labels, per_epoch, order_rng)
                row = _epoch_row(epoch, score, loss, changed, clock, seconds)
                history.append(row)
                self.ctx.reporter.message(
                    f"epoch {epoch + 1}/{params.epochs}: silhouette {score:.4f}, loss {loss:.4f}"
                )
                advance(1)
        kept = "last"
        if stop == "patience":
            kept = "best"
        elif params.variant == "paper":
            # The last epoch's training was never scored: score it, keep the better model.
            final = self._cluster()[2]
            history.append({"epoch": params.epochs, "silhouette": round(final, 5)})
            if final > best_score:
                best_score, best_epoch = final, params.epochs
            else:
                _paste(keep, best_state)
            kept = "best"
        self.mode.eval()
        self.head.eval()
        return {
            "epochs": history,
            "stop": {
                "reason": stop,
                "kept": kept,
                "best_epoch": best_epoch,
                "best_silhouette": round(best_score, 5),
                "steps_per_epoch": per_epoch,
                "optimizer_steps": opt.steps_taken,
            },
        }

    def _train_epoch(
        self,
        classifier: torch.nn.Module,
        opt: training.Optimisation,
        labels: np.ndarray,
        steps: int,
        order_rng: np.random.Generator,
    ) -> float:
        """One pass of CE on the aligned pseudo-labels of every pool text (official: in pool
        order; paper: shuffled)."""
        import torch

        pool = self.mode.pool_size
        batch = self.params.batch_size
        official = self.params.variant == "official"
        order = np.arange(pool) if official else order_rng.permutation(pool)
        targets = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        self.mode.train()
        self.head.train()
        classifier.train()
        total = 0.0
        for step in range(steps):
            idx = order[step * batch : (step + 1) * batch]
            logits = classifier(self._z(idx))
            rows = torch.as_tensor(idx, device=self.device)
            loss = torch.nn.functional.cross_entropy(logits, targets[rows])
            opt.step(loss)
            total += float(loss.detach())
        self.mode.eval()
        return total / max(steps, 1)


def _epoch_row(
    epoch: int,
    score: float,
    loss: float | None,
    changed: float | None,
    clock: float,
    seconds: dict[str, float],
) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch, "silhouette": round(score, 5)}
    if loss is not None:
        row["loss"] = round(loss, 5)
    if changed is not None:
        row["pseudo_labels_changed"] = round(changed, 4)
    row["duration_s"] = {**seconds, "total": round(time.perf_counter() - clock, 3)}
    return row


def _copy(parameters: Any) -> list[Any]:
    return [p.detach().clone() for p in parameters]


def _paste(parameters: Any, saved: list[Any]) -> None:
    import torch

    with torch.no_grad():
        for p, value in zip(list(parameters), saved, strict=True):
            p.copy_(value)


def _reinitialise(classifier: torch.nn.Module, opt: training.Optimisation) -> None:
    """The 'Reinit' ablation: a fresh classifier (and fresh Adam moments for it)."""
    import torch

    assert isinstance(classifier, torch.nn.Linear)
    classifier.reset_parameters()
    for p in classifier.parameters():
        opt.optimizer.state.pop(p, None)


def _cuts(params: DeepAlignedParams) -> list[str]:
    """What these parameters cut relative to the paper preset (empty for the paper preset)."""
    out = []
    names = {f.name for f in fields(params)}
    for key, paper_value in _PAPER.items():
        if key not in names or key in ("mode", "precision", "pooling", "max_length"):
            continue
        value = getattr(params, key)
        if value != paper_value:
            out.append(f"{key}={value} (paper {paper_value})")
    if params.precision != "fp32":
        out.append(f"precision {params.precision} autocast (paper fp32)")
    if params.silhouette_sample:
        out.append(
            f"silhouette score on a seeded sample of {params.silhouette_sample} pool texts "
            "(paper: the whole pool, O(N^2))"
        )
    return out


def _departures(params: DeepAlignedParams, mode: str) -> list[str]:
    out = [
        "pooling: mask-aware mean over real tokens (official: mean over all max_seq_len "
        "positions, padding included)"
        if params.pooling == "mean"
        else "pooling: [CLS] state (official: mean over all positions)",
        "feature head Linear(h,h)+tanh trained after the backbone's CE pre-training on its "
        "frozen features (official: trained jointly with the backbone in pre-training)",
        "AdamW with linear warm-up/decay sized by the steps that run (official: BertAdam, "
        "schedule sized for 100 epochs)",
        "every K-means is seeded (official: unseeded)",
    ]
    if mode != "top-1":
        out.append(f"trainable backbone part: {mode} (official: the last layer only)")
    if params.variant == "paper":
        out.append(
            "pseudo-label batches shuffled, best-silhouette model kept when the epoch cap ends "
            "training (official: pool order; the last model is evaluated)"
        )
    else:
        out.append(
            "variant official: pool-order batches; the last model is evaluated when patience "
            "never triggers"
        )
    return out


@hookimpl
def register_methods(register):
    register(DeepAligned)
