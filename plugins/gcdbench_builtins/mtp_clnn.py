"""``mtp-clnn``: MTP-CLNN (Zhang, Zhang, Zhan, Wu & Lam, ACL 2022; docs/methods/mtp-clnn.md).

Stage 1 is the engine's MTP (CE on the labeled known-class texts + MLM on the pool, dev early
stopping; cached and shared with ``mtp``/``no-llm``). Stage 2, CLNN, is the engine's round
loop with the NCL term alone: every ``update_per_epoch`` epochs the pool's neighbours are
mined again; each step contrasts two random-token-replaced views (a text and one of its k
neighbours) under the kNN + same-label adjacency. No CE, no pseudo-labels, no alignment.
Then seeded K-means with the true K on the test features.

The plugin composes the engine's pieces itself (rather than calling ``train_and_cluster``)
only so that the rounds can see a relabeled copy of the task: the released code's same-label
rule (``--variant official``) and the ``label-positives`` ablation are both expressed as
label ids that never pair up (mtp-clnn.md §6).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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

#: neighbour search: "inner" is the paper's (faiss inner product on raw [CLS] vectors);
#: "cosine" equals it on L2-normalised features (the cpu preset's ``normalize``)
KNN_METRICS = ("cosine", "inner")
#: CLNN learning rate per dataset in the official scripts (scripts/clnn_*.sh); others 1e-5
PAPER_LR: dict[str, float] = {"stackoverflow": 1e-6}
DEFAULT_PAPER_LR = 1e-5
#: the official settings the cpu preset departs from (for diagnostics["cuts"])
PAPER_CLNN = {
    "mode": "full",
    "pooling": "cls",
    "epochs": 34,
    "batch_size": 128,
    "update_per_epoch": 5,
    "max_steps_per_epoch": 0,
    "pretrain_epochs": 100,
    "pretrain_patience": 20,
    "pretrain_batch_size": 64,
    "normalize": False,
    "precision": "fp32",
}


def _inherited(name: str, default: Any) -> Any:
    """RoundParams' field ``name`` (its rule and help) with another default."""
    (parent,) = [f for f in dataclasses.fields(training.RoundParams) if f.name == name]
    return dataclasses.field(default=default, metadata=parent.metadata)


@dataclass(frozen=True)
class MtpClnnParams(training.RoundParams):
    """The round loop's parameters with CLNN's loss (``ncl`` alone) and cpu-preset defaults.

    The pre-training fields keep the engine's cpu defaults, so the MTP result is shared with
    ``mtp`` and ``no-llm`` on the same split.
    """

    epochs: int = _inherited("epochs", 6)
    batch_size: int = _inherited("batch_size", 64)
    update_per_epoch: int = param(
        2, ge=1, help="mine the pool's neighbours again every N epochs (a round)"
    )
    max_steps_per_epoch: int = _inherited("max_steps_per_epoch", 60)
    # CLNN never reads the round's K-means (only its kNN lists); one restart keeps it cheap
    round_kmeans_n_init: int = _inherited("round_kmeans_n_init", 1)
    losses: str = _inherited("losses", "ncl")
    lr: float = param(
        3e-4,
        ge=0,
        help="CLNN learning rate; 0 = the paper's per-dataset value (1e-5, stackoverflow 1e-6)",
    )
    variant: str = param(
        "paper",
        choices=training.VARIANTS,
        help="same-label positives: paper = every known class; official = the released "
        "code's rule (known class 0 gets none)",
    )
    knn_metric: str = param(
        "cosine",
        choices=KNN_METRICS,
        help="neighbour search: inner product (the paper, on raw features) or cosine",
    )


class MtpClnn(Method):
    name = "mtp-clnn"
    description = (
        "MTP-CLNN (Zhang et al., ACL 2022): MTP pre-training (internal stage only), then "
        "contrastive learning with nearest neighbours (kNN + same-label positives, RTR views, "
        "neighbours refreshed every few epochs); seeded K-means on test features. Defaults = "
        "the cpu preset; presets: cpu, paper (GPU, bert-base-uncased), smoke"
    )
    version = "1"
    uses = ("encoder", "loss")
    trains_encoder = True
    components = (
        Component("mtp", "MTP pre-training (CLNN starts from the plain --encoder)"),
        Component(
            "label-positives",
            "same-class labeled pairs as extra positives (positives come from kNN only)",
        ),
    )
    Params = MtpClnnParams
    presets = training.presets_for(
        MtpClnnParams,
        paper={
            "pretrain_batch_size": 64,
            "epochs": 34,
            "batch_size": 128,
            "lr": 0.0,
            "update_per_epoch": 5,
            "feat_dim": 128,
            "knn_metric": "inner",
        },
        smoke={"batch_size": 8, "max_steps_per_epoch": 3, "epochs": 2},
    )

    @classmethod
    def cross_check(cls, params: MtpClnnParams, num_classes: int | None = None) -> None:
        if params.variant == "official" and _has_ce(params):
            raise GcdbenchError(
                "method 'mtp-clnn': the official variant reproduces the released code, whose "
                "CLNN stage has no CE term; drop ce from -p losses or use --variant paper."
            )

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: MtpClnnParams = self.params
        self.cross_check(params, task.num_classes)  # for callers that skip resolve_params
        label_positives = self.enabled("label-positives")
        if not label_positives and _has_ce(params):
            raise GcdbenchError(
                "method 'mtp-clnn': --ablate label-positives hides the labels from the rounds, "
                "so the CE term cannot run; drop ce from -p losses."
            )
        engine = engine_params(params, task.dataset)
        k = training.resolve_topk(params.k, task.dataset, len(task.train))
        # Stage names and order as in training.train_and_cluster, so the paper variant gives
        # exactly the engine's own result (tests/test_mtp_clnn.py checks it).
        with training.isolated_torch_rng(ctx.rng("torch")):
            setup = training.prepare_training(
                task, ctx, engine, self.name, with_mtp=self.enabled("mtp")
            )
        pair_ids = pair_label_ids(
            task.labeled_y,
            task.num_known,
            official=params.variant == "official",
            enabled=label_positives,
        )
        rounds_task = dataclasses.replace(task, labeled_y=pair_ids)
        with training.isolated_torch_rng(ctx.rng("rounds-torch")):
            with ctx.timed("rounds"):
                result = training.run_rounds(
                    rounds_task,
                    setup.mode,
                    engine,
                    k=k,
                    seed=ctx.seed,
                    rng=ctx.rng("rounds"),
                    reporter=ctx.reporter,
                    # After every round, when the run keeps checkpoints (docs/resume.md).
                    checkpoints=training.round_checkpoints(
                        ctx,
                        None,
                        training.rounds_inputs(
                            rounds_task, engine, self.name, k=k, ce=True, align_weight=None
                        ),
                    ),
                )
            with ctx.timed("encode_test"), ctx.reporter.stage("encode test"):
                features = training.test_features(setup, task.test.texts, result.head)
        with ctx.timed("kmeans"):
            assignments = training.cluster_test(
                features, task.num_classes, ctx.seed, normalize=params.normalize
            )
        diagnostics = {
            "training": {**setup.diagnostics, "k": k, "lr": engine.lr},
            "rounds": result.rounds,
            "losses_per_epoch": epoch_losses(result.rounds),
            "label_positives": label_positive_summary(task.labeled_y, pair_ids),
            "cuts": cuts(params, engine.lr, task.dataset),
            "departures": departures(params, label_positives),
        }
        return MethodOutput(test_assignments=assignments, diagnostics=diagnostics)


def _has_ce(params: MtpClnnParams) -> bool:
    return any(choice.name == "ce" for choice in training.parse_losses(params.losses))


def paper_lr(dataset: str) -> float:
    return PAPER_LR.get(dataset, DEFAULT_PAPER_LR)


def engine_params(params: MtpClnnParams, dataset: str) -> MtpClnnParams:
    """What the engine runs with: ``lr=0`` resolved per dataset, and the engine's mining
    ``variant`` chosen by ``knn_metric`` alone. In the rounds that variant only picks the
    kNN search (inner product on unnormalised features with "official"; no miner reads its
    soft assignment), while this method's own ``variant`` is the same-label rule."""
    return dataclasses.replace(
        params,
        lr=params.lr or paper_lr(dataset),
        variant="official" if params.knn_metric == "inner" else "paper",
    )


def pair_label_ids(
    labeled_y: np.ndarray, num_known: int, *, official: bool, enabled: bool = True
) -> np.ndarray:
    """Label ids the rounds' adjacency pairs labeled texts by (two labeled texts are
    positives when their ids are equal). A text that must pair with no other gets an id of
    its own, beyond the known classes.

    ``official``: the released code pairs two labeled texts only when both ids are ``> 0``,
    so known class 0 (the first drawn) gets no label positives. ``enabled=False``: no text
    pairs by label at all (the ``label-positives`` ablation).
    """
    ids = np.asarray(labeled_y, dtype=np.int64).copy()
    if not enabled:
        alone = np.ones(len(ids), dtype=bool)
    elif official:
        alone = ids == 0
    else:
        return ids
    ids[alone] = num_known + np.arange(int(alone.sum()))
    return ids


def label_positive_summary(labeled_y: np.ndarray, pair_ids: np.ndarray) -> dict[str, int]:
    """How many known classes with labeled texts still pair them by label (for the record)."""
    labeled, ids = np.asarray(labeled_y), np.asarray(pair_ids)
    classes = np.unique(labeled)
    pairing = [c for c in classes if bool((ids[labeled == c] == c).all())]
    return {"known_classes_labeled": len(classes), "classes_with_label_positives": len(pairing)}


def epoch_losses(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch: its mean loss terms (the rounds hold the full detail)."""
    return [{"epoch": e["epoch"], **e["loss"]} for r in rounds for e in r["epochs"]]


def cuts(params: MtpClnnParams, lr: float, dataset: str) -> list[str]:
    """Where these parameters depart from the official settings (34 epochs of full
    fine-tuning, batch 128, neighbours every 5 epochs, ...), one line each."""
    out = [
        f"{name}={getattr(params, name)!r} (official {official!r})"
        for name, official in PAPER_CLNN.items()
        if getattr(params, name) != official
    ]
    if lr != paper_lr(dataset):
        out.append(f"lr={lr:g} (official {paper_lr(dataset):g} for {dataset})")
    if params.max_steps_per_epoch:
        out.append(
            f"at most {params.max_steps_per_epoch} steps of {params.batch_size} per epoch "
            "(the official epoch is a full pass over the pool)"
        )
    return out


def departures(params: MtpClnnParams, label_positives: bool) -> list[str]:
    """The departures from the paper and the released code in effect for this run."""
    out = [
        "stage 1 has no external pre-training (the paper first trains CE on CLINC150 minus "
        "two domains + MLM); only the in-domain MTP runs",
        "the final K-means is seeded (random_state = the run seed, n_init 10); the released "
        "code's is unseeded",
        "MTP draws its MLM batches shuffled, of pretrain_batch_size texts; the released code "
        "reads the pool in order, 128 texts a batch",
        "the learning-rate schedule counts the steps that really run (the released code's "
        "floor(N/B)*epochs reaches zero early)",
        "each round also clusters the pool with K-means (an engine step CLNN does not use)",
    ]
    if params.knn_metric == "inner":
        out.append(
            "kNN: inner product, the first hit dropped and the text itself put back as a "
            "candidate (the released code keeps the top k+1 as found)"
        )
    else:
        out.append(
            "kNN: cosine (equal to the paper's inner product only when normalize is on)"
            + ("" if params.normalize else "; normalize is off here, so it differs")
        )
    if not label_positives:
        out.append("ablated: no same-label positives")
    elif params.variant == "official":
        out.append(
            "official variant: same-label positives need both label ids > 0, so known class 0 "
            "gets none (the released code's rule)"
        )
    else:
        out.append("same-label positives for every known class (the released code skips id 0)")
    if _has_ce(params):
        out.append(f"losses={params.losses!r}: CLNN has the NCL term alone")
    if params.mode != "full" and params.mode.startswith("top-"):
        out.append(f"mode {params.mode}: random token replacement moves to the cut (glean.md §2.2)")
    if params.mode == "head":
        out.append(
            "head mode: test features are the L2-normalised projection-head output, since the "
            "frozen backbone's own features never change"
        )
    return out


@hookimpl
def register_methods(register):
    register(MtpClnn)
