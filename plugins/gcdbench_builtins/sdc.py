"""``sdc``: Self-Debiasing Calibration (An, Lin, Nie, Tian, Shi, Wu, Wang, Chen — AAAI 2025,
arXiv 2412.12501; official code Lackel/SDC @8d496a5), as docs/methods/sdc.md describes it.

Stage 1 is the engine's MTP pre-training; its frozen result is also the *biased model* b(·)
(§1.3). Stage 2 trains the top layers and a cosine classifier over K classes initialised from
Hungarian-matched K-means centroids (§1.4). Every step, the training model's logits of an
unlabeled batch and of its random-token-replaced view are calibrated with the biased model's
logits (known part minus ω·β·ℓᵇ, novel part plus ω·β·ℓᵇM, ω from the biased model's
entropy), turned into swapped Sinkhorn targets, binarised for confident novel rows, and
trained with soft cross-entropy, plus CE on labeled texts, SupCon on labeled texts and
NT-Xent between the two views. The test texts are clustered by K-means (default) or assigned
to the classifier's argmax (§1.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api import (
    ClusterInfo,
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
from gcdbench.api.toolkit import fit_kmeans, hungarian_mapping, l2_normalise

if TYPE_CHECKING:
    import torch
    from torch import Tensor

#: β per dataset in the official data loader (``dataloader.py``); bolt's copy uses 0.05 for
#: the datasets the official code does not cover, and so do we
OFFICIAL_BETA = {"banking": 0.03, "clinc": 0.42, "hwu": 0.05}
OTHER_BETA = 0.05
#: hard-coded in the official ``train.py``
LOGIT_TEMPERATURE = 0.3  # normalised logits are divided by it in L_cel and L_ceu
CONTRAST_TEMPERATURE = 0.07  # L_con and L_scl
SCL_WEIGHT = 0.02
CON_WEIGHT = 0.01
FEATURE_DROPOUT = 0.1  # Dropout(0.1) on the pooled feature, in both official models
#: f_e decays 0.4 -> 0.3 and t_e rises 0.3 -> 0.4 over the training epochs (official: 80)
FACTOR_START, FACTOR_END = 0.4, 0.3
THRESHOLD_START, THRESHOLD_END = 0.3, 0.4
#: the official schedule length is int(n_lab / batch) * num_pretrain_epochs (100) while
#: training runs num_train_epochs (80) epochs of ceil(n_lab / batch) steps
OFFICIAL_SCHEDULE_EPOCHS = 100
OFFICIAL_TRAIN_EPOCHS = 80
PREDICTIONS = ("kmeans", "argmax")


def _beta_problem(value: Any) -> str | None:
    if value == -1 or (isinstance(value, int | float) and value >= 0):
        return None
    return "must be -1 (the official per-dataset value) or >= 0"


@dataclass(frozen=True)
class SDCParams(training.PretrainParams):
    """Stage 1 = :class:`training.PretrainParams` (MTP, shared cache); stage 2 below."""

    epochs: int = param(
        40, ge=1, help="stage-2 epochs; an epoch is one pass over the labeled texts (paper 80)"
    )
    batch_size: int = param(
        128, ge=1, help="labeled texts per step, and pool texts per step (paper 128)"
    )
    lr: float = param(1e-4, gt=0, help="stage-2 learning rate (AdamW, warm-up 10%; paper 5e-5)")
    beta: float = param(
        -1.0,
        check=_beta_problem,
        allowed="-1 or >= 0",
        help="debiasing strength β; -1 = official per dataset (banking .03, clinc .42, else .05)",
    )
    sinkhorn_epsilon: float = param(0.05, gt=0, help="Sinkhorn-Knopp ε (official 0.05)")
    sinkhorn_iterations: int = param(3, ge=1, help="Sinkhorn-Knopp iterations (official 3)")
    init_kmeans_n_init: int = param(
        3, ge=1, help="K-means restarts on the pool for the classifier init (paper 20)"
    )
    bias_c: float = param(
        1.0,
        gt=0,
        help="inverse L2 strength of the biased model's classifier, refit on frozen features",
    )
    train_layers: int = param(
        0, ge=0, help="stage 2 trains only the top N encoder layers (0 = all the mode trains)"
    )
    predict: str = param(
        "kmeans", choices=PREDICTIONS, help="test clusters: K-means on features, or argmax"
    )
    variant: str = param(
        "paper",
        choices=training.VARIANTS,
        help="paper, or the released code's faults (short LR schedule, biased-model dropout)",
    )


PRESETS = training.presets_for(
    SDCParams,
    paper={
        "pooling": "mean",  # SDC averages the last layer's token states
        "pretrain_batch_size": 128,
        "epochs": 80,
        "batch_size": 128,
        "lr": 5e-5,
        "init_kmeans_n_init": 20,
        "train_layers": 4,  # "encoder.layer.8"-"11" of bert-base
    },
    smoke={"epochs": 2, "batch_size": 8, "init_kmeans_n_init": 1},
)

#: always in effect (docs/methods/sdc.md §6)
DEPARTURES = (
    "pooling: mask-aware mean over real tokens ([CLS] and [SEP] included, padding excluded); "
    "the official code averages positions 1..L, dropping [CLS] and keeping padding",
    "biased model: the engine's MTP discards its classifier, so b(.) is the frozen pre-trained "
    "backbone plus an n_known-way softmax regression refit on the frozen features of the "
    "labeled texts (L2, C = bias_c); its pool logits are computed once",
    "targets come from the detached logits of the gradient passes of the two views; the "
    "official code runs two extra no-grad passes of the same views (other dropout masks)",
    "the schedules f_e and t_e span the run's epochs (official: 80 hard-coded, = its epochs)",
    "no unused extra RTR view of the labeled batch (the official banking-only 'weird bug')",
    "SupCon skips anchors without a positive in the batch (the official code returns NaN)",
    "test K-means: n_init 10, random_state = the run seed (official: n_init 20, unseeded)",
)
VARIANT_FAULTS = (
    "official: LR schedule of int(n_lab/batch)*epochs*100/80 steps while ceil(n_lab/batch)"
    "*epochs run (at BANKING 25%, batch 128: 100 of 160 steps, the rest at lr 0)",
    "official: the biased model's pooled Dropout(0.1) stays active (never put in eval mode)",
)


class SDC(Method):
    name = "sdc"
    description = (
        "SDC (An et al., AAAI 2025): MTP, then a cosine prototype classifier trained on "
        "swapped Sinkhorn targets of logits calibrated by the frozen biased model; K-means "
        "on test features. Defaults = the cpu preset; presets: cpu, paper (GPU), smoke"
    )
    version = "1"
    uses = ("encoder",)
    trains_encoder = True
    components = (
        Component("mtp", "MTP pre-training (stage 2 and the biased model use the raw encoder)"),
        Component("debias", "the entropy-weighted logit calibration by the biased model (β=0)"),
        Component("transfer", "the novel-part term ω·β·ℓᵇM (only the known part is debiased)"),
        Component("hard-novel", "binarising the targets of confident novel rows"),
        Component("contrastive", "the SupCon (labeled) and NT-Xent (two views) terms"),
    )
    Params = SDCParams
    presets = PRESETS

    @classmethod
    def cross_check(cls, params: SDCParams, num_classes: int | None = None) -> None:
        if params.mode == "head" and params.predict == "kmeans":
            raise GcdbenchError(
                "method 'sdc' with mode=head leaves the features K-means clusters unchanged; "
                "pass -p mode=top-2, or -p predict=argmax."
            )

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: SDCParams = self.params
        self.cross_check(params, task.num_classes)
        with training.isolated_torch_rng(ctx.rng("torch")):
            setup = training.prepare_training(
                task, ctx, params, self.name, with_mtp=self.enabled("mtp")
            )
        mode = setup.mode
        beta = resolve_beta(params.beta, task.dataset) if self.enabled("debias") else 0.0
        with ctx.timed("initialise"), ctx.reporter.stage("initialise"):
            pool = mode.extract()  # the frozen biased model's pool features
            bias = fit_bias_classifier(
                pool[: task.num_labeled], task.labeled_y, task.num_known, params.bias_c
            )
            bias_dev = bias.accuracy(mode.encode_texts(task.dev.texts), task.dev_y)
            init = initial_prototypes(
                pool,
                task.labeled_y,
                task.num_known,
                task.num_classes,
                seed=int(ctx.rng("init-kmeans").integers(2**31 - 1)),
                n_init=params.init_kmeans_n_init,
                normalize=params.normalize,
            )
        with training.isolated_torch_rng(ctx.rng("sdc-torch")):
            with ctx.timed("train"), ctx.reporter.stage("train"):
                trainer = Stage2(task, mode, params, self.ablations, beta, bias, init, pool)
                history = trainer.train(ctx.rng("sdc"), ctx)
            with ctx.timed("encode_test"), ctx.reporter.stage("encode test"):
                features = mode.encode_texts(task.test.texts)
                argmax = trainer.predict(features)
        with ctx.timed("kmeans"):
            kmeans = training.cluster_test(
                features, task.num_classes, ctx.seed, normalize=params.normalize
            )
        chosen = kmeans if params.predict == "kmeans" else argmax
        clusters = {}
        if params.predict == "argmax":  # classifier row j < n_known starts at known class j
            clusters = {
                j: ClusterInfo(task.known_class_names[j], "known class (classifier row)")
                for j in range(task.num_known)
            }
        diagnostics = {
            "training": setup.diagnostics,
            "beta": beta,
            "biased_model": {**bias.describe(), "dev_acc": round(bias_dev, 4)},
            "init": init.describe(),
            "stage2": history,
            "prediction": describe_predictions(params.predict, kmeans, argmax, task.num_known),
            "cuts": cuts(params),
            "departures": [*DEPARTURES, *(VARIANT_FAULTS if params.variant == "official" else ())],
        }
        return MethodOutput(
            test_assignments=chosen.astype(np.int64), clusters=clusters, diagnostics=diagnostics
        )


# ---- parameters -------------------------------------------------------------------------


def resolve_beta(beta: float, dataset: str) -> float:
    return float(beta) if beta >= 0 else OFFICIAL_BETA.get(dataset, OTHER_BETA)


def cuts(params: SDCParams) -> list[str]:
    """What these parameters run below the paper preset (the official settings)."""
    paper = PRESETS["paper"]
    out = [
        f"{name}={getattr(params, name)!r} (paper preset {value!r})"
        for name, value in paper.items()
        if getattr(params, name) != value
    ]
    return out


def schedule(epoch: int, epochs: int, start: float, end: float) -> float:
    """start·(end/start)^(epoch/epochs): the official ``exponential_decay`` (m = epochs)."""
    return start * (end / start) ** (epoch / epochs)


# ---- the biased model b(.) --------------------------------------------------------------


@dataclass
class BiasClassifier:
    """The biased model's n_known-way head: logits = features @ weight.T + bias."""

    weight: np.ndarray  # [n_known, d]
    bias: np.ndarray  # [n_known]
    train_acc: float
    c: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        if len(labels) == 0:
            return 0.0
        return float((self.logits(features).argmax(1) == np.asarray(labels)).mean())

    def describe(self) -> dict[str, Any]:
        return {
            "fit": "softmax regression on frozen pre-trained features of the labeled texts",
            "c": self.c,
            "train_acc": round(self.train_acc, 4),
            "weight_norm": round(float(np.linalg.norm(self.weight)), 4),
        }


def fit_bias_classifier(
    features: np.ndarray, labels: np.ndarray, num_known: int, c: float, max_iter: int = 200
) -> BiasClassifier:
    """Multinomial logistic regression (Σ CE + ‖W‖²/(2c), scikit-learn's C convention) by
    full-batch L-BFGS from zero weights: deterministic, and classes without a labeled text
    simply get low logits (scikit-learn would refuse fewer than two classes)."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    weight = torch.zeros(num_known, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_known, dtype=torch.float64, requires_grad=True)
    if len(y):
        optimiser = torch.optim.LBFGS(
            [weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe"
        )

        def closure() -> Tensor:
            optimiser.zero_grad()
            loss = F.cross_entropy(x @ weight.T + bias, y, reduction="sum")
            loss = loss + weight.pow(2).sum() / (2 * c)
            loss.backward()
            return loss

        optimiser.step(closure)
    head = BiasClassifier(
        weight.detach().numpy().astype(np.float32), bias.detach().numpy().astype(np.float32), 0.0, c
    )
    head.train_acc = head.accuracy(np.asarray(features), labels)
    return head


# ---- initialisation: prototypes, classifier rows, transfer matrix -----------------------


@dataclass
class Init:
    """Classifier rows (matched centroids in known-class order, then the unmatched ones) and
    the transfer matrix M (n_known x n_novel)."""

    rows: np.ndarray  # [K, d]
    transfer: np.ndarray  # [n_known, K - n_known]
    matched_distance: float
    unlabeled_classes: int
    cluster_sizes: np.ndarray

    def describe(self) -> dict[str, Any]:
        novel = self.transfer.shape[1]
        return {
            "matched_mean_distance": round(self.matched_distance, 4),
            "known_classes_without_labeled_text": self.unlabeled_classes,
            "pool_cluster_sizes": {
                "min": int(self.cluster_sizes.min()),
                "max": int(self.cluster_sizes.max()),
            },
            # near 1/n_novel: the official softmax over cosines has temperature 1
            "transfer_row_max_mean": round(float(self.transfer.max(1).mean()), 5)
            if novel
            else None,
            "transfer_uniform": round(1.0 / novel, 5) if novel else None,
        }


def initial_prototypes(
    features: np.ndarray,
    labeled_y: np.ndarray,
    num_known: int,
    num_classes: int,
    *,
    seed: int,
    n_init: int,
    normalize: bool,
) -> Init:
    """K-means on the whole pool; Hungarian (Euclidean) between the labeled class means and
    the centroids; rows = [matched centroids in known-class order; the rest] (DPN-style)."""
    space = l2_normalise(features) if normalize else np.asarray(features)
    labeled_y = np.asarray(labeled_y)
    labeled = space[: len(labeled_y)]
    present = [c for c in range(num_known) if (labeled_y == c).any()]
    means = np.zeros((num_known, space.shape[1]), dtype=np.float64)
    for c in present:
        means[c] = labeled[labeled_y == c].mean(0)
    fit = fit_kmeans(space, num_classes, seed, n_init=n_init)
    centers = np.asarray(fit.centers, dtype=np.float64)
    distance = np.linalg.norm(means[present][:, None, :] - centers[None, :, :], axis=-1)
    mapping = hungarian_mapping(distance)
    order: list[int | None] = [None] * num_known
    for row, column in mapping.items():
        order[present[row]] = column
    left = [j for j in range(num_classes) if j not in set(mapping.values())]
    # A known class without any labeled text (tiny labeled ratios) takes a leftover centroid.
    known = [column if column is not None else left.pop(0) for column in order]
    rows = centers[known + left]
    novel = l2_normalise(rows[num_known:])
    transfer = _row_softmax(l2_normalise(means) @ novel.T) if len(novel) else novel.T[:0]
    transfer = transfer.reshape(num_known, num_classes - num_known)
    matched = float(np.mean([distance[r, c] for r, c in mapping.items()])) if mapping else 0.0
    return Init(
        rows=rows.astype(np.float32),
        transfer=transfer.astype(np.float32),
        matched_distance=matched,
        unlabeled_classes=num_known - len(present),
        cluster_sizes=np.bincount(fit.labels, minlength=num_classes),
    )


def _row_softmax(x: np.ndarray) -> np.ndarray:
    # The official ``F.softmax(optimal_map)`` without dim picks dim 1 for a 2-D tensor.
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ---- stage 2 ----------------------------------------------------------------------------


def stage2_parameters(mode: training.TrainingMode, top: int) -> list[torch.nn.Parameter]:
    """The backbone parameters stage 2 trains: what the mode trains, without the MLM head
    (nothing in stage 2 reads it), and with ``top`` > 0 only the top ``top`` encoder layers
    (the official code trains ``encoder.layer.8``-``11`` of bert-base)."""
    trainable = {id(p) for p in mode.trainable_parameters()}
    encoder = mode.backbone.encoder_model
    if top:
        layers = list(encoder.encoder.layer)[-top:]
        candidates = [p for layer in layers for p in layer.parameters()]
    else:
        candidates = list(encoder.parameters())
    return [p for p in candidates if id(p) in trainable]


def schedule_length(variant: str, num_labeled: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps the LR schedule spans: those that run (paper), or the official
    int(n_lab / batch) * 100 for 80 epochs, scaled to the run's epochs (official)."""
    if variant == "official":
        scaled = round(epochs * OFFICIAL_SCHEDULE_EPOCHS / OFFICIAL_TRAIN_EPOCHS)
        return (num_labeled // batch_size) * scaled
    return training.steps_per_epoch(num_labeled, batch_size) * epochs


def calibrate(
    logits: Tensor,
    bias_logits: Tensor,
    omega: Tensor,
    transfer: Tensor | None,
    beta: float,
    num_known: int,
) -> Tensor:
    """A calibrated copy of ``logits``: known part − ω·β·ℓᵇ (category bias), novel part
    + ω·β·ℓᵇM (category confusion; skipped when ``transfer`` is None)."""
    out = logits.clone()
    if beta == 0:
        return out
    out[:, :num_known] -= omega * bias_logits * beta
    if transfer is not None and out.shape[1] > num_known:
        out[:, num_known:] += omega * (bias_logits @ transfer) * beta
    return out


def binarise(targets: Tensor, threshold: float, num_known: int) -> int:
    """In place: rows whose largest novel entry reaches ``threshold`` become 0/1 (entries
    >= it: the "hard novel" targets); returns how many rows changed."""
    if targets.shape[1] <= num_known:
        return 0
    rows = targets[:, num_known:].max(1).values >= threshold
    targets[rows] = (targets[rows] >= threshold).float()
    return int(rows.sum())


def soft_cross_entropy(targets: Tensor, logits: Tensor) -> Tensor:
    """−mean Σ targets · log softmax(normalise(logits) / 0.3) (official L_cel / L_ceu)."""
    import torch.nn.functional as F

    scaled = F.normalize(logits, dim=1) / LOGIT_TEMPERATURE
    return -(targets * F.log_softmax(scaled, dim=1)).sum(1).mean()


def _dropout(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Inverted dropout drawn from ``generator`` (never the global RNG)."""
    import torch

    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class Stage2:
    """The SDC training loop on top of a :class:`training.TrainingMode`."""

    def __init__(
        self,
        task: GCDTask,
        mode: training.TrainingMode,
        params: SDCParams,
        ablations: frozenset[str],
        beta: float,
        bias: BiasClassifier,
        init: Init,
        pool: np.ndarray,
    ) -> None:
        import torch

        self.task, self.mode, self.params = task, mode, params
        self.ablations, self.beta = ablations, beta
        device = mode.backbone.device
        self.device = device
        self.classifier = torch.nn.Linear(pool.shape[1], task.num_classes, bias=False).to(device)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.as_tensor(init.rows, device=device))
        self._normalise_rows()
        self.transfer = torch.as_tensor(init.transfer, device=device)
        self.bias_weight = torch.as_tensor(bias.weight, device=device)
        self.bias_bias = torch.as_tensor(bias.bias, device=device)
        self.pool = torch.as_tensor(pool, device=device)
        self.backbone_params = stage2_parameters(mode, params.train_layers)

    # -- training -------------------------------------------------------------------------
    def _train_mode(self) -> None:
        """Train mode, then only stage 2's parameters take gradients (mode.train() turns on
        everything the mode trains)."""
        self.mode.train()
        keep = {id(p) for p in self.backbone_params}
        for p in self.mode.backbone.parameters():
            p.requires_grad_(id(p) in keep)
        self.classifier.train()

    def _normalise_rows(self) -> None:
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            self.classifier.weight.copy_(F.normalize(self.classifier.weight, dim=1))

    def train(self, rng: np.random.Generator, ctx: RunContext) -> dict[str, Any]:
        import torch

        params, task = self.params, self.task
        per_epoch = training.steps_per_epoch(task.num_labeled, params.batch_size)
        scheduled = schedule_length(
            params.variant, task.num_labeled, params.batch_size, params.epochs
        )
        self._train_mode()
        optimisation = training.make_optimisation(
            [self.mode.backbone, self.classifier],
            [*self.backbone_params, *self.classifier.parameters()],
            lr=params.lr,
            total_steps=scheduled,
        )
        optimisation.clip_norm = math.inf  # the official stage 2 does not clip gradients
        generator = training.generator_for(rng, self.device)
        pool_batches = training.cycling_batches(len(task.train), params.batch_size, rng)
        labeled_y = torch.as_tensor(task.labeled_y, dtype=torch.long, device=self.device)
        epochs: list[dict[str, Any]] = []
        with ctx.reporter.task("SDC epochs", total=params.epochs) as advance:
            for epoch in range(params.epochs):
                self._train_mode()
                factor = schedule(epoch, params.epochs, FACTOR_START, FACTOR_END)
                threshold = schedule(epoch, params.epochs, THRESHOLD_START, THRESHOLD_END)
                order = rng.permutation(task.num_labeled)
                sums: dict[str, float] = {}
                for step in range(per_epoch):
                    labeled = order[step * params.batch_size : (step + 1) * params.batch_size]
                    values, loss = self.step(
                        labeled, next(pool_batches), labeled_y, factor, threshold, generator
                    )
                    values["grad_norm"] = optimisation.step(loss)
                    for name, value in values.items():
                        sums[name] = sums.get(name, 0.0) + value
                epochs.append(
                    {
                        "epoch": epoch,
                        "factor": round(factor, 4),
                        "threshold": round(threshold, 4),
                        **{k: round(v / per_epoch, 5) for k, v in sums.items()},
                        "lr_end": optimisation.learning_rate,
                    }
                )
                advance(1)
        self.mode.eval()
        self.classifier.eval()
        return {
            "labeled_texts": task.num_labeled,
            "steps_per_epoch": per_epoch,
            "optimizer_steps": optimisation.steps_taken,
            "scheduled_steps": optimisation.total_steps,
            "trained_parameters": sum(p.numel() for p in self.backbone_params),
            "epochs": epochs,
            "summary": summarise(epochs),
        }

    def step(
        self,
        labeled: np.ndarray,
        unlabeled: np.ndarray,
        labeled_y: Tensor,
        factor: float,
        threshold: float,
        generator: torch.Generator,
    ) -> tuple[dict[str, float], Tensor]:
        """One SDC step: the loss and its terms' values."""
        import torch
        import torch.nn.functional as F

        self._normalise_rows()  # the official code re-normalises the rows before every step
        omega, bias_logits = self.biased(unlabeled, generator)
        feats1, logits1 = self.forward(unlabeled, False, generator)
        feats2, logits2 = self.forward(unlabeled, True, generator)  # the RTR view
        with torch.no_grad():
            beta, known = self.beta, self.task.num_known
            transfer = None if "transfer" in self.ablations else self.transfer
            adjusted1 = calibrate(logits1.detach(), bias_logits, omega, transfer, beta, known)
            adjusted2 = calibrate(logits2.detach(), bias_logits, omega, transfer, beta, known)
            # swapped: each view learns the other view's calibrated assignment
            target1 = training.sinkhorn(
                adjusted2, self.params.sinkhorn_epsilon, self.params.sinkhorn_iterations
            )
            target2 = training.sinkhorn(
                adjusted1, self.params.sinkhorn_epsilon, self.params.sinkhorn_iterations
            )
            hard = 0
            if "hard-novel" not in self.ablations:
                hard = binarise(target1, threshold, known) + binarise(target2, threshold, known)
        loss_ceu = soft_cross_entropy(torch.cat([target1, target2]), torch.cat([logits1, logits2]))
        values = {"ceu": float(loss_ceu.detach()), "hard_novel": hard / (2 * len(unlabeled))}
        loss = (1 - factor) * loss_ceu
        if len(labeled):
            feats_l, logits_l = self.forward(labeled, False, generator)
            y = labeled_y[torch.as_tensor(labeled, device=self.device)]
            one_hot = F.one_hot(y, self.task.num_classes).float()
            loss_cel = soft_cross_entropy(one_hot, logits_l)
            loss = loss + factor * loss_cel
            values["cel"] = float(loss_cel.detach())
            if "contrastive" not in self.ablations:
                same = y.unsqueeze(0) == y.unsqueeze(1)
                unit = F.normalize(feats_l, dim=1).unsqueeze(1)
                loss_scl = training.supcon_loss(unit, same, CONTRAST_TEMPERATURE)
                loss = loss + SCL_WEIGHT * loss_scl
                values["scl"] = float(loss_scl.detach())
        if "contrastive" not in self.ablations:
            loss_con = training.two_view_info_nce(feats1, feats2, CONTRAST_TEMPERATURE)
            loss = loss + CON_WEIGHT * loss_con
            values["con"] = float(loss_con.detach())
        values["omega"] = float(omega.mean())
        values["total"] = float(loss.detach())
        return values, loss

    def forward(
        self, indices: np.ndarray, augment: bool, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Pooled feature after Dropout(0.1), and the cosine classifier's logits."""
        import torch.nn.functional as F

        pooled = self.mode.embed(indices, augment=augment, generator=generator)
        feats = _dropout(pooled, FEATURE_DROPOUT, generator)
        return feats, self.classifier(F.normalize(feats, dim=1))

    def biased(self, indices: np.ndarray, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """ω = sigmoid(H − max H) and the biased logits of pool texts ``indices``."""
        import torch

        with torch.no_grad():
            feats = self.pool[torch.as_tensor(indices, device=self.device)]
            if self.params.variant == "official":
                feats = _dropout(feats, FEATURE_DROPOUT, generator)
            logits = feats @ self.bias_weight.T + self.bias_bias
            log_probs = torch.log_softmax(logits, dim=1)
            entropy = -(log_probs.exp() * log_probs).sum(1)
            omega = torch.sigmoid(entropy - entropy.max()).unsqueeze(1)
        return omega, logits

    # -- prediction -----------------------------------------------------------------------
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Argmax of the cosine classifier on (eval) test features."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            x = F.normalize(torch.as_tensor(features, device=self.device), dim=1)
            weight = F.normalize(self.classifier.weight, dim=1)
            return (x @ weight.T).argmax(1).cpu().numpy().astype(np.int64)


def summarise(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """First and last epoch's mean of every logged value."""
    if not epochs:
        return {}
    keys = [k for k in epochs[0] if k not in ("epoch",)]
    return {k: {"first": epochs[0][k], "last": epochs[-1].get(k)} for k in keys}


def describe_predictions(
    chosen: str, kmeans: np.ndarray, argmax: np.ndarray, num_known: int
) -> dict[str, Any]:
    """Both predictions side by side: cluster counts and how far they agree (one-to-one
    Hungarian match of the two assignments), without any gold label."""
    from sklearn.metrics import adjusted_rand_score

    table = np.zeros((int(kmeans.max()) + 1, int(argmax.max()) + 1), dtype=np.int64)
    np.add.at(table, (kmeans, argmax), 1)
    mapping = hungarian_mapping(table, maximize=True)
    agree = sum(int(table[r, c]) for r, c in mapping.items()) / max(len(kmeans), 1)
    return {
        "default": chosen,
        "kmeans_clusters": len(np.unique(kmeans)),
        "argmax_clusters": len(np.unique(argmax)),
        "argmax_known_share": round(float((argmax < num_known).mean()), 4),
        "matched_agreement": round(agree, 4),
        "ari_between": round(float(adjusted_rand_score(kmeans, argmax)), 4),
    }


@hookimpl
def register_methods(register: Any) -> None:
    register(SDC)


__all__ = ["SDC", "SDCParams"]
