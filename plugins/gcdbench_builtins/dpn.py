"""``dpn``: Decoupled Prototypical Network (An, Tian, Zheng, Ding, Wang, Chen — AAAI 2023;
official code Lackel/DPN). docs/methods/dpn.md describes it and its departures.

Stage 1 is the engine's MTP pre-training. Stage 2, once: labeled prototypes μˡ (class means),
one seeded K-means of the pool, Hungarian matching of μˡ with the K centroids, which become
the fixed prototypes μᵘ with the matched ones first (so a pseudo-label < n_known means
"aligned with a known class"). Then each epoch μˡ ← m·μˡ + (1 − m)·(current class means),
and each step L_u + γ·L_l + L_ce (semantic-aware prototypical learning, SPL). Test: seeded
K-means with the true K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api import (
    Component,
    GCDTask,
    Method,
    MethodOutput,
    RunContext,
    hookimpl,
    param,
    training,
)
from gcdbench_builtins.prototypes import (
    PoolClustering,
    PrototypeParams,
    StageTwo,
    align_clusters,
    centroid_distances,
    check_mode,
    class_means,
    cosine,
    cuts,
    euclidean,
    per_dataset,
    run_prototype_method,
)

if TYPE_CHECKING:
    import torch

#: official `data.py` overrides (banking, clinc, stackoverflow); other datasets: banking's
PAPER_EPOCHS = {"banking": 60, "clinc": 80, "stackoverflow": 10}
PAPER_GAMMA = {"banking": 10.0, "clinc": 10.0, "stackoverflow": 90.0}


@dataclass(frozen=True)
class DPNParams(PrototypeParams):
    gamma: float = param(
        0.0, ge=0, help="weight of L_l; 0 = the official value (10; stackoverflow 90)"
    )
    momentum: float = param(
        0.9, ge=0, le=1, help="EMA momentum of the labeled prototypes (per epoch)"
    )


PAPER = {
    "mode": "full",
    "train_top": 3,  # BERT layers 9-11 (the pooler has no counterpart here)
    "pooling": "cls",
    "normalize": False,
    "pretrain_lr": 1e-5,  # the official pre-training runs at args.lr, not lr_pre
    "pretrain_batch_size": 32,
    "epochs": 0,
    "batch_size": 256,
    "lr": 1e-5,
    "max_steps_per_epoch": 0,
    "kmeans_n_init": 20,
    "precision": "fp32",
    "pretrain_epochs": 100,
    "pretrain_patience": 20,
}
SMOKE = {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 3, "kmeans_n_init": 1}

DEPARTURES = [
    "stage 1 is the engine's MTP (CE on labeled batches + MLM on pool batches, dev early "
    "stopping, cached); the official MLM call swaps attention mask and token-type ids, which "
    "is not reproduced",
    "features z are the backbone's pooled features (the run's pooling), without the "
    "official fresh dense+tanh layer; L2-normalised when normalize=true",
    "the pool K-means is seeded with the run seed (official: unseeded)",
    "the final test K-means is seeded with the run seed, n_init 10 (official: unseeded, 20)",
    "Euclidean distances clamp the square before the root (official: NaN risk)",
    "pool batches are shuffled each epoch (official: file order)",
    "AdamW with linear warm-up/decay over the steps that run, grad-norm clip 1.0 (official: "
    "BertAdam scheduled for 100 epochs whatever the epoch count)",
]


class DPNStage(StageTwo):
    def __init__(self, *args: Any, gamma: float, momentum: float, **kwargs: Any) -> None:
        import torch

        super().__init__(*args, **kwargs)
        task, pool = self.task, self.pool
        self.gamma, self.momentum = gamma, momentum
        labeled = pool.features[: task.num_labeled]
        proto_l = class_means(labeled, np.asarray(task.labeled_y), task.num_known)
        order, relabel = align_clusters(proto_l, pool.centers)
        matched = centroid_distances(proto_l, pool.centers[order[: task.num_known]])
        self.proto_u = self.tensor(pool.centers[order]).float()  # fixed for the whole run
        self.proto_l = proto_l.astype(np.float64)  # EMA-updated each epoch
        self.pseudo = self.tensor(relabel[pool.labels]).long()
        hidden = self.mode.backbone.hidden_size
        # K-way classifier: the labeled CE targets (known ids) share the aligned cluster ids
        self.classifier = training.KnownClassifier(hidden, task.num_classes).to(self.device)
        self.labeled_y = torch.as_tensor(np.asarray(task.labeled_y), dtype=torch.long)
        self.info = {
            "alignment": {
                "matched_distance_mean": round(float(np.diag(matched).mean()), 4)
                if task.num_known
                else None,
                "pool_known_aligned_share": round(
                    float((relabel[pool.labels] < task.num_known).mean()), 4
                ),
            },
            "gamma": gamma,
        }

    def modules(self) -> list[torch.nn.Module]:
        return [self.classifier]

    def start_epoch(self, epoch: int) -> None:
        # μˡ ← m·μˡ + (1 − m)·mean; the official loop recomputes the means before epoch 1 too
        m = self.momentum
        self.proto_l = m * self.proto_l + (1 - m) * self.labeled_prototypes()

    def step(self, batch: np.ndarray, labeled: np.ndarray) -> dict[str, torch.Tensor]:
        import torch.nn.functional as F

        z = self.features(batch)
        proto_l = self.tensor(self.proto_l).float()
        known = (self.pseudo[batch] < self.task.num_known).float()
        tau = self.params.temperature
        # Each text's semantic-weighted soft assignment over the prototypes (Lackel/DPN
        # from f5c7d4e on; its first commit normalised over the batch on inner products).
        s_u = F.softmax(cosine(z, self.proto_u) / tau, dim=1)
        loss_u = (euclidean(z, self.proto_u) * s_u).sum(1).mean()
        cos_l = cosine(z, proto_l)
        s_l = F.softmax(cos_l / tau, dim=1)
        loss_l = (((1 - cos_l) * s_l).sum(1) * known).mean()
        terms = {"u": loss_u}
        if self.enabled("known-term"):
            terms["l"] = self.gamma * loss_l
        if self.enabled("ce") and len(labeled):
            logits = self.classifier(self.features(labeled))
            terms["ce"] = F.cross_entropy(logits, self.labeled_y[labeled].to(self.device))
        return terms


class DPN(Method):
    name = "dpn"
    description = (
        "DPN (An et al., AAAI 2023): MTP, then one seeded K-means of the pool, Hungarian "
        "alignment of centroids with labeled prototypes, SPL losses to fixed cluster and EMA "
        "labeled prototypes + CE; K-means on test features. Presets: cpu, paper (GPU), smoke"
    )
    version = "1"
    uses = ("encoder",)
    trains_encoder = True
    components = (
        Component("known-term", "L_l, the pull of known-aligned texts to labeled prototypes"),
        Component("ce", "the cross-entropy term on labeled texts in stage 2"),
    )
    Params = DPNParams
    presets = training.presets_for(DPNParams, paper=PAPER, smoke=SMOKE)

    @classmethod
    def cross_check(cls, params: DPNParams, num_classes: int | None = None) -> None:
        check_mode(cls.name, params)

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: DPNParams = self.params
        self.cross_check(params, task.num_classes)
        epochs = int(per_dataset(params.epochs, PAPER_EPOCHS, task.dataset, 60))
        gamma = per_dataset(params.gamma, PAPER_GAMMA, task.dataset, 10.0)

        def make_stage(
            task: GCDTask,
            params: DPNParams,
            mode: training.TrainingMode,
            pool: PoolClustering,
            generator: torch.Generator,
            enabled: Any,
        ) -> DPNStage:
            return DPNStage(
                task, params, mode, pool, generator, enabled, gamma=gamma, momentum=params.momentum
            )

        assignments, diagnostics = run_prototype_method(
            task, ctx, params, self.name, make_stage, epochs=epochs, enabled=self.enabled
        )
        departures = list(DEPARTURES)
        diagnostics["cuts"] = cuts(params, PAPER) + (
            [f"epochs={epochs} (official {PAPER_EPOCHS.get(task.dataset, 60)})"]
            if epochs != PAPER_EPOCHS.get(task.dataset, 60)
            else []
        )
        diagnostics["departures"] = departures
        return MethodOutput(test_assignments=assignments, diagnostics=diagnostics)


@hookimpl
def register_methods(register):
    register(DPN)
