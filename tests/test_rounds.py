"""The round loop: hook calls, positive overrides, kNN positives, diagnostics."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

from gcdbench import registry
from gcdbench.api import LossHook, hookimpl
from gcdbench.errors import GcdbenchError
from gcdbench.testing import tiny_task
from gcdbench.training.backbone import TextBackbone
from gcdbench.training.modes import make_mode
from gcdbench.training.params import RoundParams, presets_for
from gcdbench.training.rounds import RoundPlan, _draw_positives, run_rounds
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)

SMOKE = RoundParams(**presets_for(RoundParams)["smoke"])


class SpyMode:
    """A real training mode that records which pool rows each embed call was given, and
    which texts each embed_texts call."""

    def __init__(self, mode):
        self._mode = mode
        self.calls: list[tuple[np.ndarray, bool]] = []
        self.texts_calls: list[list[str]] = []

    def embed(self, indices, *, augment, generator):
        self.calls.append((np.asarray(indices).copy(), augment))
        return self._mode.embed(indices, augment=augment, generator=generator)

    def embed_texts(self, texts, *, generator):
        self.texts_calls.append(list(texts))
        return self._mode.embed_texts(texts, generator=generator)

    def __getattr__(self, name):
        return getattr(self._mode, name)


def _mode(folder, task):
    backbone = TextBackbone.from_ref(str(folder), pooling="mean", max_length=24)
    return make_mode("top-1", backbone, task.train.texts)


def test_overridden_positives_are_used(tiny_bert):  # noqa: F811
    task, _, _ = tiny_task()
    pool = len(task.train)
    overrides = {i: (i * 7 + 3) % pool for i in range(pool)}  # every sample, far from its kNN
    seen_rounds: list[int] = []

    def hook(state, round_index, texts):
        seen_rounds.append(round_index)
        assert state.neighbours.shape == (pool, 5) and len(texts) == pool
        # round 0 overrides everything, round 1 nothing: the kNN draw must come back
        return RoundPlan(positives=overrides, info={"asked": pool}) if round_index == 0 else None

    spy = SpyMode(_mode(tiny_bert, task))
    params = dataclasses.replace(SMOKE, epochs=2, update_per_epoch=1, max_steps_per_epoch=2)
    result = run_rounds(task, spy, params, k=5, seed=0, rng=np.random.default_rng(0), hook=hook)
    assert seen_rounds == [0, 1]
    assert [r["positives_overridden"] for r in result.rounds] == [pool, 0]
    assert result.rounds[0]["plan"] == {"asked": pool}
    # per step: anchor view, positive view (both augmented), then the labeled batch (not)
    augmented = [c for c in spy.calls if c[1]]
    steps = [(augmented[i][0], augmented[i + 1][0]) for i in range(0, len(augmented), 2)]
    assert len(steps) == 4
    for anchors, positives in steps[:2]:
        assert positives.tolist() == [overrides[a] for a in anchors.tolist()]
    neighbours = result.last_state.neighbours
    for anchors, positives in steps[2:]:
        for a, p in zip(anchors.tolist(), positives.tolist(), strict=True):
            assert p == a or p in neighbours[a]
    epoch = result.rounds[0]["epochs"][0]
    assert set(epoch["loss"]) == {"ncl", "ce"} and all(np.isfinite(list(epoch["loss"].values())))


def test_knn_positives_are_redrawn_from_self_and_neighbours():
    rng = np.random.default_rng(0)
    neighbours = np.array([[1, 2], [0, 2], [0, 1], [1, 2]])
    draws = np.stack([_draw_positives(neighbours, {}, rng) for _ in range(200)])
    for i in range(4):
        assert set(draws[:, i]) == {i, *neighbours[i]}  # uniform over self + its k neighbours
    assert _draw_positives(neighbours, {3: 0}, rng)[3] == 0


def test_hook_returning_bad_indices_fails_clearly(tiny_bert):  # noqa: F811
    task, _, _ = tiny_task()
    params = dataclasses.replace(SMOKE, epochs=1)
    with pytest.raises(GcdbenchError, match="outside the pool"):
        run_rounds(
            task,
            _mode(tiny_bert, task),
            params,
            k=5,
            seed=0,
            rng=np.random.default_rng(0),
            hook=lambda *_: RoundPlan(positives={0: 10_000}),
        )


def test_alignment_term_runs_when_the_plan_gives_targets(tiny_bert):  # noqa: F811
    task, _, _ = tiny_task()
    pool = len(task.train)
    descriptions = [f"cluster {c}" for c in range(task.num_classes)]
    plan = RoundPlan(
        align_targets={i: i % task.num_classes for i in range(pool)},
        align_candidates={i: list(range(task.num_classes)) for i in range(pool)},
        descriptions=descriptions,
    )
    params = dataclasses.replace(SMOKE, epochs=1)
    result = run_rounds(
        task,
        _mode(tiny_bert, task),
        params,
        k=5,
        seed=0,
        rng=np.random.default_rng(0),
        hook=lambda *_: plan,
        align_weight=0.1,
    )
    assert set(result.rounds[0]["epochs"][0]["loss"]) == {"ncl", "ce", "align"}
    assert result.rounds[0]["align_targets"] == pool


def test_offered_only_encodes_just_the_descriptions_offered_to_the_batch(tiny_bert):  # noqa: F811
    task, _, _ = tiny_task()
    pool = len(task.train)
    k = task.num_classes
    # Half the pool has a target among clusters {0, 1}; cluster 2's description is never
    # offered, and the rest are empty, as a method describing only what it offers leaves them.
    offered = {i: [0, 1] for i in range(0, pool, 2)}
    descriptions = ["cluster zero", "cluster one", "never offered"] + [""] * (k - 3)
    plan = RoundPlan(
        align_targets={i: i % 2 for i in offered},
        align_candidates=offered,
        descriptions=descriptions,
        encode_offered_only=True,
    )
    spy = SpyMode(_mode(tiny_bert, task))
    params = dataclasses.replace(SMOKE, epochs=1)
    result = run_rounds(
        task, spy, params, k=5, seed=0, rng=np.random.default_rng(0), hook=lambda *_: plan,
        align_weight=0.1,
    )  # fmt: skip
    assert spy.texts_calls, "no batch encoded a description"
    assert all(texts == ["cluster zero", "cluster one"] for texts in spy.texts_calls)
    losses = result.rounds[0]["epochs"][0]["loss"]
    assert set(losses) == {"ncl", "ce", "align"} and np.isfinite(losses["align"])


class _SpyLoss(LossHook):
    """A third-party loss: mean squared norm of the anchor views, counting its calls."""

    name = "spy-loss"
    batch_keys = ("adjacency",)
    output_keys = ("features",)
    calls: ClassVar[list[tuple[int, ...]]] = []

    def __init__(self, feat_dim: int) -> None:
        self.feat_dim = feat_dim

    @classmethod
    def from_params(cls, params):
        return cls(feat_dim=params.feat_dim)

    def compute(self, batch, outputs):
        features = outputs["features"]
        assert features.shape[-1] == self.feat_dim  # built from the params
        _SpyLoss.calls.append(tuple(features.shape))
        return features[:, 0].pow(2).sum(dim=1).mean()


class _SpyPlugin:
    @hookimpl
    def register_loss_hooks(self, register):
        register(_SpyLoss)


@pytest.fixture
def spy_loss():
    _SpyLoss.calls.clear()
    registry.register_plugin(_SpyPlugin(), name="test-spy-loss")
    yield _SpyLoss
    registry.unregister_plugin("test-spy-loss")


def test_a_registered_loss_chosen_by_name_is_trained_with(tiny_bert, spy_loss):  # noqa: F811
    task, _, _ = tiny_task()
    method = registry.get("method", "no-llm")
    params = method.resolve_params("smoke", {"losses": "ncl,spy-loss:0.5", "epochs": "1"})
    result = run_rounds(
        task, _mode(tiny_bert, task), params, k=5, seed=0, rng=np.random.default_rng(0)
    )
    epoch = result.rounds[0]["epochs"][0]
    assert list(epoch["loss"]) == ["ncl", "spy-loss"]  # ce is not listed: not trained with
    assert len(spy_loss.calls) == epoch["steps"] == params.max_steps_per_epoch
    assert all(shape[1:] == (2, params.feat_dim) for shape in spy_loss.calls)
    # Norms of L2-normalised views: the term is exactly 1 (unweighted in the log).
    assert epoch["loss"]["spy-loss"] == pytest.approx(1.0, abs=1e-4)


def test_an_unknown_loss_stops_the_rounds_before_training():
    task, _, _ = tiny_task()
    params = dataclasses.replace(SMOKE, losses="ncl,contrastive")
    with pytest.raises(GcdbenchError, match="unknown loss 'contrastive'") as caught:
        run_rounds(task, None, params, k=5, seed=0, rng=np.random.default_rng(0))  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
