"""``tlsa``: text-label space alignment (Xu, Qin, Chen, Fang, Zhou, Zhu — ACL 2026), as
docs/methods/tlsa.md describes it.

One backbone embeds texts and label names ("the category of the text is: NAME", attention-
masked mean pooling), each through its own projection head (2-layer MLP, L2-normalised).
Phase 1 warms up on (labeled text, known name) pairs with a symmetric InfoNCE plus a top-k
margin rank loss, batches holding one text per label, early-stopped on dev zero-shot accuracy.
Phase 2, per epoch: K-means on the unlabeled texts, Hungarian alignment of clusters to the
labeled prototypes, confidence margins, LLM names for the novel clusters, LLM renaming of
groups whose names embed too close together, LLM verification of sampled members, then one
pass over labeled + verified pairs. Test: text head, then seeded K-means with the true K.

The ``cpu`` preset (the defaults) bounds the questions (``max_questions``), names novel
clusters once (later epochs carry the names over by centroid matching), verifies a capped
number of clusters per epoch with few texts per prompt, and says what it cut in
``diagnostics["cuts"]`` (tlsa.md §2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gcdbench.api import (
    ClusterInfo,
    Component,
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
from gcdbench.api.feedback_log import FeedbackLog
from gcdbench.api.parsing import label_key
from gcdbench.api.toolkit import fit_kmeans, hungarian_mapping, l2_normalise
from gcdbench_builtins.tlsa_kinds import KINDS, NAME, RENAME, VERIFY

if TYPE_CHECKING:
    import torch

#: How a label name is put to the encoder (the released code's template).
LABEL_PROMPT = "the category of the text is: "
#: Share of batches for which exhausted labels are refilled (the released sampler's 80%).
REFILL_SHARE = 0.8


@dataclass(frozen=True)
class TlsaParams(training.PretrainParams):
    warmup_epochs: int = param(10, ge=0, help="phase-1 epochs on labeled pairs (paper 100)")
    warmup_patience: int = param(
        3, ge=0, help="stop phase 1 after this many epochs without a better dev accuracy"
    )
    epochs: int = param(3, ge=0, help="phase-2 epochs: cluster, ask, train (paper 40)")
    batch_size: int = param(48, ge=2, help="pairs per step, at most one per label")
    warmup_lr: float = param(1e-4, gt=0, help="phase-1 learning rate (encoder and heads)")
    lr: float = param(1e-4, gt=0, help="phase-2 learning rate of the encoder")
    head_lr: float = param(1e-3, gt=0, help="phase-2 learning rate of the projection heads")
    weight_decay: float = param(0.01, ge=0, help="AdamW weight decay")
    temperature: float = param(0.07, gt=0, help="tau of the similarity logits")
    rank_weight: float = param(0.5, ge=0, help="alpha: weight of the top-k margin rank loss")
    rank_topk: int = param(5, ge=0, help="hardest negatives per row in the rank loss")
    rank_margin: float = param(0.4, ge=0, help="rank-loss margin on the tau-scaled logits")
    feat_dim: int = param(256, ge=1, help="projection output size of both heads")
    ratio_high_start: float = param(0.15, gt=0, le=1, help="r_h at phase-2 epoch 1")
    ratio_high_end: float = param(0.40, gt=0, le=1, help="r_h at the last phase-2 epoch")
    ratio_low: float = param(0.25, ge=0, lt=1, help="r_l: the low-confidence share")
    k_high: int = param(4, ge=0, help="texts shown for verification from the top r_h (paper 8)")
    k_mid: int = param(4, ge=0, help="texts shown from the middle (paper 12)")
    k_low: int = param(4, ge=0, help="texts shown from the bottom r_l (paper 16)")
    verify_keep: int = param(36, ge=1, help="verified texts kept per cluster")
    naming_samples: int = param(12, ge=1, help="texts shown to name a cluster (paper 60)")
    naming: str = param(
        "first",
        choices=("first", "every"),
        help="name novel clusters at the first phase-2 epoch only (names carried) or every epoch",
    )
    refine_start: int = param(2, ge=1, help="first phase-2 epoch that renames groups (paper 5)")
    refine_threshold: float = param(
        0.96, ge=-1, le=1, help="label-embedding cosine that links two names into a group"
    )
    refine_samples: int = param(5, ge=1, help="texts shown per renamed group (paper 25)")
    refine_known_samples: int = param(
        2, ge=0, help="labeled texts shown per nearby known label (paper 25)"
    )
    refine_top_share: float = param(0.35, gt=0, le=1, help="top local-confidence share sampled")
    max_refine_groups: int | None = param(
        4, ge=0, help="renaming questions per epoch (none = every linked group, the paper)"
    )
    verify_clusters: int | None = param(
        40, ge=0, help="clusters verified per epoch (none = all K, the paper)"
    )
    reference_labels: int | None = param(
        10, ge=0, help="other known labels shown when verifying: the nearest (none = all)"
    )
    max_questions: int | None = param(
        300, ge=0, help="questions per run; the rest are not asked (none = no limit)"
    )
    kmeans_n_init: int = param(3, ge=1, help="K-means restarts per phase-2 epoch (paper 10)")


#: The released scripts (run_<dataset>_0.5.sh) on bert-base: only the last 3 layers train.
_PAPER = {
    "mode": "top-3",
    "pooling": "mean",
    "warmup_epochs": 100,
    "warmup_patience": 20,
    "epochs": 40,
    "k_high": 8,
    "k_mid": 12,
    "k_low": 16,
    "naming_samples": 60,
    "naming": "every",
    "refine_start": 5,
    "refine_samples": 25,
    "refine_known_samples": 25,
    "max_refine_groups": None,
    "verify_clusters": None,
    "reference_labels": None,
    "max_questions": None,
    "kmeans_n_init": 10,
}
_SMOKE = {
    "warmup_epochs": 2,
    "warmup_patience": 1,
    "epochs": 2,
    "batch_size": 8,
    "feat_dim": 16,
    "k_high": 2,
    "k_mid": 1,
    "k_low": 1,
    "naming_samples": 4,
    "refine_start": 1,
    "refine_samples": 3,
    "refine_known_samples": 1,
    "max_refine_groups": 2,
    "verify_clusters": None,
    "reference_labels": 3,
    "max_questions": 40,
    "kmeans_n_init": 1,
}

#: What the cpu preset's value of a parameter cuts relative to the paper's.
_CUT_TEXT = {
    "warmup_epochs": "phase-1 epochs",
    "warmup_patience": "phase-1 patience",
    "epochs": "phase-2 epochs",
    "k_high": "verification texts from the top r_h",
    "k_mid": "verification texts from the middle",
    "k_low": "verification texts from the bottom r_l",
    "naming_samples": "texts per naming prompt",
    "naming": "naming schedule (first: named once, names carried by centroid matching)",
    "refine_start": "first renaming epoch",
    "refine_samples": "texts per renamed group",
    "refine_known_samples": "labeled texts per nearby known label",
    "max_refine_groups": "renaming questions per epoch",
    "verify_clusters": "clusters verified per epoch",
    "reference_labels": "other known labels shown when verifying",
    "max_questions": "questions per run",
    "kmeans_n_init": "K-means restarts per epoch",
    "mode": "trainable layers",
}

DEPARTURES = [
    "batches hold one pair per label in both phases (round-robin sampler); the released "
    "warm-up drops duplicate-label pairs instead, skipping most labeled texts",
    "label names are shown to the encoder with '_' as spaces; merged by case/space-blind key",
    "a failed naming keeps the previous name or a placeholder (the released code stops the "
    "run); a failed renaming or verification skips that group or cluster (no pairs)",
    "verification shows the sampled texts in a shuffled order, whatever their band",
    "features are extracted in batches, no silhouette score is computed",
    "the question budget (max_questions) asks naming, then renaming, then verification",
]


class Tlsa(Method):
    name = "tlsa"
    description = (
        "TLSA (Xu et al., ACL 2026): texts and LLM-written label names in one space, "
        "symmetric InfoNCE + top-k rank loss; LLM naming, group renaming and member "
        "verification each epoch; test K-means. Defaults = the cpu preset (question budget); "
        "presets: cpu, paper, smoke"
    )
    version = "1"
    uses = ("encoder", "feedback")
    trains_encoder = True
    asks = (NAME, RENAME, VERIFY)
    components = (
        Component("naming", "LLM names for novel clusters (ablated: placeholder names)"),
        Component("refinement", "LLM renaming of groups of too-close names (ablated: none)"),
        Component("verification", "LLM verification of members (ablated: keep all sampled)"),
        Component("warmup", "phase 1 on labeled pairs (ablated: straight to phase 2)"),
        Component("all-llm", "every LLM step", includes=("naming", "refinement", "verification")),
    )
    Params = TlsaParams
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = training.presets_for(
        TlsaParams, paper=_PAPER, smoke=_SMOKE
    )

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: TlsaParams = self.params
        with training.isolated_torch_rng(ctx.rng("torch")):
            setup = training.prepare_training(task, ctx, params, self.name, with_mtp=False)
        with training.isolated_torch_rng(ctx.rng("tlsa-torch")):
            runner = _Run(task, ctx, params, setup.mode, self.enabled)
            runner.warmup()
            runner.phase2()
            with ctx.timed("encode_test"), ctx.reporter.stage("encode test"):
                features = runner.test_features()
            clusters = runner.name_test_clusters
        with ctx.timed("kmeans"):
            assignments = training.cluster_test(features, task.num_classes, ctx.seed)
        diagnostics = {
            "training": setup.diagnostics,
            **runner.diagnostics(),
            "cuts": cuts(params),
            "departures": DEPARTURES,
        }
        return MethodOutput(
            test_assignments=assignments,
            clusters=clusters(features, assignments),
            diagnostics=diagnostics,
            feedback_log=runner.log,
        )


def cuts(params: TlsaParams) -> list[str]:
    """What these parameters cut relative to the paper preset, one line each."""
    paper = Tlsa.presets["paper"]
    out = []
    for fld in fields(params):
        if fld.name in _CUT_TEXT and fld.name in paper:
            value, ref = getattr(params, fld.name), paper[fld.name]
            if value != ref:
                out.append(f"{_CUT_TEXT[fld.name]}: {value} (paper {ref})")
    return out


# -- pure helpers (numpy) ---------------------------------------------------------------------


def unique_label_batches(
    labels: np.ndarray, batch: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Positions of ``labels`` in batches with at most one per label, every pair at least
    once: labels with the most pairs left go first (so a big label is spread over enough
    batches), and for the first 80% of the batches labels already used up fill the free
    slots with a reshuffled repeat (the released sampler's refill rule)."""
    by_label = {int(y): np.flatnonzero(labels == y) for y in np.unique(labels)}
    if len(by_label) < 2:
        return []
    size = min(batch, len(by_label))
    most = max(len(v) for v in by_label.values())
    n_batches = max(math.ceil(len(labels) / size), most)
    first = {y: list(rng.permutation(idx)) for y, idx in by_label.items()}
    repeat: dict[int, list[int]] = {y: [] for y in by_label}
    out = []
    for b in range(n_batches):
        tie = rng.permutation(len(by_label))
        order = sorted(by_label, key=lambda y: (-len(first[y]), tie[list(by_label).index(y)]))
        fresh = [y for y in order if first[y]][:size]
        rows = [first[y].pop() for y in fresh]
        # After 80% only a lone pair is topped up: a batch of one has no negative.
        if len(rows) < size and (b < REFILL_SHARE * n_batches or len(rows) == 1):
            spare = [y for y in order if y not in fresh]
            for y in rng.permutation(np.asarray(spare))[: size - len(rows)]:
                if not repeat[int(y)]:
                    repeat[int(y)] = list(rng.permutation(by_label[int(y)]))
                rows.append(repeat[int(y)].pop())
        if len(rows) >= 2:
            out.append(np.asarray(rows, dtype=np.int64))
    return out


def confidence_margins(features: np.ndarray, assign: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(d(x, C_j) - d(x, C_i)) / d(C_i, C_j): C_i the own centroid, C_j the nearest other."""
    if len(centers) < 2:
        return np.ones(len(features))
    # |x|^2 + |c|^2 - 2 x.c: the [n, k, d] difference tensor would take gigabytes at N = 9k.
    squared = (features**2).sum(1)[:, None] + (centers**2).sum(1)[None] - 2 * features @ centers.T
    d = np.sqrt(np.maximum(squared, 0.0))
    rows = np.arange(len(features))
    own = d[rows, assign]
    other = d.copy()
    other[rows, assign] = np.inf
    j = other.argmin(1)
    gap = np.linalg.norm(centers[assign] - centers[j], axis=1)
    return (other[rows, j] - own) / np.maximum(gap, 1e-12)


def ranked_members(assign: np.ndarray, conf: np.ndarray, k: int) -> list[np.ndarray]:
    """Per cluster, its members' positions, most confident first."""
    out = []
    for c in range(k):
        members = np.flatnonzero(assign == c)
        out.append(members[np.argsort(-conf[members], kind="stable")])
    return out


def components(similar: np.ndarray) -> list[list[int]]:
    """Connected components (>= 2 nodes) of a boolean adjacency matrix."""
    n = len(similar)
    seen = np.zeros(n, dtype=bool)
    out = []
    for start in range(n):
        if seen[start]:
            continue
        stack, comp = [start], []
        seen[start] = True
        while stack:
            node = stack.pop()
            comp.append(node)
            for nxt in np.flatnonzero(similar[node] & ~seen):
                seen[nxt] = True
                stack.append(int(nxt))
        if len(comp) >= 2:
            out.append(sorted(comp))
    return out


def draw(rng: np.random.Generator, items: np.ndarray, n: int) -> np.ndarray:
    if n <= 0 or not len(items):
        return np.zeros(0, dtype=np.int64)
    return rng.choice(items, size=min(n, len(items)), replace=False)


def display(name: str) -> str:
    return name.replace("_", " ")


# -- the run ---------------------------------------------------------------------------------


@dataclass
class _Clustering:
    """One phase-2 epoch's clustering of the unlabeled texts."""

    pool_ids: np.ndarray  # pool positions of the unlabeled texts
    features: np.ndarray  # their normalised text-head features
    assign: np.ndarray
    centers: np.ndarray
    conf: np.ndarray
    members: list[np.ndarray]  # per cluster, positions into pool_ids, most confident first
    known_of: dict[int, int]  # cluster -> known class it is aligned with


class _Run:
    def __init__(
        self, task: GCDTask, ctx: RunContext, params: TlsaParams, mode: Any, enabled: Any
    ) -> None:
        import torch

        self.task, self.ctx, self.p, self.mode, self.enabled = task, ctx, params, mode, enabled
        hidden = mode.backbone.hidden_size
        self.text_head = training.ProjectionHead(hidden, params.feat_dim, dropout=0.0)
        self.label_head = training.ProjectionHead(hidden, params.feat_dim, dropout=0.0)
        device = mode.backbone.device
        self.text_head.to(device)
        self.label_head.to(device)
        self.device = device
        self.gen = training.generator_for(ctx.rng("tlsa-dropout"), torch.device("cpu"))
        self.log = FeedbackLog()
        self.known = [str(n) for n in task.known_class_names]
        self.remaining = params.max_questions
        self.names: dict[int, str] = {}  # novel cluster -> name (current epoch's numbering)
        self.prev_novel_centers: np.ndarray | None = None
        self.prev_novel_clusters: list[int] = []
        self.warmup_log: list[dict[str, Any]] = []
        self.epoch_log: list[dict[str, Any]] = []
        self.questions = {NAME: 0, RENAME: 0, VERIFY: 0}
        self.failed = {NAME: 0, RENAME: 0, VERIFY: 0}
        self.not_asked = 0
        self.final_names: list[str] = list(self.known)

    # ---- features --------------------------------------------------------------------------
    def _text(self, indices: np.ndarray) -> torch.Tensor:
        pooled = self.mode.embed(indices, augment=False, generator=self.gen)
        return self.text_head.normalised(pooled)

    def _labels(self, names: Sequence[str]) -> torch.Tensor:
        pooled = self.mode.embed_texts(
            [LABEL_PROMPT + display(n) for n in names], generator=self.gen
        )
        return self.label_head.normalised(pooled.to(self.device))

    def pool_features(self, indices: np.ndarray) -> np.ndarray:
        import torch

        raw = self.mode.extract(indices)
        with torch.no_grad():
            out = self.text_head.normalised(torch.as_tensor(raw, device=self.device))
        return out.float().cpu().numpy()

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        raw = self.mode.encode_texts(list(texts))
        with torch.no_grad():
            out = self.text_head.normalised(torch.as_tensor(raw, device=self.device))
        return out.float().cpu().numpy()

    def label_features(self, names: Sequence[str]) -> np.ndarray:
        import torch

        self.mode.eval()
        with torch.no_grad():
            chunks = [self._labels(names[i : i + 128]) for i in range(0, len(names), 128)]
        return torch.cat(chunks).float().cpu().numpy() if chunks else np.zeros((0, 1))

    def test_features(self) -> np.ndarray:
        self.mode.eval()
        return self.text_features(self.task.test.texts)

    # ---- training ----------------------------------------------------------------------------
    def _optimiser(self, lr: float, head_lr: float) -> torch.optim.Optimizer:
        import torch

        heads = [*self.text_head.parameters(), *self.label_head.parameters()]
        groups = [
            {"params": list(self.mode.trainable_parameters()), "lr": lr},
            {"params": heads, "lr": head_lr},
        ]
        return torch.optim.AdamW(groups, weight_decay=self.p.weight_decay)

    def _loss(self, t: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """Symmetric InfoNCE over text/label rows + alpha * top-k margin rank loss."""
        import torch
        import torch.nn.functional as F

        p = self.p
        z = t @ lab.T / p.temperature
        target = torch.arange(len(z), device=z.device)
        cl = (F.cross_entropy(z, target) + F.cross_entropy(z.T, target)) / 2
        k = min(p.rank_topk, len(z) - 1)
        rank = torch.zeros((), device=z.device)
        if p.rank_weight > 0 and k > 0:
            rank = (self._rank(z, k) + self._rank(z.T, k)) / 2
        return cl + p.rank_weight * rank, float(cl.detach()), float(rank.detach())

    def _rank(self, z: torch.Tensor, k: int) -> torch.Tensor:
        import torch

        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        top = z.masked_fill(eye, float("-inf")).topk(k, dim=1).values
        return torch.relu(top - z.diagonal()[:, None] + self.p.rank_margin).mean()

    def train_pass(
        self, ids: np.ndarray, names: list[str], opt: Any, rng: np.random.Generator, clip: bool
    ) -> dict[str, float]:
        """One pass over (pool text, label name) pairs, one pair per label in a batch."""
        import torch

        keys = [label_key(n) for n in names]
        shown = dict(zip(keys, names, strict=True))
        vocab = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        label_ids = np.asarray([vocab[k] for k in keys], dtype=np.int64)
        batches = unique_label_batches(label_ids, self.p.batch_size, rng)
        self.mode.train()
        totals = np.zeros(3)
        params = [*self.mode.trainable_parameters(), *self.text_head.parameters()]
        params += list(self.label_head.parameters())
        for rows in batches:
            batch_names = [shown[keys[r]] for r in rows]
            loss, cl, rank = self._loss(self._text(ids[rows]), self._labels(batch_names))
            opt.zero_grad()
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            totals += (float(loss.detach()), cl, rank)
        self.mode.eval()
        n = max(len(batches), 1)
        return {"loss": totals[0] / n, "cl": totals[1] / n, "rank": totals[2] / n, "steps": n}

    # ---- phase 1 -----------------------------------------------------------------------------
    def dev_accuracy(self) -> float | None:
        """Zero-shot dev accuracy: argmax cosine between dev texts and the known names."""
        if not len(self.task.dev.texts):
            return None
        self.mode.eval()
        texts = self.text_features(self.task.dev.texts)
        names = self.label_features(self.known)
        return float(((texts @ names.T).argmax(1) == self.task.dev_y).mean())

    def _snapshot(self) -> list[Any]:
        params = [*self.mode.trainable_parameters(), *self.text_head.parameters()]
        return [q.detach().clone() for q in params + list(self.label_head.parameters())]

    def _restore(self, saved: list[Any]) -> None:
        import torch

        params = [*self.mode.trainable_parameters(), *self.text_head.parameters()]
        with torch.no_grad():
            for q, v in zip(params + list(self.label_head.parameters()), saved, strict=True):
                q.copy_(v)

    def warmup(self) -> None:
        """Phase 1: labeled pairs, early stopping on dev zero-shot accuracy (restores best)."""
        p, task = self.p, self.task
        if not self.enabled("warmup") or p.warmup_epochs == 0 or task.num_labeled == 0:
            return
        ids = np.arange(task.num_labeled)
        names = [self.known[int(y)] for y in task.labeled_y]
        opt = self._optimiser(p.warmup_lr, p.warmup_lr)
        rng = self.ctx.rng("tlsa-warmup")
        best, best_state, stale = -1.0, self._snapshot(), 0
        with self.ctx.timed("warmup"), self.ctx.reporter.stage("tlsa warm-up"):
            for epoch in range(1, p.warmup_epochs + 1):
                # The released warm-up steps AdamW without a schedule or clipping.
                losses = self.train_pass(ids, names, opt, rng, clip=False)
                acc = self.dev_accuracy()
                self.warmup_log.append({"epoch": epoch, **losses, "dev_acc": acc})
                if acc is None:
                    continue
                if acc > best:
                    best, best_state, stale = acc, self._snapshot(), 0
                else:
                    stale += 1
                    if stale >= max(p.warmup_patience, 1):
                        break
        self._restore(best_state)

    # ---- phase 2 -----------------------------------------------------------------------------
    def cluster(self, rng: np.random.Generator) -> _Clustering:
        task = self.task
        unl = np.arange(task.num_labeled, len(task.train.texts))
        feats = self.pool_features(unl)
        k = min(task.num_classes, len(unl))
        fit = fit_kmeans(feats, k, int(rng.integers(2**31)), n_init=self.p.kmeans_n_init)
        centers = np.asarray(fit.centers)
        known_of: dict[int, int] = {}
        if task.num_labeled:
            lab = self.pool_features(np.arange(task.num_labeled))
            protos = np.stack(
                [
                    lab[task.labeled_y == y].mean(0)
                    if (task.labeled_y == y).any()
                    else np.zeros(lab.shape[1])
                    for y in range(task.num_known)
                ]
            )
            cosine = l2_normalise(protos) @ l2_normalise(centers).T
            known_of = {c: y for y, c in hungarian_mapping(cosine, maximize=True).items()}
        conf = confidence_margins(feats, fit.labels, centers)
        members = ranked_members(fit.labels, conf, k)
        return _Clustering(unl, feats, fit.labels, centers, conf, members, known_of)

    def cluster_names(self, cl: _Clustering) -> list[str]:
        return [
            self.known[cl.known_of[c]] if c in cl.known_of else self.names.get(c, f"novel_{c}")
            for c in range(len(cl.centers))
        ]

    def _ask(self, queries: list[Query], epoch: int, encoder: list[Any] | None = None) -> list[Any]:
        """Answers (None where unusable or not asked: the budget), logged."""
        if self.remaining is not None:
            self.not_asked += max(len(queries) - self.remaining, 0)
            queries = queries[: self.remaining]
            encoder = encoder[: len(queries)] if encoder is not None else None
        if not queries:
            return []
        asked = ask(self.ctx, queries, log=self.log, round_index=epoch, encoder_values=encoder)
        kind = queries[0].kind
        self.questions[kind] += len(queries)
        if self.remaining is not None:
            self.remaining -= len(queries)
        out = []
        for answer in asked.answers:
            ok = usable(answer)
            self.failed[kind] += int(not ok)
            out.append(answer.value if ok else None)
        return out

    def name_novel(
        self, cl: _Clustering, epoch: int, r_high: float, rng: np.random.Generator
    ) -> int:
        """Names for the novel clusters: asked (every epoch, or the first only with names
        carried over by centroid matching), else the carried name or a placeholder."""
        novel = [c for c in range(len(cl.centers)) if c not in cl.known_of]
        carried = self._carry(cl, novel)
        self.prev_novel_centers = cl.centers[novel] if novel else None
        self.prev_novel_clusters = novel
        if (self.p.naming == "first" and epoch > 1) or not self.enabled("naming"):
            self.names = {c: carried.get(c, f"novel_{c}") for c in novel}
            return 0
        queries, asked = [], []
        for c in novel:
            members = cl.members[c]
            if not len(members):
                continue
            top = members[: max(1, math.ceil(r_high * len(members)))]
            sample = draw(rng, top, self.p.naming_samples)
            ids = cl.pool_ids[sample]
            payload = {
                "texts": [self.task.train.texts[i] for i in ids],
                "known_names": self.known,
                "task": self.task.task_word,
            }
            queries.append(Query(NAME, payload, {"ids": [int(i) for i in ids]}))
            asked.append(c)
        values = self._ask(queries, epoch)
        named = dict(zip(asked, values, strict=False))
        self.names = {c: named.get(c) or carried.get(c) or f"novel_{c}" for c in novel}
        return sum(v is not None for v in values)

    def _carry(self, cl: _Clustering, novel: list[int]) -> dict[int, str]:
        """Last epoch's novel names moved onto this epoch's novel clusters by Hungarian
        matching of their centroids (cosine)."""
        if self.prev_novel_centers is None or not novel:
            return {}
        old = [self.names.get(c) for c in self.prev_novel_clusters]
        cosine = l2_normalise(cl.centers[novel]) @ l2_normalise(self.prev_novel_centers).T
        out = {}
        for row, col in hungarian_mapping(cosine, maximize=True).items():
            if old[col]:
                out[novel[row]] = str(old[col])
        return out

    def refine(self, cl: _Clustering, epoch: int, rng: np.random.Generator) -> dict[str, int]:
        """Groups of clusters whose names embed within the threshold, with a novel one among
        them: one question renames the group's novel clusters (exactly G names)."""
        names = self.cluster_names(cl)
        feats = self.label_features(names)
        sim = feats @ feats.T >= self.p.refine_threshold
        np.fill_diagonal(sim, False)
        groups = [g for g in components(sim) if any(c not in cl.known_of for c in g)]
        # The biggest groups first: they are the most confusable.
        groups.sort(key=lambda g: (-len(g), g[0]))
        cap = self.p.max_refine_groups
        chosen = groups if cap is None else groups[:cap]
        queries, targets = [], []
        for group in chosen:
            query, novel = self._rename_query(cl, group, rng)
            if query is not None:
                queries.append(query)
                targets.append(novel)
        values = self._ask(queries, epoch)
        renamed = 0
        for novel, value in zip(targets, values, strict=False):
            if value is not None:
                self.names.update(dict(zip(novel, value, strict=True)))
                renamed += 1
        return {"groups": len(groups), "asked": len(queries), "renamed": renamed}

    def _rename_query(
        self, cl: _Clustering, group: list[int], rng: np.random.Generator
    ) -> tuple[Query | None, list[int]]:
        novel = [c for c in group if c not in cl.known_of]
        known = [cl.known_of[c] for c in group if c in cl.known_of]
        centers = cl.centers[group]
        texts, ids = [], []
        for c in novel:
            members = cl.members[c]
            if not len(members):
                return None, novel
            local = confidence_margins(
                cl.features[members], np.full(len(members), group.index(c)), centers
            )
            ranked = members[np.argsort(-local, kind="stable")]
            top = ranked[: max(1, math.ceil(self.p.refine_top_share * len(ranked)))]
            sample = cl.pool_ids[draw(rng, top, self.p.refine_samples)]
            texts.append([self.task.train.texts[i] for i in sample])
            ids.append([int(i) for i in sample])
        examples = []
        for y in known:
            rows = np.flatnonzero(self.task.labeled_y == y)
            for i in draw(rng, rows, self.p.refine_known_samples):
                examples.append([self.task.train.texts[int(i)], self.known[y]])
        payload: dict[str, Any] = {"groups": texts, "known_names": self.known}
        if examples:
            payload["local_examples"] = examples
        payload["task"] = self.task.task_word
        return Query(RENAME, payload, {"group_ids": ids}), novel

    def verify(
        self, cl: _Clustering, epoch: int, r_high: float, rng: np.random.Generator
    ) -> tuple[list[int], list[str]]:
        """Sampled members of each (capped) cluster; the LLM keeps those that fit its name."""
        p = self.p
        names = self.cluster_names(cl)
        keys = [label_key(n) for n in names]
        unique = list(dict.fromkeys(keys))
        shown_name = dict(zip(keys, names, strict=True))
        name_feats = self.label_features([shown_name[k] for k in unique])
        known_feats = self.label_features(self.known)
        clusters = [c for c in range(len(names)) if len(cl.members[c])]
        if p.verify_clusters is not None and p.verify_clusters < len(clusters):
            clusters = sorted(rng.choice(clusters, size=p.verify_clusters, replace=False).tolist())
        queries, samples, encoder = [], [], []
        for c in clusters:
            shown = self._verify_sample(cl.members[c], r_high, rng)
            ids = cl.pool_ids[shown]
            zero_shot = (cl.features[shown] @ name_feats.T).argmax(1)
            target = unique.index(keys[c])
            encoder.append([i for i, z in enumerate(zero_shot) if z == target])
            payload = {
                "label": display(names[c]),
                "texts": [self.task.train.texts[i] for i in ids],
                "other_labels": self._reference(names[c], known_feats, name_feats[target]),
                "task": self.task.task_word,
            }
            members = cl.pool_ids[cl.members[c]]
            meta = {"ids": [int(i) for i in ids], "members": [int(i) for i in members]}
            queries.append(Query(VERIFY, payload, meta))
            samples.append((c, ids))
        if self.enabled("verification"):
            values = self._ask(queries, epoch, encoder)
        else:  # LLM-free: every sampled text is kept
            values = [list(range(len(ids))) for _, ids in samples]
        kept_ids, kept_names = [], []
        for (c, ids), value in zip(samples, values, strict=False):
            if value is None:
                continue
            for i in list(value)[: p.verify_keep]:
                kept_ids.append(int(ids[int(i)]))
                kept_names.append(names[c])
        return kept_ids, kept_names

    def _verify_sample(
        self, members: np.ndarray, r_high: float, rng: np.random.Generator
    ) -> np.ndarray:
        """k_high from the top r_h, k_low from the bottom r_l, k_mid from the rest; shuffled."""
        n = len(members)
        n_high = max(1, math.ceil(r_high * n))
        n_low = min(int(self.p.ratio_low * n), n - n_high)
        high, low = members[:n_high], members[n - n_low :] if n_low else members[:0]
        mid = members[n_high : n - n_low]
        parts = [draw(rng, high, self.p.k_high), draw(rng, mid, self.p.k_mid)]
        parts.append(draw(rng, low, self.p.k_low))
        return rng.permutation(np.concatenate(parts).astype(np.int64))

    def _reference(
        self, target: str, known_feats: np.ndarray, target_feat: np.ndarray
    ) -> list[str]:
        """The other known labels, nearest to the target's name first (capped)."""
        others = [i for i, n in enumerate(self.known) if label_key(n) != label_key(target)]
        if self.p.reference_labels is not None:
            order = np.argsort(-(known_feats[others] @ target_feat), kind="stable")
            others = [others[i] for i in order[: self.p.reference_labels]]
        return [display(self.known[i]) for i in others]

    def phase2(self) -> None:
        p, task = self.p, self.task
        rng = self.ctx.rng("tlsa-phase2")
        lab_ids = np.arange(task.num_labeled)
        lab_names = [self.known[int(y)] for y in task.labeled_y]
        with self.ctx.timed("phase2"), self.ctx.reporter.stage("tlsa phase 2"):
            for epoch in range(1, p.epochs + 1):
                share = (epoch - 1) / (p.epochs - 1) if p.epochs > 1 else 0.0
                r_high = p.ratio_high_start + (p.ratio_high_end - p.ratio_high_start) * share
                cl = self.cluster(rng)
                named = self.name_novel(cl, epoch, r_high, rng)
                refined: dict[str, int] = {}
                if self.enabled("refinement") and epoch >= p.refine_start:
                    refined = self.refine(cl, epoch, rng)
                kept_ids, kept_names = self.verify(cl, epoch, r_high, rng)
                ids = np.concatenate([lab_ids, np.asarray(kept_ids, dtype=np.int64)])
                # A fresh optimiser every epoch, clipped, as the released phase 2 does.
                opt = self._optimiser(p.lr, p.head_lr)
                losses = self.train_pass(ids, lab_names + kept_names, opt, rng, clip=True)
                self.final_names = self.cluster_names(cl)
                self.epoch_log.append(
                    {
                        "epoch": epoch,
                        "r_high": round(r_high, 4),
                        "named": named,
                        "refine": refined,
                        "verified_pairs": len(kept_ids),
                        "novel_names": len({label_key(self.names[c]) for c in self.names}),
                        **losses,
                    }
                )

    # ---- output ------------------------------------------------------------------------------
    def name_test_clusters(
        self, features: np.ndarray, assignments: np.ndarray
    ) -> dict[int, ClusterInfo]:
        """Each test cluster named by the label name nearest its centroid."""
        names = list(dict.fromkeys(self.final_names))
        if not names:
            return {}
        feats = self.label_features(names)
        out = {}
        for c in np.unique(assignments):
            center = l2_normalise(features[assignments == c].mean(0))
            best = names[int((feats @ center).argmax())]
            out[int(c)] = ClusterInfo(best, "the label name nearest the cluster's centroid")
        return out

    def diagnostics(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup_log,
            "epochs": self.epoch_log,
            "questions": dict(self.questions),
            "unusable_answers": dict(self.failed),
            "not_asked_budget": self.not_asked,
            "novel_names": sorted({self.names[c] for c in self.names}),
        }


@hookimpl
def register_methods(register):
    register(Tlsa)


@hookimpl
def register_query_kinds(register):
    for kind in KINDS:
        register(kind)
