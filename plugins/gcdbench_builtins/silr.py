"""SILR as a refiner: Self Iterative Label Refinement via robust unlabeled-unlabeled (UU)
learning (Asano, Kozuno & Baba, arXiv 2502.12565), adapted to many classes.

``gcdbench run METHOD --refine silr`` takes a pseudo-labelling method's labels and, per
cluster c, treats the texts labelled c (U_c) and the rest (U'_c) as two unlabeled sets with
different shares of class c. One head on frozen encoder features, one logit per cluster, is
trained with the robust UU risk of every cluster (partial risks clamped by a generalized
leaky ReLU); every text is relabelled with the argmax over the one-vs-rest scores, the priors
are re-estimated, the head re-initialised, and so on for ``iterations`` rounds. Priors come
from the labeled known-class texts only (the default ``paper`` variant) or, as the released
code reads them, from gold labels (``official``, marked as leaking labels).
docs/methods/silr.md describes every step; its sections are cited as silr.md §N.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api import GcdbenchError, MethodOutput, hookimpl, param
from gcdbench.api.refiner import Refiner
from gcdbench.api.toolkit import hungarian_mapping, l2_normalise, torch_threads

if TYPE_CHECKING:
    import torch

    from gcdbench.api import GCDTask, RunContext

#: θ1 − θ2 below this and the UU weights 1/(θ1 − θ2) exceed 20: the class is too unreliable
#: (or its rates too uncertain) to correct, and keeps its pseudo-labels (silr.md §1.4).
MIN_GAP = 0.05
#: The smallest class prior used: π must stay positive for θ1 = π r / q to mean anything.
PI_FLOOR = 1e-4
#: The released code's warm-up share of its cosine schedule (scripts/train.py: 3%).
WARMUP_SHARE = 0.03
_EPS = 1e-12
_LEAK_WHY = "silr --variant official: class priors and theta from gold labels, as the released code"


@dataclass(frozen=True)
class SilrParams:
    iterations: int = param(
        5, ge=1, le=50, help="train-relabel rounds, each with a fresh head (paper and code: 5)"
    )
    epochs: int = param(30, ge=1, help="epochs per round (the code's 3 fine-tune a 1B LM)")
    lr: float = param(0.03, gt=0, le=1, help="AdamW learning rate (cosine, 3% warm-up)")
    batch_size: int = param(256, ge=1, help="texts per step")
    weight_decay: float = param(1e-4, ge=0, help="AdamW weight decay")
    gamma: float = param(
        -0.001,
        ge=-1,
        le=1,
        help="slope of the generalized leaky ReLU below 0 (code: -0.001; 1: no clamp, the "
        "plain unbiased UU risk)",
    )
    loss: str = param(
        "logistic",
        choices=("logistic", "sigmoid"),
        help="l(z, y): logistic log(1 + e^-yz), whose one-vs-rest scores compare across "
        "clusters; sigmoid s(-yz) is the paper's (binary) loss",
    )
    head: str = param(
        "linear", choices=("linear", "mlp"), help="classifier on frozen encoder features"
    )
    hidden: int = param(256, ge=1, help="hidden units of the mlp head")
    validation_share: float = param(
        0.0,
        ge=0,
        lt=0.9,
        help="share of texts held out to keep the epoch of least UU loss (code: 0.125); "
        "0 trains on all and keeps the last epoch",
    )
    prior_pseudo_count: float = param(
        5.0,
        ge=0,
        help="shrink each known cluster's recall towards the pooled recall by this many "
        "pseudo-texts",
    )
    false_positive: str = param(
        "sum-to-one",
        choices=("sum-to-one", "measured"),
        help="false-positive rate f: the one value making the priors sum to 1, or measured "
        "per cluster on the labeled texts",
    )
    risk: str = param(
        "robust-uu",
        choices=("robust-uu", "supervised"),
        help="supervised: theta1 = 1, theta2 = 0, pi = the shares, i.e. plain self-training "
        "on the pseudo-labels with the same head (an ablation of the UU correction)",
    )
    select: str = param(
        "last",
        choices=("last", "best-labeled"),
        help="labels returned: the last round's (paper), or the round (the input labels "
        "included) most accurate on the labeled texts",
    )
    variant: str = param(
        "paper",
        choices=("paper", "official"),
        help="paper: priors from the labeled texts; official: from gold labels (leaks)",
    )


# -- the robust UU risk ------------------------------------------------------------------------


def generalized_leaky_relu(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """f(x) = x for x > 0, γ·x otherwise. With γ < 0 a negative partial risk (the head
    overfitting the subtraction) costs a little, and its gradient pushes it back up."""
    import torch

    return torch.where(x > 0, x, gamma * x)


def robust_uu_loss(
    scores: torch.Tensor,
    member: torch.Tensor,
    share: torch.Tensor,
    pi: torch.Tensor,
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    gamma: float,
    active: torch.Tensor | None = None,
    loss: str = "sigmoid",
) -> torch.Tensor:
    """The robust UU risk of one-vs-rest scores, averaged over the (active) clusters.

    ``scores`` (B, C) are logits g_c(x); ``member`` (B, C) is 1 where text b is pseudo-
    labelled c (x in U_c), 0 where it is not (x in U'_c); ``share`` (C,) is |U_c| / n in the
    population the batch is drawn from uniformly, so the batch sums divided by B·share and
    B·(1 − share) are unbiased estimates of E_U and E_U' even for a batch without a text of
    a small cluster. Per cluster, with Δ = θ1 − θ2 (silr.md §1.4):

    R+ = (1−θ2)π/Δ · E_U[l(g,+1)] − (1−θ1)π/Δ · E_U'[l(g,+1)]
    R− = θ1(1−π)/Δ · E_U'[l(g,−1)] − θ2(1−π)/Δ · E_U[l(g,−1)]
    loss_c = f(R+) + f(R−), f the generalized leaky ReLU;

    l is the sigmoid loss σ(−y z) (the paper's) or the logistic loss log(1 + e^(−y z)).
    """
    import torch

    batch = scores.shape[0]
    in_u = member.to(scores.dtype)
    in_v = 1.0 - in_u
    if loss == "logistic":
        loss_pos = torch.nn.functional.softplus(-scores)  # l(g, +1)
        loss_neg = torch.nn.functional.softplus(scores)  # l(g, −1)
    else:
        loss_pos = torch.sigmoid(-scores)
        loss_neg = torch.sigmoid(scores)
    n_u = (batch * share).clamp_min(_EPS)
    n_v = (batch * (1.0 - share)).clamp_min(_EPS)
    u_pos = (in_u * loss_pos).sum(0) / n_u
    v_pos = (in_v * loss_pos).sum(0) / n_v
    u_neg = (in_u * loss_neg).sum(0) / n_u
    v_neg = (in_v * loss_neg).sum(0) / n_v
    gap = (theta1 - theta2).clamp_min(_EPS)
    r_pos = ((1 - theta2) * pi * u_pos - (1 - theta1) * pi * v_pos) / gap
    r_neg = (theta1 * (1 - pi) * v_neg - theta2 * (1 - pi) * u_neg) / gap
    per_class = generalized_leaky_relu(r_pos, gamma) + generalized_leaky_relu(r_neg, gamma)
    if active is not None:
        per_class = per_class[active]
    return per_class.mean()


# -- priors --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Priors:
    """Per cluster c: π = P(y = c), θ1 = P(y = c | ŷ = c), θ2 = P(y = c | ŷ ≠ c), whether
    the head may correct it (``active``) or it keeps its pseudo-labels, and why not."""

    pi: np.ndarray
    theta1: np.ndarray
    theta2: np.ndarray
    active: np.ndarray
    reasons: dict[int, str]
    summary: dict[str, Any]


@dataclass(frozen=True)
class Rates:
    """The labeller's rates on the labeled known-class texts, per cluster: r = P(ŷ = c |
    y = k) and f = P(ŷ = c | y ≠ k) for the known class k matched to c, the pooled rates
    for unmatched (novel) clusters; its matched accuracy there."""

    recall: np.ndarray
    false_positive: np.ndarray
    matched: dict[int, int]
    accuracy: float
    labelled: int
    pooled_recall: float
    pooled_false_positive: float


def bayes_priors(
    share: np.ndarray, recall: np.ndarray, false_positive: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """π, θ1, θ2 from the share q labelled c and the rates r, f measured per true class.

    q = π r + (1 − π) f gives π = (q − f) / (r − f); Bayes gives θ1 = π r / q and
    θ2 = π (1 − r) / (1 − q). P(ŷ | y) does not depend on how the labeled texts were drawn,
    so this avoids the bias of reading P(y | ŷ) off a class-balanced sample (silr.md §6).
    π is clipped so that θ1 and θ2 stay probabilities.
    """
    q = np.asarray(share, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    f = np.asarray(false_positive, dtype=np.float64)
    span = r - f
    with np.errstate(divide="ignore", invalid="ignore"):
        pi = np.where(span > _EPS, (q - f) / np.where(span > _EPS, span, 1.0), q)
        upper = np.minimum(
            np.where(r > _EPS, q / np.maximum(r, _EPS), 1.0),
            np.where(r < 1 - _EPS, (1 - q) / np.maximum(1 - r, _EPS), 1.0),
        )
    pi = np.minimum(np.maximum(pi, PI_FLOOR), np.minimum(upper, 1.0))
    theta1 = np.where(q > 0, pi * r / np.maximum(q, _EPS), 0.0)
    theta2 = np.where(q < 1, pi * (1 - r) / np.maximum(1 - q, _EPS), 0.0)
    return pi, np.clip(theta1, 0.0, 1.0), np.clip(theta2, 0.0, 1.0)


def sum_to_one_false_positive(share: np.ndarray, recall: np.ndarray) -> float:
    """The one false-positive rate f under which the priors π_c = (q_c − f) / (r_c − f)
    sum to one (bisection: the sum falls as f grows while q_c < r_c). With one recall r
    for every cluster it is (1 − r) / (C − 1): the labeller's misses spread evenly."""
    q, r = np.asarray(share, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    high = float(min(r.min(), 1.0)) - 1e-9 if len(r) else 0.0
    if len(q) < 2 or high <= 0:
        return 0.0

    def total(f: float) -> float:
        return float(np.clip((q - f) / (r - f), 0.0, None).sum())

    low = 0.0
    if total(low) <= 1.0:
        return 0.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        if total(mid) > 1.0:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def labelled_rates(
    labels: np.ndarray, known_y: np.ndarray, num_clusters: int, num_known: int, pseudo: float
) -> Rates | None:
    """Match clusters to known classes (Hungarian on the labeled confusion) and read each
    matched cluster's recall and false-positive rate, shrunk towards the pooled rates by
    ``pseudo`` pseudo-texts. ``labels`` are cluster codes 0..C−1, C for a cluster absent
    from the test labels, −1 for a text the labeller did not label. None when no labeled
    text was labelled."""
    valid = labels >= 0
    if not valid.any() or num_known == 0:
        return None
    confusion = np.zeros((num_clusters + 1, num_known), dtype=np.float64)
    np.add.at(confusion, (labels[valid], known_y[valid]), 1.0)
    total = float(valid.sum())
    per_class = confusion.sum(0)
    per_cluster = confusion.sum(1)
    matched = {
        c: k
        for c, k in hungarian_mapping(confusion[:num_clusters], maximize=True).items()
        if confusion[c, k] > 0
    }
    hits = sum(confusion[c, k] for c, k in matched.items())
    positives = sum(per_class[k] for k in matched.values())
    false_pos = sum(per_cluster[c] - confusion[c, k] for c, k in matched.items())
    negatives = sum(total - per_class[k] for k in matched.values())
    # The pooled rates stand for novel clusters: an assumption (silr.md §1.4).
    r0 = hits / positives if positives else 0.0
    f0 = false_pos / negatives if negatives else 0.0
    recall = np.full(num_clusters, r0)
    false_positive = np.full(num_clusters, f0)
    for c, k in matched.items():
        recall[c] = (confusion[c, k] + pseudo * r0) / (per_class[k] + pseudo)
        negative = total - per_class[k]
        if negative + pseudo > 0:
            false_positive[c] = (per_cluster[c] - confusion[c, k] + pseudo * f0) / (
                negative + pseudo
            )
    return Rates(recall, false_positive, matched, hits / total, int(total), r0, f0)


def _freeze(
    share: np.ndarray, theta1: np.ndarray, theta2: np.ndarray, reasons: dict[int, str]
) -> np.ndarray:
    """Which clusters the head may correct; the others keep their pseudo-labels."""
    for c in range(len(share)):
        if c in reasons:
            continue
        if share[c] <= 0:
            reasons[c] = "empty cluster"
        elif share[c] >= 1:
            reasons[c] = "every text in one cluster"
        elif theta1[c] - theta2[c] < MIN_GAP:
            reasons[c] = f"theta1 - theta2 < {MIN_GAP}"
    return np.array([c not in reasons for c in range(len(share))], dtype=bool)


def estimate_priors(
    labels: np.ndarray,
    labeled: np.ndarray,
    known_y: np.ndarray,
    num_clusters: int,
    num_known: int,
    pseudo: float,
    false_positive: str = "sum-to-one",
) -> Priors:
    """The ``paper`` variant: priors from the test labels' shares and the labeller's rates
    on the labeled known-class texts, nothing else (silr.md §1.4)."""
    share = np.bincount(labels, minlength=num_clusters)[:num_clusters] / max(len(labels), 1)
    rates = labelled_rates(labeled, known_y, num_clusters, num_known, pseudo)
    reasons: dict[int, str] = {}
    if rates is None:
        reasons.update(
            {c: "no labeled text labelled: reliability unknown" for c in range(num_clusters)}
        )
        zeros = np.zeros(num_clusters)
        return Priors(zeros, zeros, zeros, _freeze(share, zeros, zeros, reasons), reasons, {})
    f = rates.false_positive
    if false_positive == "sum-to-one":
        f = np.full(num_clusters, sum_to_one_false_positive(share, rates.recall))
    pi, theta1, theta2 = bayes_priors(share, rates.recall, f)
    summary = {
        "labelled_accuracy": round(rates.accuracy, 4),
        "labelled_texts": rates.labelled,
        "matched_known": len(rates.matched),
        "novel_pooled": num_clusters - len(rates.matched),
        "pooled_recall": round(rates.pooled_recall, 4),
        "measured_false_positive": round(rates.pooled_false_positive, 5),
        "false_positive_used": round(float(f.mean()), 5),
    }
    return Priors(pi, theta1, theta2, _freeze(share, theta1, theta2, reasons), reasons, summary)


def supervised_priors(labels: np.ndarray, num_clusters: int) -> Priors:
    """θ1 = 1, θ2 = 0, π = q: the UU risk becomes the plain one-vs-rest risk under the
    pseudo-labels (``risk=supervised``, the ablation of SILR's correction)."""
    share = np.bincount(labels, minlength=num_clusters)[:num_clusters] / max(len(labels), 1)
    ones, zeros = np.ones(num_clusters), np.zeros(num_clusters)
    reasons: dict[int, str] = {}
    return Priors(share, ones, zeros, _freeze(share, ones, zeros, reasons), reasons, {})


def gold_priors(labels: np.ndarray, gold: np.ndarray, num_clusters: int) -> Priors:
    """The ``official`` variant: π and θ read off gold labels of the test texts, as the
    released code reads them off its whole training set. Each cluster stands for the gold
    class Hungarian matching gives it (the majority class when clusters outnumber classes)."""
    n = len(labels)
    num_gold = int(gold.max()) + 1 if n else 1
    confusion = np.zeros((num_clusters, num_gold), dtype=np.float64)
    np.add.at(confusion, (labels, gold), 1.0)
    match = hungarian_mapping(confusion, maximize=True)
    target = np.array([match.get(c, int(confusion[c].argmax())) for c in range(num_clusters)])
    size = confusion.sum(1)
    class_size = confusion.sum(0)[target]
    hits = confusion[np.arange(num_clusters), target]
    share = size / max(n, 1)
    pi = class_size / max(n, 1)
    theta1 = np.where(size > 0, hits / np.maximum(size, 1), 0.0)
    theta2 = np.where(size < n, (class_size - hits) / np.maximum(n - size, 1), 0.0)
    reasons: dict[int, str] = {}
    active = _freeze(share, theta1, theta2, reasons)
    summary = {"gold_accuracy": round(float(hits[list(match)].sum() / max(n, 1)), 4)}
    return Priors(pi, theta1, theta2, active, reasons, summary)


# -- the head ------------------------------------------------------------------------------------


class _Head:
    """A linear or one-hidden-layer head with one logit per cluster, its weights drawn from
    the refiner's own generator (torch's global RNG is never touched)."""

    def __init__(self, dim: int, classes: int, kind: str, hidden: int, gen: torch.Generator):
        import torch

        def layer(rows: int, cols: int, std: float) -> tuple[torch.Tensor, torch.Tensor]:
            weight = (torch.randn(rows, cols, generator=gen) * std).requires_grad_()
            return weight, torch.zeros(cols, requires_grad=True)

        if kind == "mlp":
            self.layers = [
                layer(dim, hidden, math.sqrt(2.0 / dim)),
                layer(hidden, classes, 0.1 / math.sqrt(hidden)),
            ]
        else:
            self.layers = [layer(dim, classes, 0.1 / math.sqrt(dim))]

    def parameters(self) -> list[torch.Tensor]:
        return [t for layer in self.layers for t in layer]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight + bias
            if i < len(self.layers) - 1:
                x = x.relu()
        return x

    def snapshot(self) -> list[torch.Tensor]:
        return [t.detach().clone() for t in self.parameters()]

    def load(self, values: list[torch.Tensor]) -> None:
        import torch

        with torch.no_grad():
            for t, v in zip(self.parameters(), values, strict=True):
                t.copy_(v)


def _cosine(total: int) -> Callable[[int], float]:
    """The released code's schedule: linear warm-up over 3% of the steps, then cosine."""
    warm = int(WARMUP_SHARE * total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(total - warm, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass
class _Fit:
    head: _Head
    best_epoch: int
    best_val_loss: float | None


def train_head(
    features: torch.Tensor,
    labels: np.ndarray,
    priors: Priors,
    params: SilrParams,
    gen: torch.Generator,
) -> _Fit:
    """A fresh head trained with the robust UU risk on the texts' current labels (cluster
    codes 0..C−1); with a validation share, the epoch of least UU loss on the held-out texts
    is kept, as the released code keeps its best epoch."""
    import torch

    n, num_clusters = len(labels), len(priors.pi)
    member = torch.zeros(n, num_clusters)
    member[torch.arange(n), torch.as_tensor(labels)] = 1.0
    share = member.mean(0)  # the population both the batches and the held-out texts sample
    pi, theta1, theta2 = (
        torch.as_tensor(v, dtype=torch.float32) for v in (priors.pi, priors.theta1, priors.theta2)
    )
    active = torch.as_tensor(priors.active)

    def risk(idx: torch.Tensor, head: _Head) -> torch.Tensor:
        scores = head(features[idx])
        return robust_uu_loss(
            scores, member[idx], share, pi, theta1, theta2, params.gamma, active, params.loss
        )

    order = torch.randperm(n, generator=gen)
    n_val = min(round(params.validation_share * n), n - 1) if n >= 2 else 0
    val, train = order[:n_val], order[n_val:]
    head = _Head(features.shape[1], num_clusters, params.head, params.hidden, gen)
    optimiser = torch.optim.AdamW(head.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    steps = params.epochs * math.ceil(len(train) / params.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _cosine(steps))
    best: tuple[float, int, list[torch.Tensor]] | None = None
    for epoch in range(params.epochs):
        shuffled = train[torch.randperm(len(train), generator=gen)]
        for batch in shuffled.split(params.batch_size):
            loss = risk(batch, head)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        if n_val:
            with torch.no_grad():
                val_loss = float(risk(val, head))
            if best is None or val_loss < best[0]:
                best = (val_loss, epoch, head.snapshot())
    if best is None:
        return _Fit(head, params.epochs - 1, None)
    head.load(best[2])
    return _Fit(head, best[1], best[0])


def relabel(scores: np.ndarray, current: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Argmax over the active clusters' scores; a text whose label is a frozen cluster keeps
    it (codes outside 0..C−1, unlabelled or an unknown cluster, are always relabelled)."""
    num_clusters = scores.shape[1]
    best = np.where(active[None, :], scores, -np.inf).argmax(1)
    inside = (current >= 0) & (current < num_clusters)
    frozen = inside & ~active[np.clip(current, 0, num_clusters - 1)]
    return np.where(frozen, current, best)


def prepare_features(test: np.ndarray, labeled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows L2-normalised, centred on the test mean and scaled to unit mean variance (one
    scalar, so rare dimensions of sparse features are not blown up)."""
    test = l2_normalise(np.asarray(test, dtype=np.float64))
    mean = test.mean(0)
    scale = float(np.sqrt(((test - mean) ** 2).sum(1).mean() / test.shape[1])) or 1.0
    out_l = np.zeros((0, test.shape[1]))
    if len(labeled):
        out_l = (l2_normalise(np.asarray(labeled, dtype=np.float64)) - mean) / scale
    return ((test - mean) / scale).astype(np.float32), out_l.astype(np.float32)


# -- the refiner ---------------------------------------------------------------------------------


@dataclass
class _State:
    """The current labels as cluster codes: the test texts', and the labeled texts' (C for
    a cluster the test labels lack, −1 for not labelled)."""

    test: np.ndarray
    labeled: np.ndarray


class Silr(Refiner):
    name = "silr"
    description = (
        "SILR (Asano et al., arXiv 2502.12565): per cluster, robust UU learning of pseudo-"
        "labelled vs the rest, one head on frozen encoder features; relabel by argmax, "
        "re-estimate the priors from the labeled texts, iterate (variant official: priors "
        "from gold labels, as the released code)"
    )
    version = "1"
    uses = ("encoder",)
    Params = SilrParams

    @classmethod
    def cross_check(cls, params: Any, num_classes: int | None = None) -> None:
        if params.variant == "official" and params.risk == "supervised":
            raise GcdbenchError(
                "refiner 'silr': variant=official reads gold priors, which risk=supervised "
                "does not use; drop one of them."
            )

    def refine(self, task: GCDTask, ctx: RunContext, output: MethodOutput) -> MethodOutput:
        import torch

        p: SilrParams = self.params
        ids = np.unique(np.asarray(output.test_assignments))
        state = _State(
            np.searchsorted(ids, output.test_assignments).astype(np.int64),
            self._labeled_codes(task, output, ids),
        )
        gold = ctx.leak_gold_labels("test", _LEAK_WHY) if p.variant == "official" else None
        x_test, x_lab = self._features(task, ctx)
        gen = torch.Generator().manual_seed(int(ctx.rng("silr").integers(2**62)))
        history = [state]
        rounds: list[dict[str, Any]] = []
        with torch_threads(1), ctx.reporter.task("silr rounds", total=p.iterations) as advance:
            for t in range(p.iterations):
                priors = self._priors(state, task, len(ids), gold)
                diag = self._round_diag(t, priors)
                rounds.append(diag)
                if not priors.active.any():
                    diag["stopped"] = "every cluster frozen: the labels stay as they are"
                    break
                with ctx.timed("silr:train"):
                    state, fit = self._round(state, priors, x_test, x_lab, gen)
                previous = history[-1].test
                history.append(state)
                final = labelled_rates(state.labeled, task.labeled_y, len(ids), task.num_known, 0)
                diag.update(
                    changed=int((state.test != previous).sum()),
                    agreement=round(float((state.test == previous).mean()), 4),
                    accuracy_on_labeled_after=None if final is None else round(final.accuracy, 4),
                    best_epoch=fit.best_epoch,
                    val_loss=None if fit.best_val_loss is None else round(fit.best_val_loss, 5),
                )
                advance(1)
        chosen = self._select(history, task, len(ids))
        return self._output(task, output, ids, history, chosen, rounds)

    def _round(
        self,
        state: _State,
        priors: Priors,
        x_test: np.ndarray,
        x_lab: np.ndarray,
        gen: torch.Generator,
    ) -> tuple[_State, _Fit]:
        """Train a fresh head on the test texts and the labelled labeled texts, each under its
        current label, and relabel both. The labeled texts are trained on like any other (by
        their pseudo-label, never their gold one), so the rates read off them in the next
        round describe in-sample labels, as the test texts' are (silr.md §1.4)."""
        import torch

        ok = (state.labeled >= 0) & (state.labeled < len(priors.pi))
        features = torch.from_numpy(np.concatenate([x_test, x_lab[ok]]))
        labels = np.concatenate([state.test, state.labeled[ok]])
        fit = train_head(features, labels, priors, self.params, gen)
        with torch.no_grad():
            scores = fit.head(torch.from_numpy(x_test)).numpy()
            scores_l = fit.head(torch.from_numpy(x_lab)).numpy()
        test = relabel(scores, state.test, priors.active)
        labeled = relabel(scores_l, state.labeled, priors.active) if len(x_lab) else state.labeled
        return _State(test, labeled), fit

    def _labeled_codes(self, task: GCDTask, output: MethodOutput, ids: np.ndarray) -> np.ndarray:
        raw = output.labeled_assignments
        if raw is None or len(raw) != task.num_labeled:
            return np.full(task.num_labeled, -1, dtype=np.int64)
        raw = np.asarray(raw, dtype=np.int64)
        pos = np.clip(np.searchsorted(ids, raw), 0, len(ids) - 1)
        codes = np.where(ids[pos] == raw, pos, len(ids))
        return np.where(raw >= 0, codes, -1).astype(np.int64)

    def _features(self, task: GCDTask, ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
        test = ctx.embed(task.test)
        texts = task.train.texts[: task.num_labeled]
        # The labeled texts alone: ctx.embed(task.train) would encode the whole training file.
        with ctx.timed("embed"):
            labeled = ctx.encoder.encode(texts) if texts else np.zeros((0, test.shape[1]))
        return prepare_features(test, np.asarray(labeled))

    def _priors(
        self, state: _State, task: GCDTask, num_clusters: int, gold: np.ndarray | None
    ) -> Priors:
        p: SilrParams = self.params
        if p.risk == "supervised":
            priors = supervised_priors(state.test, num_clusters)
        elif gold is None:
            return estimate_priors(
                state.test,
                state.labeled,
                task.labeled_y,
                num_clusters,
                task.num_known,
                p.prior_pseudo_count,
                p.false_positive,
            )
        else:
            priors = gold_priors(state.test, gold, num_clusters)
        # Measured all the same, for the record: how the labels fare on the labeled texts.
        rates = labelled_rates(state.labeled, task.labeled_y, num_clusters, task.num_known, 0)
        if rates is not None:
            priors.summary["labelled_accuracy"] = round(rates.accuracy, 4)
        return priors

    @staticmethod
    def _round_diag(t: int, priors: Priors) -> dict[str, Any]:
        active = priors.active
        means: dict[str, Any] = {"mean_pi": None, "mean_theta1": None, "mean_theta2": None}
        if active.any():
            means = {
                "mean_pi": round(float(priors.pi[active].mean()), 5),
                "mean_theta1": round(float(priors.theta1[active].mean()), 4),
                "mean_theta2": round(float(priors.theta2[active].mean()), 5),
                "sum_pi": round(float(priors.pi.sum()), 4),
            }
        return {
            "iteration": t,
            **priors.summary,
            **means,
            "active_clusters": int(active.sum()),
            "skipped": dict(Counter(priors.reasons.values())),
        }

    def _select(self, history: list[_State], task: GCDTask, num_clusters: int) -> int:
        """The index in ``history`` (0: the input labels) of the labels returned."""
        if self.params.select == "last" or len(history) == 1:
            return len(history) - 1
        scores = []
        for state in history:
            rates = labelled_rates(state.labeled, task.labeled_y, num_clusters, task.num_known, 0)
            scores.append(-1.0 if rates is None else rates.accuracy)
        return int(np.argmax(scores))  # the earliest of equals: the fewest changes

    def _output(
        self,
        task: GCDTask,
        output: MethodOutput,
        ids: np.ndarray,
        history: list[_State],
        chosen: int,
        rounds: list[dict[str, Any]],
    ) -> MethodOutput:
        p: SilrParams = self.params
        state = history[chosen]
        # Cluster codes back to the method's ids; a labeled text never relabelled keeps its own.
        original = history[0].labeled
        given = output.labeled_assignments
        raw = (
            np.asarray(given, dtype=np.int64)
            if given is not None and len(given) == task.num_labeled
            else np.full(task.num_labeled, -1, dtype=np.int64)
        )
        inside = (state.labeled >= 0) & (state.labeled < len(ids))
        labeled = np.where(inside, ids[np.clip(state.labeled, 0, len(ids) - 1)], raw)
        start = labelled_rates(original, task.labeled_y, len(ids), task.num_known, 0)
        diagnostics = dict(output.diagnostics)
        diagnostics["refine"] = {
            **dict(diagnostics.get("refine", {})),
            "variant": p.variant,
            "classifier": f"{p.head} head on frozen encoder features (the paper: LoRA on an LM)",
            "loss": p.loss,
            "clusters": len(ids),
            "labeled_texts": task.num_labeled,
            "labeller_accuracy_on_labeled": None if start is None else round(start.accuracy, 4),
            "labeller_coverage_on_labeled": (
                round(start.labelled / task.num_labeled, 4) if start and task.num_labeled else 0.0
            ),
            "rounds_run": len(history) - 1,
            "selected_round": chosen,
            "iterations": rounds,
        }
        return MethodOutput(
            test_assignments=ids[state.test].astype(np.int64),
            clusters=dict(output.clusters),
            diagnostics=diagnostics,
            feedback_log=output.feedback_log,
            labeled_assignments=labeled,
        )


@hookimpl
def register_refiners(register):
    register(Silr)
