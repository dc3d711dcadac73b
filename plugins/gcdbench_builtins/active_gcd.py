"""``active-gcd``: Active Generalized Category Discovery (Ma et al., CVPR 2024, arXiv
2403.04272) ported to text, as docs/methods/active-gcd.md describes it.

A SimGCD-style parametric model (a trainable residual MLP over the run's frozen encoder
features, a projection for the contrastive terms and a cosine prototype classifier over K =
``task.num_classes`` heads) is trained with SimGCD's losses (§1.3). Then R rounds: pick Q
unlabeled texts with the query strategy (default Adaptive-Novel, §1.4), ask for each which
group of the model's label space it belongs to (query kind ``assign-to-group``: a known class,
a novel head shown by its most typical texts, or none), and train on the answers: each epoch
the SimGCD pass, the stable label mapping (Hungarian match of the EMA model's argmax on every
labeled text against its label), then CE (and SupCon) on the queried texts' mapped labels.
The test texts are assigned to the argmax head.

This port is our design, not the authors' code: the paper fine-tunes a ViT on images with a
gold-label oracle; here the backbone is frozen text features and the oracle is the run's
feedback provider (``--llm oracle`` reveals the gold class in the model's label space, an LLM
answers the same question).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gcdbench.api import (
    LAYOUTS,
    AskingPolicy,
    ClusterInfo,
    Component,
    FeedbackLog,
    GCDTask,
    Method,
    MethodOutput,
    Query,
    RunContext,
    hookimpl,
    param,
)
from gcdbench.api.asking import ask, usable
from gcdbench.api.toolkit import hungarian_mapping, l2_normalise, torch_threads
from gcdbench_builtins.active_gcd_kinds import ASSIGN, KINDS

if TYPE_CHECKING:
    import torch

#: query strategies (the released code's names in docs/methods/active-gcd.md §1.4)
STRATEGIES = ("novel-margin-adaptive", "novel-margin", "margin", "entropy", "random")
MAPPINGS = ("hungarian", "answer")


@dataclass(frozen=True)
class ActiveGCDParams:
    # -- active rounds (§1.4)
    rounds: int = param(3, ge=0, help="R: active rounds (paper 5)")
    queries: int = param(50, ge=0, help="Q: texts asked about per round (paper 100)")
    strategy: str = param(
        "novel-margin-adaptive", choices=STRATEGIES, help="which unlabeled texts to ask about"
    )
    adaptive_round: int = param(
        2, ge=1, help="from this round on the least confident novel texts, before it the most"
    )
    min_quota: int = param(
        1,
        ge=0,
        help="texts per predicted novel cluster at least (0: only the code's floor(Q / #novel))",
    )
    # -- the question (§4)
    exemplars: int = param(
        2, ge=1, help="texts shown per novel group (its members nearest its prototype)"
    )
    exemplar_words: int = param(24, ge=4, help="an exemplar text is cut to this many words")
    group_options: int = param(
        0, ge=0, help="novel groups offered per question: 0 every one, m the m likeliest"
    )
    orderings: int = param(1, ge=1, help="ask each question in this many option orders")
    min_confidence: float | None = param(
        None, ge=0, le=1, help="drop answers below this stated confidence (none: ask for none)"
    )
    prompt_layout: str = param(
        "cache-friendly", choices=LAYOUTS, help="options before the text (cache-friendly) or after"
    )
    mapping: str = param(
        "hungarian",
        choices=MAPPINGS,
        help="queried labels to heads: the paper's Hungarian map, or the head the answer named",
    )
    # -- the model and SimGCD (§1.3)
    adapter_dim: int = param(768, ge=1, help="hidden width of the residual MLP over the features")
    proj_dim: int = param(512, ge=1, help="hidden width of the projection MLP (paper 2048)")
    bottleneck_dim: int = param(256, ge=1, help="output width of the projection")
    base_epochs: int = param(10, ge=0, help="SimGCD epochs before the first round (paper 100)")
    round_epochs: int = param(5, ge=0, help="epochs per active round (paper 15)")
    batch_size: int = param(128, ge=2, help="SimGCD batch size (half labeled on average)")
    al_batch_size: int = param(8, ge=1, help="batch size of the queried texts' pass")
    lr: float = param(0.1, gt=0, help="SGD learning rate (cosine-annealed per stage)")
    momentum: float = param(0.9, ge=0, lt=1, help="SGD momentum")
    weight_decay: float = param(5e-5, ge=0, help="SGD weight decay (not on biases)")
    sup_weight: float = param(0.35, ge=0, le=1, help="weight of the supervised terms")
    memax_weight: float = param(2.0, ge=0, help="weight of mean-entropy maximisation")
    warmup_teacher_temp: float = param(0.07, gt=0, help="teacher temperature at the start")
    teacher_temp: float = param(0.04, gt=0, help="teacher temperature after the warm-up")
    warmup_teacher_temp_epochs: int = param(3, ge=1, help="base epochs of the warm-up (paper 30)")
    round_teacher_temp: float = param(0.04, gt=0, help="teacher temperature in the rounds")
    logits_temp: float = param(0.1, gt=0, help="student / logits temperature")
    ema_decay: float = param(0.9, ge=0, lt=1, help="EMA teacher decay, after every step")
    al_weight: float = param(1.0, ge=0, help="weight of the queried texts' CE and SupCon")
    view_dropout: float = param(
        0.2, ge=0, lt=1, help="feature dropout making each of the two views"
    )
    contrastive: bool = param(
        False,
        help="add SimGCD's SimCLR and SupCon terms (a projection MLP; barely move on frozen "
        "features, so off on cpu)",
    )
    torch_threads: int = param(
        1, ge=0, help="torch threads while training (0: torch's own setting)"
    )


_PAPER = {
    "contrastive": True,
    "rounds": 5,
    "queries": 100,
    "min_quota": 0,
    "proj_dim": 2048,
    "base_epochs": 100,
    "round_epochs": 15,
    "warmup_teacher_temp_epochs": 30,
}
_SMOKE = {
    "rounds": 2,
    "queries": 6,
    "adaptive_round": 2,
    "adapter_dim": 32,
    "proj_dim": 32,
    "bottleneck_dim": 16,
    "base_epochs": 2,
    "round_epochs": 1,
    "batch_size": 128,
    "warmup_teacher_temp_epochs": 2,
}


class ActiveGCD(Method):
    name = "active-gcd"
    description = (
        "Active GCD (Ma et al. 2024) on text: SimGCD head on frozen features, rounds of "
        "Adaptive-Novel queries answered in the head's label space (which known class or "
        "new group), stable Hungarian label mapping, EMA teacher; argmax on test. "
        "Defaults = the cpu preset; presets: cpu, paper, smoke"
    )
    version = "1"
    uses = ("encoder", "feedback")
    asks = (ASSIGN,)
    components = (
        Component("active", "the queries (ablated: base SimGCD, the rounds train without them)"),
        Component("mapping", "the stable label mapping (ablated: raw label ids as head indices)"),
    )
    Params = ActiveGCDParams
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "cpu": {},
        "paper": _PAPER,
        "smoke": _SMOKE,
    }

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: ActiveGCDParams = self.params
        pool = l2_normalise(np.asarray(ctx.embed(task.train), dtype=np.float32))
        test = l2_normalise(np.asarray(ctx.embed(task.test), dtype=np.float32))
        with torch_threads(params.torch_threads):
            model = _Model(pool.shape[1], task.num_classes, params, ctx.rng("init"))
            run = _ActiveRun(task, ctx, params, model, pool, self.enabled)
            with ctx.timed("base-training"):
                base_losses = run.train_base()
            rounds = [run.round(r) for r in range(1, params.rounds + 1)]
            with ctx.timed("predict"):
                assignments = model.probs(test).argmax(1).astype(np.int64)
        known_map = run.known_heads()
        clusters = {
            head: ClusterInfo(task.known_class_names[c], "known class (labeled texts)")
            for c, head in known_map.items()
        }
        return MethodOutput(
            test_assignments=assignments,
            clusters=clusters,
            diagnostics=run.diagnostics(base_losses, rounds, assignments),
            feedback_log=run.log,
        )


# -- the query strategy (docs/methods/active-gcd.md §1.4) ----------------------------------


def margins(probs: np.ndarray) -> np.ndarray:
    """p_top1 − p_top2 per row: small = uncertain."""
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2] if probs.shape[1] > 1 else top[:, -1]


def entropies(probs: np.ndarray) -> np.ndarray:
    return -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=1)


@dataclass
class Selection:
    """Positions picked among the candidates, best-ranked first, and how they were found."""

    picked: np.ndarray
    confident_first: bool = False
    quota: int = 0
    filled_novel: int = 0
    filled_other: int = 0


def select_queries(
    probs: np.ndarray,
    n: int,
    *,
    strategy: str,
    round_index: int,
    adaptive_round: int,
    novel_heads: Sequence[int],
    min_quota: int,
    rng: np.random.Generator,
) -> Selection:
    """Pick ``n`` rows of ``probs`` (the candidates' class probabilities).

    ``novel-margin-adaptive`` (Adaptive-Novel): rank by margin, the most confident first while
    ``round_index < adaptive_round`` and the least confident from then on; keep rows whose
    argmax is a novel head; take ``max(min_quota, n // |novel heads|)`` per predicted novel
    cluster, the best-ranked ``n`` of those, then fill a shortfall with the next-ranked
    novel-predicted rows and, past those, the next-ranked others (the code asserts instead).
    ``novel-margin`` is the same with the least confident first in every round.
    """
    m = len(probs)
    n = min(n, m)
    if n <= 0:
        return Selection(np.zeros(0, dtype=np.int64))
    if strategy == "random":
        return Selection(np.sort(rng.choice(m, size=n, replace=False)).astype(np.int64))
    if strategy == "entropy":
        return Selection(np.argsort(-entropies(probs), kind="stable")[:n].astype(np.int64))
    margin = margins(probs)
    if strategy == "margin":
        return Selection(np.argsort(margin, kind="stable")[:n].astype(np.int64))
    confident_first = strategy == "novel-margin-adaptive" and round_index < adaptive_round
    order = np.argsort(-margin if confident_first else margin, kind="stable")
    preds = probs.argmax(axis=1)
    novel = set(int(h) for h in novel_heads)
    quota = max(min_quota, n // len(novel)) if novel else 0
    picked: list[int] = []
    if quota:
        for head in sorted(novel):
            picked.extend(int(i) for i in order[preds[order] == head][:quota])
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    picked = sorted(picked, key=lambda i: rank[i])[:n]
    taken = set(picked)
    novel_rest = [int(i) for i in order if int(preds[i]) in novel and int(i) not in taken]
    fill_novel = novel_rest[: n - len(picked)]
    taken.update(fill_novel)
    others = [int(i) for i in order if int(i) not in taken]
    fill_other = others[: n - len(picked) - len(fill_novel)]
    out = np.asarray(picked + fill_novel + fill_other, dtype=np.int64)
    return Selection(out, confident_first, quota, len(fill_novel), len(fill_other))


# -- the stable label mapping (§1.4) ---------------------------------------------------------


def label_mapping(preds: np.ndarray, labels: np.ndarray, num_heads: int) -> dict[int, int]:
    """{label: head}: the Hungarian match of the model's argmax ``preds`` against ``labels``
    over their count matrix (the released code's ``get_labeled_mapping``), so a label lands on
    the head the model already uses for most of its texts. Labels beyond ``num_heads``
    distinct ones stay unmatched."""
    preds = np.asarray(preds, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return {}
    values = np.unique(labels)
    counts = np.zeros((len(values), num_heads), dtype=np.int64)
    np.add.at(counts, (np.searchsorted(values, labels), preds), 1)
    matched = hungarian_mapping(counts, maximize=True)
    return {int(values[row]): head for row, head in matched.items()}


# -- the model: frozen features -> residual MLP -> cosine prototypes (§1.3) -----------------


class _Model:
    """Parameters as plain tensors, so the module imports no torch: the adapter ``a*`` (a
    residual MLP whose last layer starts at zero, so training starts from the frozen
    features), the projection ``p*`` (DINOHead's 3-layer MLP to the bottleneck, for the
    contrastive terms) and ``protos`` (the cosine classifier: SimGCD's weight-normalised last
    layer with g fixed at 1)."""

    def __init__(self, dim: int, k: int, params: ActiveGCDParams, rng: np.random.Generator) -> None:
        import torch

        torch_gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        self.k = k
        self.params = params

        def weight(rows: int, cols: int, std: float = 0.02) -> torch.Tensor:
            # DINOHead's trunc_normal_(std=.02) init
            w = torch.randn(rows, cols, generator=torch_gen) * std
            return w.clamp(-2 * std, 2 * std).requires_grad_()

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape).requires_grad_()

        a, p, b = params.adapter_dim, params.proj_dim, params.bottleneck_dim
        self.weights: dict[str, torch.Tensor] = {
            "a1": weight(dim, a),
            "a1b": zeros(a),
            "a2": zeros(a, dim),
            "a2b": zeros(dim),
            "p1": weight(dim, p),
            "p1b": zeros(p),
            "p2": weight(p, p),
            "p2b": zeros(p),
            "p3": weight(p, b),
            "p3b": zeros(b),
            # nn.Linear's default init (uniform ±1/sqrt(dim)), which weight_norm keeps as the
            # direction's scale: rows of norm ~0.6, so SGD moves the directions at lr 0.1
            "protos": (
                (torch.rand(k, dim, generator=torch_gen) * 2 - 1) / math.sqrt(dim)
            ).requires_grad_(),
        }
        self.ema: dict[str, torch.Tensor] | None = None

    def forward(
        self, x: torch.Tensor, weights: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(adapted features, normalised adapted features, cosine logits) of rows ``x``."""
        import torch.nn.functional as F

        w = weights or self.weights
        h = x + F.gelu(x @ w["a1"] + w["a1b"]) @ w["a2"] + w["a2b"]
        z = F.normalize(h, dim=-1)
        logits = z @ F.normalize(w["protos"], dim=-1).T
        return h, z, logits

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """DINOHead's projection of the adapted (unnormalised) features, for the contrastive
        terms only; computed only when they are on."""
        import torch.nn.functional as F

        w = self.weights
        proj = F.gelu(h @ w["p1"] + w["p1b"])
        return F.gelu(proj @ w["p2"] + w["p2b"]) @ w["p3"] + w["p3b"]

    def logits(self, features: np.ndarray, *, ema: bool = False) -> np.ndarray:
        import torch

        weights = self.ema if ema and self.ema is not None else self.weights
        out = []
        with torch.no_grad():
            for start in range(0, len(features), 2048):
                x = torch.from_numpy(features[start : start + 2048])
                out.append(self.forward(x, weights)[2].numpy())
        return np.concatenate(out) if out else np.zeros((0, self.k), dtype=np.float32)

    def probs(self, features: np.ndarray, *, ema: bool = False) -> np.ndarray:
        logits = self.logits(features, ema=ema) / self.params.logits_temp
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def embed(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(normalised adapted features, normalised prototypes) as numpy."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            z = self.forward(torch.from_numpy(features))[1].numpy()
            protos = F.normalize(self.weights["protos"], dim=-1).numpy()
        return z, protos

    def start_ema(self) -> None:
        self.ema = {k: v.detach().clone() for k, v in self.weights.items()}

    def update_ema(self) -> None:
        import torch

        if self.ema is None:
            return
        decay = self.params.ema_decay
        with torch.no_grad():
            for key, value in self.weights.items():
                self.ema[key].mul_(decay).add_(value.detach(), alpha=1 - decay)

    def optimizer(self, epochs: int) -> tuple[Any, Any]:
        """SGD (no weight decay on 1-d parameters, as SimGCD's param groups), cosine to
        lr·1e-3."""
        import torch

        p = self.params
        decayed = [v for v in self.weights.values() if v.ndim > 1]
        plain = [v for v in self.weights.values() if v.ndim == 1]
        groups: list[dict[str, Any]] = [
            {"params": decayed},
            {"params": plain, "weight_decay": 0.0},
        ]
        opt = torch.optim.SGD(
            groups,
            lr=p.lr,
            momentum=p.momentum,
            weight_decay=p.weight_decay,
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(epochs, 1), eta_min=p.lr * 1e-3
        )
        return opt, sched


# -- SimGCD's losses ------------------------------------------------------------------------


def _distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, student_temp: float, teacher_temp: float
) -> torch.Tensor:
    """SimGCD's DistillLoss: each view's student against the other view's sharpened output."""
    import torch.nn.functional as F

    s = (student / student_temp).chunk(2)
    t = F.softmax(teacher / teacher_temp, dim=-1).detach().chunk(2)
    first = (-t[0] * F.log_softmax(s[1], dim=-1)).sum(dim=-1).mean()
    second = (-t[1] * F.log_softmax(s[0], dim=-1)).sum(dim=-1).mean()
    return (first + second) / 2


def _memax(student: torch.Tensor, student_temp: float) -> torch.Tensor:
    """log K − H(mean prediction): zero when the batch spreads evenly over the heads."""
    import torch

    avg = (student / student_temp).softmax(dim=1).mean(dim=0)
    return (avg * torch.log(avg.clamp_min(1e-12))).sum() + math.log(float(len(avg)))


def _info_nce(proj: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """SimCLR over the two views (SimGCD's info_nce_logits, temperature 1 as its call)."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(proj, dim=1)
    n = len(z) // 2
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def _supcon(proj: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SupConLoss (Khosla et al.) over two views of each row, the views stacked."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(proj, dim=1)
    y = torch.cat([labels, labels])
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    self_mask = torch.eye(len(z), dtype=torch.bool)
    positive = (y[:, None] == y[None, :]) & ~self_mask
    exp = torch.exp(logits).masked_fill(self_mask, 0.0)
    log_prob = logits - torch.log(exp.sum(dim=1, keepdim=True))
    mean_pos = (positive * log_prob).sum(dim=1) / positive.sum(dim=1).clamp_min(1)
    return -mean_pos.mean()


# -- one run ---------------------------------------------------------------------------------


@dataclass
class _Asked:
    """One round's questions: the pool ids asked about, the head of each option (−1: none),
    the answers, and how the strategy found them."""

    chosen: np.ndarray
    offered: list[list[int]]
    answers: Sequence[Any]
    selection: Selection


@dataclass
class _Labeled:
    """The queried texts usable for training: pool id, label id, the head the answer named."""

    ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)


class _ActiveRun:
    def __init__(
        self,
        task: GCDTask,
        ctx: RunContext,
        params: ActiveGCDParams,
        model: _Model,
        pool: np.ndarray,
        enabled: Callable[[str], bool],
    ) -> None:
        self.task, self.ctx, self.params, self.model, self.pool = task, ctx, params, model, pool
        self.enabled = enabled
        self.n_labeled = task.num_labeled
        self.labeled_y = np.asarray(task.labeled_y, dtype=np.int64)
        self.queried = _Labeled()
        self.asked: set[int] = set()
        #: the label id of each novel head an answer named (known labels are the class ids)
        self.novel_label: dict[int, int] = {}
        self.log = FeedbackLog()
        self.mapping_agreement: list[float | None] = []

    # -- training ---------------------------------------------------------------------------

    def train_base(self) -> dict[str, float]:
        p = self.params
        rng = self.ctx.rng("base-training")
        temps = _teacher_schedule(
            p.warmup_teacher_temp, p.teacher_temp, p.warmup_teacher_temp_epochs, p.base_epochs
        )
        opt, sched = self.model.optimizer(p.base_epochs)
        losses: dict[str, float] = {}
        for epoch in range(p.base_epochs):
            losses = self._simgcd_epoch(opt, temps[epoch], rng)
            sched.step()
        return losses

    def _views(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Two views of each row by feature dropout (inverted scaling): the text port's stand-in
        for image augmentations (§6)."""
        import torch

        keep = 1.0 - self.params.view_dropout
        both = torch.cat([x, x])
        if keep >= 1.0:
            return both
        mask = (torch.rand(both.shape, generator=gen) < keep).float() / keep
        return both * mask

    def _simgcd_epoch(
        self, opt: Any, teacher_temp: float, rng: np.random.Generator
    ) -> dict[str, float]:
        """One pass of SimGCD over the pool: a balanced sampler (labeled texts weigh 1, the
        unlabeled n_l/n_u, as the code's WeightedRandomSampler), drop_last."""
        import torch
        import torch.nn.functional as F

        p = self.params
        n = len(self.pool)
        nl = self.n_labeled
        weights = np.full(n, 1.0)
        if 0 < nl < n:
            weights[nl:] = nl / (n - nl)
        draw = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        labels_all = torch.from_numpy(self.labeled_y)
        sums: defaultdict[str, float] = defaultdict(float)
        steps = 0
        w = p.sup_weight
        contrastive = p.contrastive
        batch = min(p.batch_size, n)  # a pool smaller than a batch still trains
        for start in range(0, n - batch + 1, batch):
            idx = draw[start : start + batch]
            x = torch.from_numpy(self.pool[idx])
            lab = torch.from_numpy(idx < nl)
            h, _, out = self.model.forward(self._views(x, gen))
            cluster = _distill_loss(out, out.detach(), p.logits_temp, teacher_temp)
            memax = _memax(out, p.logits_temp)
            loss = (1 - w) * (cluster + p.memax_weight * memax)
            terms = {"cluster": cluster, "memax": memax}
            if bool(lab.any()):
                y = labels_all[torch.from_numpy(idx[idx < nl])]
                sup_logits = torch.cat([f[lab] for f in (out / p.logits_temp).chunk(2)])
                cls = F.cross_entropy(sup_logits, torch.cat([y, y]))
                loss = loss + w * cls
                terms["cls"] = cls
            if contrastive:
                proj = self.model.project(h)
                con = _info_nce(proj)
                loss = loss + (1 - w) * con
                terms["contrastive"] = con
                if bool(lab.any()):
                    views = proj.chunk(2)
                    sc = _supcon(torch.cat([views[0][lab], views[1][lab]]), y)
                    loss = loss + w * sc
                    terms["supcon"] = sc
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.model.update_ema()
            steps += 1
            for key, value in terms.items():
                sums[key] += float(value.detach())
            sums["total"] += float(loss.detach())
        return {k: round(v / max(steps, 1), 5) for k, v in sorted(sums.items())}

    def _al_epoch(self, opt: Any, targets: list[int], rng: np.random.Generator) -> dict[str, float]:
        """The pass over the queried texts: CE on their mapped labels (logits at
        ``logits_temp``) and SupCon on their raw labels, × al_weight × sup_weight."""
        import torch
        import torch.nn.functional as F

        p = self.params
        keep = [i for i, t in enumerate(targets) if t >= 0]
        if not keep:
            return {}
        order = [keep[i] for i in rng.permutation(len(keep))]
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        ids = np.asarray(self.queried.ids, dtype=np.int64)
        raw = torch.tensor(self.queried.labels, dtype=torch.int64)
        mapped = torch.tensor(targets, dtype=torch.int64)
        sums: defaultdict[str, float] = defaultdict(float)
        steps = 0
        for start in range(0, len(order), p.al_batch_size):
            batch = torch.tensor(order[start : start + p.al_batch_size], dtype=torch.int64)
            x = torch.from_numpy(self.pool[ids[batch.numpy()]])
            h, _, out = self.model.forward(self._views(x, gen))
            target = mapped[batch]
            cls = F.cross_entropy(out / p.logits_temp, torch.cat([target, target]))
            loss = p.al_weight * p.sup_weight * cls
            terms = {"cls_al": cls}
            if p.contrastive:
                views = self.model.project(h).chunk(2)
                sc = _supcon(torch.cat([views[0], views[1]]), raw[batch])
                loss = loss + p.al_weight * p.sup_weight * sc
                terms["supcon_al"] = sc
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.model.update_ema()
            steps += 1
            for key, value in terms.items():
                sums[key] += float(value.detach())
        return {k: round(v / max(steps, 1), 5) for k, v in sorted(sums.items())}

    def _targets(self) -> tuple[list[int], float | None]:
        """The head each queried text is trained towards, and the share of novel labels the
        Hungarian map sends to the head their answer named (None without novel labels)."""
        labels = self.queried.labels
        if not labels:
            return [], None
        k = self.model.k
        if not self.enabled("mapping"):
            # the paper's "w/o mapping": label ids used as head indices as they are
            return [lab if lab < k else -1 for lab in labels], None
        if self.params.mapping == "answer":
            return list(self.queried.heads), None
        ids = np.concatenate([np.arange(self.n_labeled), np.asarray(self.queried.ids)])
        all_labels = np.concatenate([self.labeled_y, np.asarray(labels)])
        preds = self.model.logits(self.pool[ids], ema=True).argmax(1)
        ind_map = label_mapping(preds, all_labels, k)
        novel = {lab: head for head, lab in self.novel_label.items()}
        agree = [ind_map.get(lab) == head for lab, head in novel.items() if lab in ind_map]
        return [ind_map.get(lab, -1) for lab in labels], (float(np.mean(agree)) if agree else None)

    def train_round(self, rng: np.random.Generator) -> dict[str, Any]:
        p = self.params
        opt, sched = self.model.optimizer(p.round_epochs)
        simgcd: dict[str, float] = {}
        al: dict[str, float] = {}
        agreement: float | None = None
        for _ in range(p.round_epochs):
            simgcd = self._simgcd_epoch(opt, p.round_teacher_temp, rng)
            targets, agreement = self._targets()
            al = self._al_epoch(opt, targets, rng) if targets else {}
            sched.step()
        return {"simgcd": simgcd, "al": al, "mapping_agreement": agreement}

    # -- asking -----------------------------------------------------------------------------

    def known_heads(self) -> dict[int, int]:
        """{known class id: head}: the Hungarian match on the labeled texts (the code takes
        heads 0..|C_old|−1, which SimGCD's CE makes the same in practice)."""
        if self.n_labeled == 0:
            return {}
        preds = self.model.logits(self.pool[: self.n_labeled]).argmax(1)
        return label_mapping(preds, self.labeled_y, self.model.k)

    def round(self, r: int) -> dict[str, Any]:
        p = self.params
        info: dict[str, Any] = {"round": r}
        if self.model.ema is None:
            self.model.start_ema()  # the code loads the base weights into both models
        if self.enabled("active") and p.queries > 0:
            with self.ctx.timed("query"):
                info.update(self._query(r))
        with self.ctx.timed("round-training"):
            info["losses"] = self.train_round(self.ctx.rng(f"round-{r}"))
        return info

    def _query(self, r: int) -> dict[str, Any]:
        p = self.params
        candidates = np.asarray(
            [i for i in range(self.n_labeled, len(self.pool)) if i not in self.asked],
            dtype=np.int64,
        )
        if len(candidates) == 0:
            return {"asked": 0}
        probs = self.model.probs(self.pool)
        known_map = self.known_heads()
        known_head_set = set(known_map.values())
        novel_heads = [h for h in range(self.model.k) if h not in known_head_set]
        selection = select_queries(
            probs[candidates],
            p.queries,
            strategy=p.strategy,
            round_index=r,
            adaptive_round=p.adaptive_round,
            novel_heads=novel_heads,
            min_quota=p.min_quota,
            rng=self.ctx.rng(f"query-{r}"),
        )
        chosen = candidates[selection.picked]
        self.asked.update(int(i) for i in chosen)
        groups = self._groups(probs, novel_heads, set(int(i) for i in chosen))
        queries, offered = [], []
        for i in chosen:
            query, heads = self._question(int(i), probs[i], known_map, groups)
            queries.append(query)
            offered.append(heads)
        encoder_values = [
            heads.index(int(probs[i].argmax())) if int(probs[i].argmax()) in heads else None
            for i, heads in zip(chosen, offered, strict=True)
        ]
        asked = ask(self.ctx, queries, log=self.log, round_index=r, encoder_values=encoder_values)
        answers = _Asked(chosen, offered, asked.answers, selection)
        return self._take_answers(answers, known_map, probs, novel_heads)

    def _groups(
        self, probs: np.ndarray, novel_heads: Sequence[int], exclude: set[int]
    ) -> dict[int, list[int]]:
        """The exemplars of each novel head: its members (unlabeled texts whose argmax it is,
        none of this round's queried texts) nearest its prototype. Heads with no member are
        not offered: the texts nearest an empty head's prototype belong to other heads."""
        z, protos = self.model.embed(self.pool)
        preds = probs.argmax(1)
        out: dict[int, list[int]] = {}
        for head in novel_heads:
            members = np.flatnonzero(preds == head)
            members = np.asarray(
                [m for m in members if m >= self.n_labeled and int(m) not in exclude],
                dtype=np.int64,
            )
            if len(members) == 0:
                continue
            sims = z[members] @ protos[head]
            nearest = members[np.argsort(-sims, kind="stable")[: self.params.exemplars]]
            out[head] = [int(m) for m in nearest]
        return out

    def _question(
        self,
        i: int,
        prob: np.ndarray,
        known_map: dict[int, int],
        groups: dict[int, list[int]],
    ) -> tuple[Query, list[int]]:
        """The question about pool text ``i`` and the head of each option (−1: none)."""
        p, task = self.params, self.task
        heads = list(groups)
        if p.group_options:
            heads = sorted(heads, key=lambda h: (-prob[h], h))[: p.group_options]
            heads.sort()
        known = sorted(known_map)
        option_ids = [self._class_ids(c) for c in known]
        option_ids += [groups[h] for h in heads]
        option_ids.append([])
        payload = {
            "text": task.train.texts[i],
            "known": [task.known_class_names[c].replace("_", " ") for c in known],
            "groups": [
                [_cut(task.train.texts[m], p.exemplar_words) for m in groups[h]] for h in heads
            ],
            "task": task.task_word,
        }
        policy = AskingPolicy(
            orderings=p.orderings, min_confidence=p.min_confidence, layout=p.prompt_layout
        )
        query = Query(ASSIGN, payload, {"id": i, "option_ids": option_ids}, policy)
        return query, [known_map[c] for c in known] + heads + [-1]

    def _class_ids(self, c: int) -> list[int]:
        """Labeled pool ids of known class ``c`` (its option's gold reading), a few."""
        ids = np.flatnonzero(self.labeled_y == c)[: max(self.params.exemplars, 1)]
        return [int(j) for j in ids]

    def _take_answers(
        self,
        asked: _Asked,
        known_map: dict[int, int],
        probs: np.ndarray,
        novel_heads: Sequence[int],
    ) -> dict[str, Any]:
        """Keep the usable answers as labels: a known class's id, or the label of the novel
        head named (one label per head across rounds, so the mapping can follow it). An
        answer that is not ok is wasted, a "none of these groups" counted and not used."""
        nk = self.task.num_known
        class_of_head = {head: c for c, head in known_map.items()}
        chosen, selection = asked.chosen, asked.selection
        used: list[bool] = []
        none_answers = wasted = 0
        answered_heads: list[int] = []
        for i, heads, answer in zip(chosen, asked.offered, asked.answers, strict=True):
            if not usable(answer):
                wasted += 1
                used.append(False)
                continue
            head = heads[int(answer.value)]
            if head < 0:
                none_answers += 1
                used.append(False)
                continue
            if head in class_of_head:
                label = class_of_head[head]
            else:
                label = self.novel_label.setdefault(head, nk + len(self.novel_label))
            self.queried.ids.append(int(i))
            self.queried.labels.append(label)
            self.queried.heads.append(head)
            answered_heads.append(head)
            used.append(True)
        if self.log.asked:
            self.log.asked[-1].used = used
        preds = probs[chosen].argmax(1)
        novel = set(novel_heads)
        answered_novel = [h for h in answered_heads if h in novel]
        return {
            "asked": len(chosen),
            "used": sum(used),
            "wasted": wasted,
            "none_answers": none_answers,
            "confident_first": selection.confident_first,
            "quota": selection.quota,
            "filled_novel": selection.filled_novel,
            "filled_other": selection.filled_other,
            "predicted_novel_ratio": _ratio(sum(int(h) in novel for h in preds), len(preds)),
            "answered_novel_ratio": _ratio(
                len(answered_novel) + none_answers, sum(used) + none_answers
            ),
            "novel_head_coverage_predicted": _ratio(len(set(preds.tolist()) & novel), len(novel)),
            "novel_head_coverage_answered": _ratio(len(set(answered_novel)), len(novel)),
            "novel_uniformity": _uniformity(answered_novel, len(novel)),
        }

    # -- diagnostics ------------------------------------------------------------------------

    def diagnostics(
        self, base_losses: dict[str, float], rounds: list[dict[str, Any]], assignments: np.ndarray
    ) -> dict[str, Any]:
        asked = sum(r.get("asked", 0) for r in rounds)
        return {
            "backbone": "frozen run-encoder features + trainable residual MLP (text port)",
            "base_losses_last_epoch": base_losses,
            "rounds": rounds,
            "queries_asked": asked,
            "queries_used": len(self.queried.ids),
            "queries_wasted": sum(r.get("wasted", 0) for r in rounds),
            "none_answers": sum(r.get("none_answers", 0) for r in rounds),
            "novel_labels": len(self.novel_label),
            "test_heads_used": len(np.unique(assignments)),
        }


def _teacher_schedule(warm: float, final: float, warm_epochs: int, epochs: int) -> list[float]:
    """SimGCD's schedule: linear from ``warm`` to ``final`` over ``warm_epochs``, then flat."""
    warm_epochs = min(warm_epochs, epochs)
    ramp = np.linspace(warm, final, warm_epochs).tolist() if warm_epochs else []
    return [float(t) for t in ramp] + [final] * (epochs - warm_epochs)


def _cut(text: str, words: int) -> str:
    parts = text.split()
    return text if len(parts) <= words else " ".join(parts[:words]) + " …"


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _uniformity(heads: Sequence[int], num_novel: int) -> float | None:
    """Entropy of the answered novel heads over log |novel heads| (the code's uniformity,
    in head space)."""
    if not heads or num_novel < 2:
        return None
    counts = np.asarray(list(Counter(heads).values()), dtype=np.float64)
    q = counts / counts.sum()
    return round(float(-(q * np.log(q)).sum() / math.log(num_novel)), 4)


@hookimpl
def register_query_kinds(register):
    for kind in KINDS:
        register(kind)


@hookimpl
def register_methods(register):
    register(ActiveGCD)
