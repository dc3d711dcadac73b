"""Losses against values worked out by hand on 2–3 samples, plus NaN-safety and gradients."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gcdbench import registry
from gcdbench.api import LossHook, hookimpl
from gcdbench.errors import GcdbenchError
from gcdbench.training.loss_terms import (
    ROUND_BATCH_KEYS,
    ROUND_OUTPUT_KEYS,
    LossChoice,
    parse_losses,
    resolve_terms,
    unprovided_keys,
)
from gcdbench.training.losses import (
    alignment_loss,
    cross_entropy_loss,
    neighbour_adjacency,
    sinkhorn,
    supcon_loss,
    two_view_info_nce,
    weighted_sum,
)
from gcdbench.training.params import RoundParams

# Two samples, two unit-length views each: a = sample 0, b = sample 1.
A0, A1 = (1.0, 0.0), (0.6, 0.8)
B0, B1 = (0.0, 1.0), (-0.6, 0.8)
# Dot products: a0·a1 = .6, a0·b0 = 0, a0·b1 = −.6, a1·b0 = .8, a1·b1 = .28, b0·b1 = .8


def _views() -> torch.Tensor:
    return torch.tensor([[A0, A1], [B0, B1]], dtype=torch.float64)


def _log_prob(positive: float, others: list[float]) -> float:
    """log softmax of the positive logit among the anchor's non-self logits."""
    return positive - math.log(sum(math.exp(x) for x in others))


def test_supcon_self_positives_only_matches_hand_value():
    tau = 0.5  # logits = dot / 0.5
    # Each anchor's positive is its own other view; denominators are the other three views.
    a0 = _log_prob(1.2, [0.0, 1.2, -1.2])  # vs b0, a1, b1
    b0 = _log_prob(1.6, [0.0, 1.6, 1.6])  # vs a0, a1, b1
    a1 = _log_prob(1.2, [1.2, 1.6, 0.56])  # vs a0, b0, b1
    b1 = _log_prob(1.6, [-1.2, 1.6, 0.56])  # vs a0, b0, a1
    expected = -(a0 + b0 + a1 + b1) / 4
    got = supcon_loss(_views(), torch.eye(2), temperature=tau, base_temperature=tau)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_supcon_all_positive_and_temperature_scaling():
    tau, base = 0.5, 0.25
    mask = torch.ones(2, 2)
    # Every other view is a positive: mean of the three log-probabilities per anchor.
    lse = {
        "a0": math.log(math.exp(0.0) + math.exp(1.2) + math.exp(-1.2)),
        "b0": math.log(math.exp(0.0) + math.exp(1.6) + math.exp(1.6)),
        "a1": math.log(math.exp(1.2) + math.exp(1.6) + math.exp(0.56)),
        "b1": math.log(math.exp(-1.2) + math.exp(1.6) + math.exp(0.56)),
    }
    per_anchor = [
        (0.0 + 1.2 - 1.2) / 3 - lse["a0"],
        (0.0 + 1.6 + 1.6) / 3 - lse["b0"],
        (1.2 + 1.6 + 0.56) / 3 - lse["a1"],
        (-1.2 + 1.6 + 0.56) / 3 - lse["b1"],
    ]
    expected = -(tau / base) * sum(per_anchor) / 4
    got = supcon_loss(_views(), mask, temperature=tau, base_temperature=base)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_supcon_anchors_without_positive_are_skipped_not_nan():
    views = _views()
    # One view each and no off-diagonal positive: nobody has a positive.
    none = supcon_loss(views[:, :1].clone().requires_grad_(), torch.eye(2))
    assert none.item() == 0.0
    # Sample 1 has no positive at all with one view; sample 0's positive is sample 1.
    one_view = views[:, :1]
    mask = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    got = supcon_loss(one_view, mask, temperature=0.5, base_temperature=0.5)
    # anchor a0: positive b0 (logit 0), denominator = {b0} only.
    assert got.item() == pytest.approx(-_log_prob(0.0, [0.0]))
    assert torch.isfinite(got)


def test_supcon_gradient_flows():
    views = torch.nn.functional.normalize(
        torch.randn(4, 2, 8, generator=torch.Generator().manual_seed(0)), dim=2
    )
    views.requires_grad_()
    supcon_loss(views, torch.eye(4)).backward()
    assert views.grad is not None and views.grad.abs().sum() > 0
    empty = torch.zeros(2, 1, 3, requires_grad=True)
    supcon_loss(empty, torch.eye(2)).backward()  # the zero loss keeps its graph
    assert empty.grad is not None


def test_supcon_rejects_bad_shapes():
    with pytest.raises(GcdbenchError, match="positive_mask"):
        supcon_loss(_views(), torch.eye(3))
    with pytest.raises(GcdbenchError, match=r"\[B, V, d\]"):
        supcon_loss(torch.zeros(2, 3), torch.eye(2))


def test_neighbour_adjacency_hand_case_and_strict_labeled_boundary():
    # Pool of 6: rows 0, 1 labeled (class 4 and 4). Row 2 is the first unlabeled row: the
    # official "<= num_labeled" would treat it as labeled too.
    neighbours = torch.tensor([[5, 3], [0, 4], [2, 5], [1, 0], [4, 2], [0, 1]])
    batch = torch.tensor([0, 2, 3, 1])
    got = neighbour_adjacency(batch, neighbours, num_labeled=2, labeled_y=torch.tensor([4, 4]))
    expected = torch.tensor(
        [
            # 0      2      3      1
            [True, False, True, True],  # 0: list {5, 3}; same label as 1
            [False, True, False, False],  # 2: list {2, 5}; unlabeled
            [True, False, True, True],  # 3: list {1, 0}
            [True, False, False, True],  # 1: list {0, 4}; same label as 0
        ]
    )
    assert torch.equal(got, expected)
    # Row 2 labeled with the same class only when num_labeled really covers it.
    three = neighbour_adjacency(batch, neighbours, num_labeled=3, labeled_y=torch.tensor([4, 4, 4]))
    assert three[0, 1] and three[1, 0] and three[1, 3]
    other_class = neighbour_adjacency(batch, neighbours, 3, torch.tensor([4, 4, 7]))
    assert not other_class[0, 1]


def test_neighbour_adjacency_without_labeled_rows_and_errors():
    neighbours = torch.tensor([[1], [0], [1]])
    got = neighbour_adjacency(
        torch.tensor([0, 1, 2]), neighbours, 0, torch.tensor([], dtype=torch.long)
    )
    assert torch.equal(got, torch.tensor([[1, 1, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool))
    with pytest.raises(GcdbenchError, match="labeled_y"):
        neighbour_adjacency(torch.tensor([0]), neighbours, 2, torch.tensor([1]))
    with pytest.raises(GcdbenchError, match="outside the pool"):
        neighbour_adjacency(torch.tensor([5]), neighbours, 0, torch.tensor([], dtype=torch.long))


def _alignment_case():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    descriptions = torch.tensor([[0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([0, -1, 1])
    candidates = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    return anchors, descriptions, targets, candidates


def test_alignment_both_denominators_match_hand_values():
    anchors, descriptions, targets, candidates = _alignment_case()
    tau = 0.5
    # anchor 0: s = (.8, 0, −1)/τ = (1.6, 0, −2); target 0, offered {0, 1}.
    # anchor 2: s = (.48 + .48, .8, −.6)/τ = (1.92, 1.6, −1.2); target 1, offered {0, 1, 2}.
    paper = (
        -(1.6 - math.log(math.exp(1.6) + math.exp(0.0)))
        - (1.6 - math.log(math.exp(1.92) + math.exp(1.6) + math.exp(-1.2)))
    ) / 2
    official = (-(1.6 - 0.0) - (1.6 - math.log(math.exp(1.92) + math.exp(-1.2)))) / 2
    got_paper = alignment_loss(anchors, descriptions, targets, candidates, temperature=tau)
    got_official = alignment_loss(
        anchors, descriptions, targets, candidates, temperature=tau, include_positive=False
    )
    assert got_paper.item() == pytest.approx(paper, rel=1e-9)
    assert got_official.item() == pytest.approx(official, rel=1e-9)
    assert got_official.item() < 0  # the negatives-only form can go below zero


def test_alignment_zero_without_targets_keeps_graph():
    anchors, descriptions, _, candidates = _alignment_case()
    anchors.requires_grad_()
    loss = alignment_loss(anchors, descriptions, torch.tensor([-1, -1, -1]), candidates)
    assert loss.item() == 0.0
    loss.backward()
    assert anchors.grad is not None and anchors.grad.abs().sum() == 0


def test_alignment_gradient_and_bad_target():
    anchors, descriptions, targets, candidates = _alignment_case()
    descriptions.requires_grad_()
    alignment_loss(anchors, descriptions, targets, candidates).backward()
    assert descriptions.grad.abs().sum() > 0
    with pytest.raises(GcdbenchError, match="not among"):
        alignment_loss(anchors, descriptions, torch.tensor([2, -1, 1]), candidates)
    # Offered only its own target: nothing to contrast in the official form -> skipped.
    only_target = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    official = alignment_loss(
        anchors, descriptions, torch.tensor([0, -1, -1]), only_target, include_positive=False
    )
    assert official.item() == 0.0


def test_cross_entropy_matches_hand_value():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    expected = (-(2.0 - math.log(math.e**2 + 1 + math.e)) + math.log(3)) / 2
    assert cross_entropy_loss(logits, torch.tensor([0, 2])).item() == pytest.approx(expected)


def test_hooks_are_registered_and_weighted_sum_logs_each_term():
    ce = registry.get("loss", "ce")()
    ncl = registry.get("loss", "ncl")(temperature=0.5, base_temperature=0.5)
    align = registry.get("loss", "align")(temperature=0.5)
    logits = torch.tensor([[2.0, 0.0, 1.0]], dtype=torch.float64)
    batch = {"labels": torch.tensor([0]), "adjacency": torch.eye(2, dtype=torch.bool)}
    outputs = {"logits": logits, "features": _views()}
    # align has weight 0: never called, so its missing keys do not matter.
    total, values = weighted_sum([(ce, 1.0), (ncl, 0.5), (align, 0.0)], batch, outputs)
    assert set(values) == {"ce", "ncl"}
    assert values["ce"] == pytest.approx(cross_entropy_loss(logits, batch["labels"]).item())
    assert values["ncl"] == pytest.approx(supcon_loss(_views(), torch.eye(2), 0.5, 0.5).item())
    assert total.item() == pytest.approx(values["ce"] + 0.5 * values["ncl"])
    with pytest.raises(GcdbenchError, match="align_targets"):
        weighted_sum([(align, 0.1)], batch, outputs)
    with pytest.raises(GcdbenchError, match="weight 0"):
        weighted_sum([(align, 0.0)], batch, outputs)


# -- choosing the round loop's terms through the registry --------------------------------


class _Plugin:
    """A plugin module stand-in registering ``hooks`` through ``register_loss_hooks``."""

    def __init__(self, *hooks: type) -> None:
        self.hooks = hooks

    @hookimpl
    def register_loss_hooks(self, register):
        for hook in self.hooks:
            register(hook)


class _NeedsAStrangeKey(LossHook):
    name = "strange"
    batch_keys = ("adjacency", "teacher_logits")

    def compute(self, batch, outputs):  # pragma: no cover - never chosen
        raise AssertionError


@pytest.fixture
def strange_loss():
    registry.register_plugin(_Plugin(_NeedsAStrangeKey), name="test-strange-loss")
    yield
    registry.unregister_plugin("test-strange-loss")


def test_default_terms_are_ncl_then_ce_with_their_weight_parameters():
    params = RoundParams()
    assert params.losses == "ncl,ce"
    terms = resolve_terms(params.losses, params)
    assert [(t.name, t.weight) for t in terms] == [("ncl", 1.0), ("ce", 1.0)]
    weighted = dataclasses.replace(params, ncl_weight=0.5, ce_weight=2.0)
    assert [t.weight for t in resolve_terms(params.losses, weighted)] == [0.5, 2.0]


def test_terms_follow_the_list_the_ablations_and_explicit_weights():
    params = RoundParams(temperature=0.1)
    assert [t.name for t in resolve_terms("ce,ncl", params)] == ["ce", "ncl"]
    assert [t.name for t in resolve_terms("ncl,ce", params, ce=False)] == ["ncl"]
    with_align = resolve_terms("ncl,ce", params, align_weight=0.1)
    assert [(t.name, t.weight) for t in with_align] == [("ncl", 1.0), ("ce", 1.0), ("align", 0.1)]
    assert with_align[-1].needs_alignment and with_align[1].needs_classifier
    # align_weight=0 is the ablation: the term goes, wherever it was listed
    assert [t.name for t in resolve_terms("ncl,align,ce", params, align_weight=0.0)] == [
        "ncl",
        "ce",
    ]
    explicit = resolve_terms("ncl:0.25, ce:0", params)  # weight 0: left out entirely
    assert [(t.name, t.weight) for t in explicit] == [("ncl", 0.25)]


def test_built_in_hooks_take_their_settings_from_the_params():
    params = RoundParams(temperature=0.2, variant="official")
    ncl = registry.get("loss", "ncl").from_params(params)
    align = registry.get("loss", "align").from_params(params)
    assert ncl.temperature == 0.2 and align.temperature == 0.2
    assert align.include_positive is False  # the released code's denominator
    assert registry.get("loss", "ce").from_params(params).name == "ce"


@pytest.mark.parametrize(
    ("losses", "needle"),
    [
        ("ncl,cee", "unknown loss 'cee'. Did you mean 'ce'?"),
        ("ncl,,ce", "empty entry"),
        ("ncl,ce:heavy", "'ce:heavy' has weight 'heavy', not a number"),
        ("ncl,ce:-1", "a weight must be a finite number >= 0"),
        ("ncl,ncl", "listed twice"),
    ],
)
def test_a_bad_losses_parameter_is_one_clear_line(losses, needle):
    method = registry.get("method", "no-llm")
    with pytest.raises(GcdbenchError) as caught:
        method.resolve_params("smoke", {"losses": losses})
    message = str(caught.value)
    assert needle in message and "parameter losses" in message
    assert "\n" not in message and ".;" not in message


def test_a_loss_reading_a_key_the_loop_does_not_fill_is_refused(strange_loss):
    method = registry.get("method", "no-llm")
    with pytest.raises(GcdbenchError, match=r"loss 'strange' reads batch\['teacher_logits'\]"):
        method.resolve_params(None, {"losses": "ncl,ce,strange"})
    # the engine refuses it too, for callers that build Params themselves
    with pytest.raises(GcdbenchError, match="teacher_logits"):
        resolve_terms("ncl,strange", RoundParams())


def test_the_loop_fills_every_key_the_built_in_hooks_read():
    for name in ("ce", "ncl", "align"):
        assert unprovided_keys(registry.get("loss", name)) == [], name
    assert set(ROUND_BATCH_KEYS) | set(ROUND_OUTPUT_KEYS) >= {"labels", "logits", "features"}
    assert parse_losses("ncl, ce:0.5") == (LossChoice("ncl"), LossChoice("ce", 0.5))


def test_sinkhorn_gives_distributions_and_balances_classes():
    gen = torch.Generator().manual_seed(0)
    logits = torch.rand(64, 4, generator=gen) * 0.2
    logits[:, 0] += 0.5  # everything leans to class 0
    targets = sinkhorn(logits, 0.05, 3)
    assert targets.shape == (64, 4) and targets.dtype == torch.float32
    assert targets.sum(1).tolist() == pytest.approx([1.0] * 64, abs=1e-5)
    plain = torch.softmax(logits / 0.05, dim=1).sum(0)
    balanced = targets.sum(0)
    assert float(balanced.max() - balanced.min()) < 0.5 * float(plain.max() - plain.min())
    # Extreme logits underflow a class's row to 0: still finite, never inf or NaN.
    assert torch.isfinite(sinkhorn(torch.tensor([[1.0, -1.0], [1.0, -1.0]]), 0.001, 3)).all()


def test_two_view_info_nce_prefers_matching_views():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 16, generator=gen)
    matched = two_view_info_nce(a, a + 0.01 * torch.randn(6, 16, generator=gen), 0.07)
    shuffled = two_view_info_nce(a, a[torch.tensor([1, 2, 3, 4, 5, 0])], 0.07)
    assert matched.item() < 0.1 < shuffled.item()
