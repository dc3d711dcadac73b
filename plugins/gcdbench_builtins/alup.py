"""``alup``: Active Learning with Uncertainty Propagation (Liang, Liao, Fei, Li, Jiang —
NAACL 2024; liangjinggui/ALUP @9f9df8c), as docs/methods/alup.md describes it.

Stage 1 is MTP-CLNN: the engine's MTP pre-training, then the engine's round loop with the
NCL loss alone (kNN + same-label positives, RTR views, neighbours re-mined every
``update_per_epoch`` epochs). Stage 2 alternates LLM rounds and CLNN training on a growing
labeled subset: K-means on the pool (ids aligned to the previous round's by a Hungarian
match of the centres), cluster ids mapped to class ids, a representative per cluster, a
Student-t uncertainty smoothed over each unlabeled text's nearest unlabeled texts; per
cluster the most uncertain unlabeled member is asked which representative of the nearest
clusters shares its intent (query kind ``alup-match``), the answer labels it and, softly,
its neighbours; CLNN then trains on the labeled + LLM-labeled + propagated texts only, with
same-label pairs as positives. Test clusters: seeded K-means (true K) on backbone features.

``--variant official`` maps clusters to classes by a Hungarian match against the gold labels
of the whole pool, as the released code does (a leak: the record says ``leaks_labels``), and
resets a neighbour whose propagation test fails to unlabeled. The released code's selection of
checkpoints on the test set is not reproduced in either variant.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api import (
    LAYOUTS,
    AskingPolicy,
    Component,
    FeedbackLog,
    GCDTask,
    Method,
    MethodOutput,
    Query,
    RunContext,
    hookimpl,
    param,
    training,
)
from gcdbench.api.asking import ask, usable
from gcdbench.api.toolkit import fit_kmeans, hungarian_mapping, l2_normalise
from gcdbench_builtins.alup_kinds import KINDS, MATCH

if TYPE_CHECKING:
    import torch

#: the round loop's ``losses`` field, reused so the new default (CLNN: NCL alone) keeps the
#: registry check of the engine's parameter
_LOSSES = {f.name: f for f in dataclasses.fields(training.RoundParams)}["losses"]


@dataclass(frozen=True)
class AlupParams(training.RoundParams):
    # -- stage 1 (CLNN) overrides of the round loop's defaults
    losses: str = dataclasses.field(default="ncl", metadata=_LOSSES.metadata)
    epochs: int = param(3, ge=1, help="stage-1 CLNN epochs (paper 34)")
    update_per_epoch: int = param(3, ge=1, help="stage 1: re-mine neighbours every N epochs")
    max_steps_per_epoch: int = param(
        60, ge=0, help="cap on steps per epoch, both stages; 0 = a full pass"
    )
    round_kmeans_n_init: int = param(3, ge=1, help="K-means restarts when the pool is clustered")
    # -- stage 2 (active learning with the LLM)
    al_epochs: int = param(4, ge=0, help="stage-2 epochs on the labeled subset (paper 34)")
    llm_every: int = param(2, ge=1, help="stage 2: an LLM round every N epochs (paper 5)")
    llm_rounds: int = param(
        2, ge=0, help="LLM rounds at most (0 = one every llm_every epochs; paper 7)"
    )
    queries_per_round: int = param(
        80, ge=0, help="questions per round at most, most uncertain first (0 = one per cluster)"
    )
    candidate_ratio: float = param(
        0.5, gt=0, le=1, help="candidates = representatives of the ratio*K nearest clusters"
    )
    max_candidates: int = param(8, ge=0, help="cap on candidates per question (0 = no cap)")
    uncertainty_k: int = param(
        25, ge=1, help="unlabeled neighbours smoothing the uncertainty and receiving answers"
    )
    rho: float = param(0.1, ge=0, help="neighbour weight exp(-rho * squared distance)")
    worked_examples: int = param(
        0, ge=0, help="worked examples in every prompt, built from labeled texts (paper 3)"
    )
    example_candidates: int = param(4, ge=1, help="candidates shown in a worked example")
    orderings: int = param(1, ge=1, help="ask each question in this many option orders")
    prompt_layout: str = param(
        "cache-friendly",
        choices=LAYOUTS,
        help="candidates before the query (cache-friendly) or after it (official)",
    )


_PAPER = {
    "pretrain_batch_size": 16,
    "epochs": 34,
    "batch_size": 32,
    "update_per_epoch": 5,
    "feat_dim": 128,
    "round_kmeans_n_init": 10,
    "al_epochs": 34,
    "llm_every": 5,
    "llm_rounds": 0,
    "queries_per_round": 0,
    "max_candidates": 0,
    "worked_examples": 3,
}
_SMOKE = {
    "epochs": 1,
    "update_per_epoch": 1,
    "al_epochs": 2,
    "llm_every": 1,
    "llm_rounds": 2,
    "queries_per_round": 0,
    "max_candidates": 3,
    "uncertainty_k": 5,
    "worked_examples": 1,
    "example_candidates": 2,
}
_CUTS = {
    "epochs": "stage-1 CLNN epochs {v} (paper 34)",
    "al_epochs": "stage-2 epochs {v} (paper 34)",
    "llm_every": "an LLM round every {v} epochs (paper 5)",
    "llm_rounds": "at most {v} LLM rounds (paper: every round, 7 in 34 epochs)",
    "queries_per_round": "at most {v} questions per round, the most uncertain (paper: one per "
    "cluster)",
    "max_candidates": "at most {v} candidates per question (paper: floor(K/2))",
    "max_steps_per_epoch": "at most {v} steps per epoch (paper: a full pass)",
    "worked_examples": "{v} worked examples per prompt (paper 3, long hand-written ones)",
    "round_kmeans_n_init": "{v} K-means restarts per round (paper: scikit-learn's 10)",
}


class Alup(Method):
    name = "alup"
    description = (
        "ALUP (Liang et al., NAACL 2024): MTP-CLNN, then LLM rounds asking for the most "
        "uncertain text of every cluster (Student-t entropy smoothed over neighbours) which "
        "nearby cluster representative shares its intent; the answer is propagated to its "
        "neighbours and CLNN trains on the labeled subset; K-means on test features. "
        "Defaults = the cpu preset; presets: cpu, paper (GPU), smoke"
    )
    version = "1"
    uses = ("encoder", "feedback")
    trains_encoder = True
    asks = (MATCH,)
    components = (
        Component("llm", "stage 2 (LLM rounds and subset training; ablated: MTP-CLNN)"),
        Component("propagation", "answers passed on to neighbours (ablated: the query only)"),
        Component("smoothing", "uncertainty smoothed over neighbours (ablated: entropy only)"),
    )
    Params = AlupParams
    presets = training.presets_for(AlupParams, paper=_PAPER, smoke=_SMOKE)

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: AlupParams = self.params
        training.check_params(params, self.name)
        k = training.resolve_topk(params.k, task.dataset, len(task.train))
        with training.isolated_torch_rng(ctx.rng("torch")):
            setup = training.prepare_training(task, ctx, params, self.name)
        with (
            training.isolated_torch_rng(ctx.rng("rounds-torch")),
            ctx.timed("clnn"),
            ctx.reporter.stage("stage 1: CLNN"),
        ):
            stage1 = training.run_rounds(
                task,
                setup.mode,
                params,
                k=k,
                seed=ctx.seed,
                rng=ctx.rng("rounds"),
                reporter=ctx.reporter,
                # After every round, when the run keeps checkpoints (docs/resume.md); a kill
                # in stage 2 restores stage 1's last round and asks stage 2 again.
                checkpoints=training.round_checkpoints(
                    ctx,
                    None,
                    training.rounds_inputs(
                        task, params, self.name, k=k, ce=True, align_weight=None
                    ),
                ),
            )
        log = FeedbackLog()
        stage2: dict[str, Any] = {"skipped": "ablated"}
        if self.enabled("llm") and params.al_epochs > 0:
            learner = ActiveLearner(task, ctx, params, setup.mode, stage1.head, k, self.enabled)
            with (
                training.isolated_torch_rng(ctx.rng("al-torch")),
                ctx.timed("active-learning"),
                ctx.reporter.stage("stage 2: LLM rounds"),
            ):
                stage2 = learner.run()
            log = learner.log
        with ctx.timed("encode_test"):
            features = training.test_features(setup, task.test.texts, stage1.head)
        with ctx.timed("kmeans"):
            assignments = training.cluster_test(
                features, task.num_classes, ctx.seed, normalize=params.normalize
            )
        return MethodOutput(
            test_assignments=assignments,
            diagnostics={
                "training": {**setup.diagnostics, "k": k},
                "stage1_rounds": stage1.rounds,
                "stage2": stage2,
                "cuts": cuts(params),
                "departures": departures(params),
            },
            feedback_log=log if log.asked else None,
        )


def cuts(params: AlupParams) -> list[str]:
    """What these parameters cut against the paper preset."""
    paper = Alup.presets["paper"]
    out = [
        text.format(v=getattr(params, name))
        for name, text in _CUTS.items()
        if getattr(params, name) != paper[name]
    ]
    if params.mode != "full":
        out.append(f"backbone mode {params.mode} (paper: full fine-tuning)")
    return out


def departures(params: AlupParams) -> list[str]:
    out = [
        "no checkpoint selection on the test set: every stage continues from its last epoch",
        "same-label positives include known class 0 (the released code skips it)",
        "one label space (known-class ids, then novel ids) for labeled and LLM-labeled texts",
        "candidates shown as numbered choices plus 'none of these', not cluster ids",
    ]
    if params.variant == "paper":
        out.append(
            "clusters mapped to classes by a Hungarian match of the centres to labeled-class "
            "prototypes (the released code matches gold labels of the whole pool)"
        )
        out.append("a neighbour failing the propagation test keeps its label")
    if params.pooling != "cls":
        out.append(f"{params.pooling} pooling (paper: CLS)")
    return out


# -- stage 2 -----------------------------------------------------------------------------------


@dataclass
class RoundClusters:
    """One LLM round's clustering of the pool, in the persistent id space."""

    assignments: np.ndarray  # [N] cluster id
    centers: np.ndarray  # [K, d]
    classes: np.ndarray  # [K] class id of each cluster
    soft: np.ndarray  # [N, K] Student-t q


class ActiveLearner:
    """Stage 2: LLM rounds and CLNN on the labeled subset (docs/methods/alup.md §3)."""

    def __init__(
        self,
        task: GCDTask,
        ctx: RunContext,
        params: AlupParams,
        mode: Any,
        head: Any,
        k: int,
        enabled: Callable[[str], bool],
    ) -> None:
        self.task, self.ctx, self.params = task, ctx, params
        self.mode, self.head, self.k, self.enabled = mode, head, k, enabled
        self.log = FeedbackLog()
        self.policy = AskingPolicy(orderings=params.orderings, layout=params.prompt_layout)
        self.rng = ctx.rng("alup")
        self.labels = np.full(len(task.train), -1, dtype=np.int64)
        self.gold: np.ndarray | None = None
        if params.variant == "official":
            # The released code maps clusters to classes with the gold labels of every pool
            # text; labeled texts then carry the same (global) ids.
            self.gold = np.asarray(
                ctx.leak_gold_labels(
                    "train", "alup official: clusters mapped to classes by gold pool labels"
                ),
                dtype=np.int64,
            )
            self.labels[: task.num_labeled] = self.gold[: task.num_labeled]
        else:
            self.labels[: task.num_labeled] = np.asarray(task.labeled_y, dtype=np.int64)
        self.previous: RoundClusters | None = None
        self.examples = worked_examples(task, params, ctx.rng("alup-examples"))

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        import torch

        params, mode, head = self.params, self.mode, self.head
        pool = len(self.task.train)
        cap = params.max_steps_per_epoch
        per_epoch_max = training.steps_per_epoch(pool, params.batch_size)
        per_epoch_max = min(per_epoch_max, cap) if cap > 0 else per_epoch_max
        optimisation = training.make_optimisation(
            [mode.backbone, head],
            [*mode.trainable_parameters(), *head.parameters()],
            lr=params.lr,
            total_steps=per_epoch_max * params.al_epochs,
        )
        generator = training.generator_for(self.rng, mode.backbone.device)
        rounds: list[dict[str, Any]] = []
        subset = np.flatnonzero(self.labels >= 0)
        neighbours = torch.zeros((pool, 1), dtype=torch.long)
        for epoch in range(params.al_epochs):
            if epoch % params.llm_every == 0:
                index = epoch // params.llm_every
                features = self.features()
                stats: dict[str, Any] = {"round": index, "epoch": epoch}
                if params.llm_rounds == 0 or index < params.llm_rounds:
                    with self.ctx.reporter.stage(f"LLM round {index + 1}"):
                        stats.update(self.ask_round(features, index))
                subset = np.flatnonzero(self.labels >= 0)
                neighbours = self.subset_neighbours(features, subset)
                stats["subset"] = len(subset)
                stats["epochs"] = []
                rounds.append(stats)
            losses = self.train_epoch(subset, neighbours, optimisation, generator)
            rounds[-1]["epochs"].append(
                {"epoch": epoch, **losses, "lr_end": optimisation.learning_rate}
            )
        mode.eval()
        head.eval()
        return {
            "rounds": rounds,
            "labeled_at_end": int((self.labels >= 0).sum()),
            "worked_examples": len(self.examples),
        }

    def features(self) -> np.ndarray:
        features = np.asarray(self.mode.extract(), dtype=np.float32)
        return l2_normalise(features) if self.params.normalize else features

    # -- an LLM round -----------------------------------------------------------------------

    def ask_round(self, features: np.ndarray, index: int) -> dict[str, Any]:
        params = self.params
        clusters = self.cluster(features)
        self.previous = clusters
        reps = representatives(features, clusters)
        rep_labels = np.array(
            [
                -1 if r < 0 else (self.labels[r] if self.labels[r] >= 0 else clusters.classes[j])
                for j, r in enumerate(reps)
            ],
            dtype=np.int64,
        )
        unlabeled = np.flatnonzero(self.labels < 0)
        if len(unlabeled) == 0:
            return {"asked": 0, "note": "every pool text is labeled"}
        entropy = shannon_entropy(clusters.soft[unlabeled])
        near, dist2 = l2_knn(features[unlabeled], min(params.uncertainty_k, len(unlabeled) - 1))
        weights = np.exp(-params.rho * dist2)
        uncertainty = entropy.copy()
        if self.enabled("smoothing") and near.shape[1]:
            uncertainty += (entropy[near] * weights).mean(axis=1)
        queries = pick_queries(clusters.assignments[unlabeled], uncertainty, params)
        num = len(clusters.centers)
        wanted = max(1, math.floor(num * params.candidate_ratio))
        if params.max_candidates > 0:
            wanted = min(wanted, params.max_candidates)
        texts = self.task.train.texts
        asked_queries: list[Query] = []
        options: list[np.ndarray] = []
        anchors: list[int] = []
        encoder: list[int] = []
        for local in queries:
            anchor = int(unlabeled[local])
            order = np.argsort(
                ((clusters.centers - features[anchor]) ** 2).sum(axis=1), kind="stable"
            )
            shown = [int(j) for j in order if reps[j] >= 0 and reps[j] != anchor][:wanted]
            if not shown:
                continue
            payload: dict[str, Any] = {
                "query": texts[anchor],
                "options": [texts[reps[j]] for j in shown],
                "task": self.task.task_word,
            }
            if self.examples:
                payload["examples"] = list(self.examples)
            meta = {"anchor": anchor, "candidates": [int(reps[j]) for j in shown]}
            asked_queries.append(Query(MATCH, payload, meta, self.policy))
            options.append(np.asarray(shown, dtype=np.int64))
            anchors.append(anchor)
            own = int(clusters.assignments[anchor])
            encoder.append(shown.index(own) if own in shown else len(shown))
        asked = ask(
            self.ctx, asked_queries, log=self.log, round_index=index, encoder_values=encoder
        )
        answered = set(anchors)
        local_of = {int(u): i for i, u in enumerate(unlabeled)}
        tally: Counter[str] = Counter()
        used: list[bool] = []
        for anchor, shown_clusters, answer in zip(anchors, options, asked.answers, strict=True):
            if not usable(answer):
                tally[f"unusable:{answer.status}"] += 1
                used.append(False)
                continue
            choice = int(answer.value)
            if choice >= len(shown_clusters):
                tally["none"] += 1
                used.append(False)
                continue
            cluster = int(shown_clusters[choice])
            label = int(rep_labels[cluster])
            self.labels[anchor] = label
            tally["labeled"] += 1
            used.append(True)
            if self.enabled("propagation"):
                local = local_of[anchor]
                tally["propagated"] += self.propagate(
                    unlabeled[near[local]], weights[local], cluster, label, clusters, answered
                )
        asked.used = used
        return {
            "asked": len(asked_queries),
            "candidates": wanted,
            "answers": dict(tally),
            "statuses": dict(Counter(a.status for a in asked.answers)),
            # how sharp the soft assignments and how strong the neighbour weights are: on
            # L2-normalised features q is flat and exp(-rho d^2) near 1 (docs §6)
            "mean_max_q": round(float(clusters.soft[unlabeled].max(axis=1).mean()), 4),
            "mean_neighbour_weight": round(float(weights.mean()), 4) if weights.size else None,
            "cluster_sizes": {
                "min": int(np.bincount(clusters.assignments, minlength=num).min()),
                "max": int(np.bincount(clusters.assignments, minlength=num).max()),
            },
        }

    def propagate(
        self,
        neighbours: np.ndarray,
        weights: np.ndarray,
        cluster: int,
        label: int,
        clusters: RoundClusters,
        answered: set[int],
    ) -> int:
        """Soft feedback propagation: a neighbour takes the answer when its soft assignment,
        plus its similarity to the query on the chosen cluster, peaks at that cluster."""
        given = 0
        for n, weight in zip(neighbours.tolist(), weights.tolist(), strict=True):
            if n in answered:
                continue  # an asked text keeps its own answer
            score = clusters.soft[n].copy()
            score[cluster] += weight
            if int(np.argmax(score)) == cluster:
                self.labels[n] = label
                given += 1
            elif self.params.variant == "official":
                self.labels[n] = -1  # the released code resets it, even if labeled earlier
        return given

    def cluster(self, features: np.ndarray) -> RoundClusters:
        """K-means, ids aligned to the previous round's, and a class id per cluster."""
        num = self.task.num_classes
        fit = fit_kmeans(
            features,
            num,
            int(self.rng.integers(2**31)),
            n_init=self.params.round_kmeans_n_init,
        )
        assignments, centers = fit.labels, np.asarray(fit.centers, dtype=np.float32)
        if self.previous is not None:
            # new cluster i takes the id of the previous centre it is matched to
            match = hungarian_mapping(training.squared_distances(centers, self.previous.centers))
            ids = np.array([match[i] for i in range(num)], dtype=np.int64)
            assignments = ids[assignments]
            aligned = np.empty_like(centers)
            aligned[ids] = centers
            centers = aligned
        if self.gold is not None:
            classes = gold_classes(assignments, self.gold, num)
        else:
            previous = self.previous.classes if self.previous is not None else None
            classes = prototype_classes(features, centers, self.task, previous)
        soft = training.student_t(features, centers, alpha=1.0, variant="paper")
        return RoundClusters(assignments, centers, classes, np.asarray(soft))

    # -- training on the labeled subset -----------------------------------------------------

    def subset_neighbours(self, features: np.ndarray, subset: np.ndarray) -> torch.Tensor:
        """[N, k] pool-index kNN lists searched inside ``subset`` (-1 rows elsewhere)."""
        import torch

        k = min(self.k, len(subset) - 1)
        out = np.full((len(features), max(k, 1)), -1, dtype=np.int64)
        if k >= 1:
            metric = "inner" if self.params.variant == "official" else "cosine"
            local = training.knn(features[subset], k, metric=metric)
            out[subset] = subset[local]
        return torch.as_tensor(out, dtype=torch.long)

    def train_epoch(
        self,
        subset: np.ndarray,
        neighbours: torch.Tensor,
        optimisation: Any,
        generator: torch.Generator,
    ) -> dict[str, Any]:
        import torch

        params, mode, head = self.params, self.mode, self.head
        if len(subset) < 2:
            return {"steps": 0, "ncl": None}
        lists = neighbours.numpy()
        # each text's positive for the epoch: itself or one of its subset neighbours
        draw = self.rng.integers(0, lists.shape[1] + 1, size=len(subset))
        candidates = np.concatenate([subset[:, None], lists[subset]], axis=1)
        positives = np.full(len(self.labels), -1, dtype=np.int64)
        positives[subset] = candidates[np.arange(len(subset)), draw]
        positives[positives < 0] = np.flatnonzero(positives < 0)  # unreachable rows: self
        order = self.rng.permutation(subset)
        steps = training.steps_per_epoch(len(subset), params.batch_size)
        if params.max_steps_per_epoch > 0:
            steps = min(steps, params.max_steps_per_epoch)
        labels = torch.as_tensor(self.labels, dtype=torch.long)
        device = mode.backbone.device
        mode.train()
        head.train()
        total, done = 0.0, 0
        for step in range(steps):
            idx = order[step * params.batch_size : (step + 1) * params.batch_size]
            if len(idx) < 2:
                continue
            anchor = mode.embed(idx, augment=True, generator=generator)
            positive = mode.embed(positives[idx], augment=True, generator=generator)
            views = torch.stack([head.normalised(anchor), head.normalised(positive)], dim=1)
            # every text of the subset has a label, so "same label" is the labeled-pair rule
            # over the whole pool
            adjacency = training.neighbour_adjacency(
                torch.as_tensor(idx), neighbours, len(self.labels), labels
            ).to(device)
            loss = training.supcon_loss(views, adjacency, params.temperature)
            optimisation.step(loss)
            total += float(loss.detach())
            done += 1
        return {"steps": done, "ncl": round(total / done, 5) if done else None}


# -- helpers (pure NumPy) -------------------------------------------------------------------


def shannon_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, None)
    return -(p * np.log(p)).sum(axis=1)


def l2_knn(features: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """[n, k] nearest rows by Euclidean distance (self excluded, k < n), nearest first, and
    their squared distances; row chunks keep memory at chunk x n."""
    n = len(features)
    if k < 1:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0))
    x = np.asarray(features, dtype=np.float64)
    norms = (x**2).sum(axis=1)
    index = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        block = norms[rows, None] + norms[None, :] - 2 * x[rows] @ x.T
        block = np.maximum(block, 0.0)
        block[rows - start, rows] = np.inf  # never its own neighbour
        top = np.argpartition(block, k - 1, axis=1)[:, :k]
        top_d = np.take_along_axis(block, top, axis=1)
        rank = np.argsort(top_d, axis=1, kind="stable")
        index[rows] = np.take_along_axis(top, rank, axis=1)
        dist[rows] = np.take_along_axis(top_d, rank, axis=1)
    return index, dist


def representatives(features: np.ndarray, clusters: RoundClusters) -> np.ndarray:
    """Per cluster the member nearest its centre (-1 for an empty cluster)."""
    out = np.full(len(clusters.centers), -1, dtype=np.int64)
    for j in range(len(clusters.centers)):
        members = np.flatnonzero(clusters.assignments == j)
        if len(members):
            d = ((features[members] - clusters.centers[j]) ** 2).sum(axis=1)
            out[j] = members[int(np.argmin(d))]
    return out


def pick_queries(assignments: np.ndarray, uncertainty: np.ndarray, params: AlupParams) -> list[int]:
    """Per cluster the most uncertain of its unlabeled members (local indices), in cluster
    order; with a per-round cap, the most uncertain of those."""
    best: dict[int, int] = {}
    for i, c in enumerate(assignments.tolist()):
        if c not in best or uncertainty[i] > uncertainty[best[c]]:
            best[c] = i
    picked = [best[c] for c in sorted(best)]
    if 0 < params.queries_per_round < len(picked):
        ranked = sorted(picked, key=lambda i: (-uncertainty[i], i))
        keep = set(ranked[: params.queries_per_round])
        picked = [i for i in picked if i in keep]
    return picked


def prototype_classes(
    features: np.ndarray, centers: np.ndarray, task: GCDTask, previous: np.ndarray | None
) -> np.ndarray:
    """A class id per cluster: known classes by a Hungarian match of their labeled-text
    means to the centres; every other cluster keeps its previous id when free, else takes
    the lowest free one (ids num_known.. are novel)."""
    num = len(centers)
    y = np.asarray(task.labeled_y, dtype=np.int64)
    present = [c for c in range(task.num_known) if (y == c).any()]
    out = np.full(num, -1, dtype=np.int64)
    if present:
        prototypes = np.stack([features[: task.num_labeled][y == c].mean(axis=0) for c in present])
        match = hungarian_mapping(training.squared_distances(prototypes, centers))
        for row, j in match.items():
            out[j] = present[row]
    taken = set(out[out >= 0].tolist())
    if previous is not None:
        for j in np.flatnonzero(out < 0).tolist():
            if previous[j] >= 0 and int(previous[j]) not in taken:
                out[j] = previous[j]
                taken.add(int(previous[j]))
    free = iter(sorted(set(range(num)) - taken))
    for j in np.flatnonzero(out < 0).tolist():
        out[j] = next(free)
    return out


def gold_classes(assignments: np.ndarray, gold: np.ndarray, num: int) -> np.ndarray:
    """The released code's map: Hungarian on the cluster x gold-class contingency table of
    the whole pool (a leak, ``--variant official`` only)."""
    classes = int(max(num, gold.max() + 1))
    table = np.zeros((num, classes), dtype=np.int64)
    np.add.at(table, (assignments, gold), 1)
    match = hungarian_mapping(table, maximize=True)
    return np.array([match.get(j, j) for j in range(num)], dtype=np.int64)


def worked_examples(task: GCDTask, params: AlupParams, rng: np.random.Generator) -> list[str]:
    """Worked examples from labeled texts (the paper's prompt has three hand-written ones,
    two answered "none"): the first has its answer among the candidates, the others not."""
    y = np.asarray(task.labeled_y, dtype=np.int64)
    classes = sorted(set(y.tolist()))
    if params.worked_examples == 0 or len(classes) < 2:
        return []
    texts = task.train.texts
    out = []
    for e in range(params.worked_examples):
        own = int(rng.choice(classes))
        members = np.flatnonzero(y == own)
        query = int(rng.choice(members))
        others = [c for c in classes if c != own]
        count = min(params.example_candidates, len(others))
        chosen = [int(c) for c in rng.choice(others, size=count, replace=False)]
        shown = [int(rng.choice(np.flatnonzero(y == c))) for c in chosen]
        answer = count  # "none of these" is the last choice
        same = [m for m in members.tolist() if m != query]
        if e == 0 and same:
            answer = int(rng.integers(count))
            shown[answer] = int(rng.choice(same))
        lines = [f"Query: {texts[query]}"]
        lines += [f"Choice {i + 1}: {texts[s]}" for i, s in enumerate(shown)]
        lines += [f"Choice {count + 1}: none of these", f"Answer: Choice {answer + 1}"]
        out.append("\n".join(lines))
    return out


@hookimpl
def register_query_kinds(register):
    for kind in KINDS:
        register(kind)


@hookimpl
def register_methods(register):
    register(Alup)
