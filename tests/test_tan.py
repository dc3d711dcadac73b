"""``tan`` (TAN, An et al. AAAI 2024): conformance on the tiny task, the prototype transfer,
the aligned (default) and unaligned (official) label spaces of the K-way classifier, presets,
and a smoke run through the CLI on real BANKING data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.cli import cli
from gcdbench.testing import method_checks
from gcdbench_builtins.prototypes import PoolClustering, class_means
from gcdbench_builtins.tan import TANStage, transfer_weights
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


def test_conformance(tiny_bert):  # noqa: F811
    for check in method_checks(registry.get("method", "tan"), encoder=str(tiny_bert)):
        check()


def test_transfer_keeps_the_topk_nearest_labeled_prototypes():
    prototypes = np.eye(4, dtype=np.float32) * np.array([[1], [2], [3], [4]], dtype=np.float32)
    means = np.zeros((2, 4), dtype=np.float32)
    means[1] = prototypes[3]
    weights = transfer_weights(means, prototypes, topk=2)
    assert np.allclose(weights.sum(1), 1) and ((weights > 0).sum(1) == 2).all()
    assert weights[0, :2].min() > 0 and weights[0, 2:].max() == 0  # nearest to the origin
    assert weights[1].argmax() == 3
    assert (transfer_weights(means, prototypes, topk=9) > 0).all()  # k > n_known: all kept


def _stage(variant: str, enabled=lambda _: True) -> TANStage:
    """Four blobs, K = 4, known classes 0 and 1 labeled in blobs 3 and 1, K-means ids
    shifted so that known class j is not cluster j."""
    rng = np.random.default_rng(0)
    blob = np.repeat(np.arange(4), 10)
    feats = (np.eye(8)[:4][blob] * 10 + rng.normal(0, 0.1, (40, 8))).astype(np.float32)
    first = [30, 31, 32, 10, 11, 12]
    order = np.concatenate([first, np.setdiff1d(np.arange(40), first)])
    feats, blob = feats[order], blob[order]
    km_labels = (blob + 1) % 4
    task = SimpleNamespace(
        num_classes=4, num_known=2, num_labeled=6, labeled_y=np.array([0, 0, 0, 1, 1, 1])
    )
    params = SimpleNamespace(temperature=0.07, normalize=False)
    mode = SimpleNamespace(backbone=SimpleNamespace(hidden_size=8, device=torch.device("cpu")))
    pool = PoolClustering(feats, km_labels, class_means(feats, km_labels, 4), 0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TANStage(
            task, params, mode, pool, None, enabled, beta=100.0, topk=5, alpha=0.8, variant=variant
        )


def test_default_puts_cluster_ids_and_labeled_targets_in_one_space():
    stage = _stage("paper")
    # the labeled texts' pseudo-labels equal their known-class ids (the CE targets)
    assert stage.ids[:6].tolist() == [0, 0, 0, 1, 1, 1]
    assert stage.target.tolist() == [0, 1, -1, -1]
    assert stage.info["calibration"]["map_collisions"] == 0
    # calibrated prototype of class 0's cluster: 0.8 * its mean + 0.2 * transferred labeled
    assert torch.allclose(
        stage.calibrated[0], torch.as_tensor(stage.pool.features[:3].mean(0)), atol=0.3
    )


def test_official_keeps_raw_ids_and_the_argmax_map():
    stage = _stage("official")
    # blob 3 is K-means cluster 0 and blob 1 cluster 2: raw ids, unaligned with 0/1 targets
    assert stage.ids[:6].tolist() == [0, 0, 0, 2, 2, 2]
    assert stage.target.tolist() == [0, -1, 1, -1]  # cluster 0 -> class 0, cluster 2 -> class 1


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_step_terms_are_finite_and_the_ablated_ones_absent(variant):
    stage = _stage(variant, enabled=lambda name: name not in {"i2i", "p2i"})
    stage.features = lambda idx, augment=False: torch.as_tensor(stage.pool.features[idx])
    terms = stage.step(np.arange(40), np.arange(6))
    assert set(terms) == {"u", "i2p", "ce"}
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["i2p"].item() < 2.5  # every point sits near its calibrated prototype


def test_presets_and_a_frozen_backbone_is_refused():
    cls = registry.get("method", "tan")
    assert cls.resolve_params(None, {}) == cls.resolve_params("cpu", {})
    paper = cls.resolve_params("paper", {})
    assert (paper.mode, paper.train_top, paper.batch_size, paper.beta) == ("full", 4, 256, 100)
    assert (paper.topk, paper.alpha, paper.epochs, paper.kmeans_n_init) == (5, 0.8, 0, 20)
    with pytest.raises(Exception, match="trains nothing"):
        cls.cross_check(cls.resolve_params(None, {"mode": "head"}), 77)


def test_smoke_run_on_banking(tmp_path, shared_data, tiny_bert):  # noqa: F811
    argv = ["run", "tan", "--dataset", "banking", "--results-dir", str(tmp_path / "results")]
    argv += ["--data-dir", str(shared_data), "--preset", "smoke", "--encoder", str(tiny_bert)]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "results").rglob("record.json")
    record = json.loads(path.read_text())
    diag = record["diagnostics"]
    assert 0 < record["metrics"]["acc"] <= 100
    assert diag["epochs_run"] == 1 and diag["epochs"][0]["steps"] == 3
    assert set(diag["epochs"][0]["loss"]) == {"u", "i2i", "i2p", "p2i", "ce"}
    assert diag["calibration"]["mapped_clusters"] == 19  # round(77 * 0.25) known classes
    assert any("epochs=1 (official 20)" in c for c in diag["cuts"])
    assert any("Hungarian" in d for d in diag["departures"])
