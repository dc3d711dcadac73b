"""Training losses as pure torch functions: SupCon/neighbourhood contrastive learning (NCL),
pseudo-category alignment and cross-entropy, plus the kNN/label adjacency NCL uses.

docs/methods/glean.md §3.3 and §5.3 describe what GLEAN and Loop compute; the functions below follow
them, with the two documented departures from the official code made explicit:
the labeled-pair rule uses ``< num_labeled`` (the official ``<=`` leaks a label, §11.8), and
the alignment denominator includes the positive unless ``include_positive=False`` (§11.14).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gcdbench.errors import GcdbenchError

if TYPE_CHECKING:
    from gcdbench.api.loss import LossHook


def supcon_loss(
    features: Tensor,
    positive_mask: Tensor,
    temperature: float = 0.07,
    base_temperature: float = 0.07,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), "all" contrast mode.

    ``features`` is [B, V, d] (V L2-normalised views per sample); ``positive_mask`` is
    [B, B] with 1 where sample j is a positive of sample i (not necessarily symmetric). Every
    one of the B·V views is an anchor contrasted with all other B·V − 1 views; the mask is
    tiled V×V and self-pairs are removed from both the positives and the denominator. With a
    diagonal in ``positive_mask`` and V ≥ 2, a view's other views are always positives.

    loss = −(τ/τ_base) · mean over anchors of the mean log-probability of their positives.

    Anchors without any positive are left out of the mean (the reference implementation
    divides 0 by 0 there and returns NaN); when no anchor has one the loss is 0, with the
    graph kept so ``backward`` still works.
    """
    if features.dim() != 3:
        raise GcdbenchError(
            f"supcon_loss needs features of shape [B, V, d], got {tuple(features.shape)}; "
            "stack the views on dim 1."
        )
    batch, views, _ = features.shape
    if tuple(positive_mask.shape) != (batch, batch):
        raise GcdbenchError(
            f"supcon_loss: positive_mask is {tuple(positive_mask.shape)} but the batch has "
            f"{batch} samples; pass a [{batch}, {batch}] mask."
        )
    # View-major order: rows v·B .. v·B + B − 1 are view v of every sample.
    contrast = features.transpose(0, 1).reshape(views * batch, -1)
    logits = contrast @ contrast.T / temperature
    not_self = ~torch.eye(views * batch, dtype=torch.bool, device=features.device)
    positives = positive_mask.to(features.dtype).repeat(views, views) * not_self
    log_prob = logits - torch.logsumexp(
        logits.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True
    )
    positive_count = positives.sum(dim=1)
    has_positive = positive_count > 0
    mean_log_prob = (positives * log_prob).sum(dim=1)
    mean_log_prob = mean_log_prob[has_positive] / positive_count[has_positive]
    if mean_log_prob.numel() == 0:
        return logits.sum() * 0.0
    return -(temperature / base_temperature) * mean_log_prob.mean()


def neighbour_adjacency(
    batch_index: Tensor,
    neighbours: Tensor,
    num_labeled: int,
    labeled_y: Tensor,
) -> Tensor:
    """The NCL positive mask of a batch: A[i, j] is True if i == j, or the pool index of j is
    in i's neighbour list, or both are labeled (pool index strictly ``< num_labeled``) with
    the same known-class id.

    ``batch_index`` [B] are pool indices, ``neighbours`` [N, k] the pool's kNN lists (they
    may contain the sample itself), ``labeled_y`` [num_labeled] the known-class ids of pool
    rows ``0 .. num_labeled − 1``. Memory is O(B²·k) booleans. The relation is not symmetric:
    j being i's neighbour does not make i j's.
    """
    batch_index = torch.as_tensor(batch_index, dtype=torch.long)
    neighbours = torch.as_tensor(neighbours, dtype=torch.long, device=batch_index.device)
    labeled_y = torch.as_tensor(labeled_y, dtype=torch.long, device=batch_index.device)
    if labeled_y.numel() != num_labeled:
        raise GcdbenchError(
            f"neighbour_adjacency: labeled_y has {labeled_y.numel()} entries but num_labeled is "
            f"{num_labeled}; pass the known-class ids of exactly the labeled pool rows."
        )
    if batch_index.numel() and int(batch_index.max()) >= len(neighbours):
        raise GcdbenchError(
            f"neighbour_adjacency: batch index {int(batch_index.max())} is outside the pool of "
            f"{len(neighbours)} neighbour lists; index the pool the lists were built on."
        )
    batch_lists = neighbours[batch_index]  # [B, k]
    in_list = (batch_lists.unsqueeze(1) == batch_index.view(1, -1, 1)).any(dim=2)
    identity = torch.eye(len(batch_index), dtype=torch.bool, device=batch_index.device)
    is_labeled = batch_index < num_labeled
    label = torch.full_like(batch_index, -1)
    label[is_labeled] = labeled_y[batch_index[is_labeled]]
    same_label = (
        is_labeled.unsqueeze(1)
        & is_labeled.unsqueeze(0)
        & (label.unsqueeze(1) == label.unsqueeze(0))
    )
    return identity | in_list | same_label


def alignment_loss(
    anchor_features: Tensor,
    description_features: Tensor,
    targets: Tensor,
    candidates: Tensor,
    temperature: float = 0.07,
    include_positive: bool = True,
) -> Tensor:
    """Pseudo-category alignment (GLEAN §5.3): pull each anchor towards the description of the
    cluster its feedback chose, away from the other clusters it was offered.

    For an anchor with a target t (``targets[i] >= 0``; −1 means none), with s = cosine
    similarity (inputs are L2-normalised):
    ℓ = −log( exp(s_t/τ) / Σ exp(s_c/τ) ), the sum over the offered clusters other than t,
    plus t itself when ``include_positive`` (InfoNCE, the paper's form). The official code
    leaves the positive out (``include_positive=False``); that loss can be negative, and an
    anchor offered no negative then has an empty denominator and is skipped.

    The mean over anchors with a (usable) target; exactly 0, graph intact, when none.
    """
    batch, clusters = anchor_features.shape[0], description_features.shape[0]
    if tuple(candidates.shape) != (batch, clusters) or targets.shape[0] != batch:
        raise GcdbenchError(
            f"alignment_loss: {batch} anchors and {clusters} descriptions need targets [{batch}] "
            f"and candidates [{batch}, {clusters}], got {tuple(targets.shape)} and "
            f"{tuple(candidates.shape)}."
        )
    similarity = anchor_features @ description_features.T / temperature  # [B, C]
    has_target = targets >= 0
    safe_targets = targets.clamp(min=0)
    target_mask = F.one_hot(safe_targets, clusters).bool() & has_target.unsqueeze(1)
    candidates = candidates.bool()
    if bool((target_mask & ~candidates).any()):
        raise GcdbenchError(
            "alignment_loss: a target cluster is not among that anchor's candidates; offer the "
            "chosen cluster in align_candidates."
        )
    denominator = candidates & ~target_mask
    if include_positive:
        denominator = denominator | target_mask
    usable = has_target & denominator.any(dim=1)
    if not bool(usable.any()):
        return similarity.sum() * 0.0
    positive = similarity.gather(1, safe_targets.unsqueeze(1)).squeeze(1)
    log_normaliser = torch.logsumexp(similarity.masked_fill(~denominator, float("-inf")), dim=1)
    return (log_normaliser - positive)[usable].mean()


def two_view_info_nce(first: Tensor, second: Tensor, temperature: float) -> Tensor:
    """InfoNCE over the 2B L2-normalised vectors [first; second] (SimCLR's NT-Xent, SimCSE):
    each vector's positive is the other view of its text, every other vector a negative."""
    n = len(first)
    both = F.normalize(torch.cat([first, second]), dim=1)
    logits = both @ both.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(eye, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(logits.device)
    return F.cross_entropy(logits, target)


def sinkhorn(logits: Tensor, epsilon: float, iterations: int) -> Tensor:
    """Sinkhorn-Knopp with uniform class and sample marginals (SwAV; SDC and GeoID use it for
    pseudo-labels): [B, K] logits -> [B, K] soft assignments, each row summing to 1. Runs in
    float64 without grad; a class whose row sums to 0 gets the largest finite scale (the
    reference code's ``shoot_infs``) instead of inf."""
    with torch.no_grad():
        q = logits.double() / epsilon
        q = torch.exp(q - q.max()).T  # [K, B]
        q = q / q.sum()
        classes, samples = q.shape
        for _ in range(iterations):
            scale = (1.0 / classes) / q.sum(1)
            finite = torch.isfinite(scale)
            if not bool(finite.all()):
                fallback = scale[finite].max() if bool(finite.any()) else scale.new_tensor(1.0)
                scale = torch.where(finite, scale, fallback)
            q = q * scale.unsqueeze(1)
            q = q * ((1.0 / samples) / q.sum(0)).unsqueeze(0)
        return (q / q.sum(0, keepdim=True)).T.float()


def cross_entropy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy; labels −100 are ignored (torch's convention)."""
    return F.cross_entropy(logits, labels)


def weighted_sum(
    terms: Sequence[tuple[LossHook, float]],
    batch: Mapping[str, Any],
    outputs: Mapping[str, Any],
) -> tuple[Tensor, dict[str, float]]:
    """Σ weight · hook(batch, outputs), and each term's unweighted value for logging.

    A term with weight 0 is not called at all, so its inputs need not be computed (e.g.
    ``align`` with λ = 0 needs no description features). Two terms with the same hook name
    are logged as ``name``, ``name#2``, ...
    """
    total: Tensor | None = None
    values: dict[str, float] = {}
    for hook, weight in terms:
        if weight == 0:
            continue
        term = hook(batch, outputs)
        key, copy = hook.name, 2
        while key in values:
            key, copy = f"{hook.name}#{copy}", copy + 1
        values[key] = float(term.detach())
        total = term * weight if total is None else total + term * weight
    if total is None:
        raise GcdbenchError("weighted_sum: every loss term has weight 0; give one a weight.")
    return total, values
