"""``dpn`` (DPN, An et al. AAAI 2023) and the prototype helpers it shares with ``tan``:
conformance on the tiny task, the Hungarian decoupling, the SPL losses, presets, and a smoke
run through the CLI on real BANKING data."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.cli import cli
from gcdbench.testing import method_checks
from gcdbench_builtins.dpn import DPNStage
from gcdbench_builtins.prototypes import (
    PoolClustering,
    align_clusters,
    class_means,
    euclidean,
)
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


def test_conformance(tiny_bert):  # noqa: F811
    for check in method_checks(registry.get("method", "dpn"), encoder=str(tiny_bert)):
        check()


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated blobs of 10 points in 8-d, in shuffled cluster order."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:4] * 10
    labels = np.repeat(np.arange(4), 10)
    return (centres[labels] + rng.normal(0, 0.1, (40, 8))).astype(np.float32), labels


def test_align_clusters_puts_the_matched_centroids_first_in_known_order():
    centers = np.eye(8)[[2, 0, 3, 1]].astype(np.float32) * 10  # K-means order != class order
    prototypes = np.eye(8)[[0, 1]].astype(np.float32) * 10 + 0.2  # known classes 0, 1
    order, relabel = align_clusters(prototypes, centers)
    assert order.tolist()[:2] == [1, 3]  # the centroids nearest known class 0, then 1
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert relabel[order].tolist() == [0, 1, 2, 3]


def test_class_means_and_a_class_without_texts():
    feats = np.array([[0.0, 0.0], [2.0, 2.0], [4.0, 0.0]], dtype=np.float32)
    means = class_means(feats, np.array([0, 0, 1]), 3)
    assert means[0].tolist() == [1.0, 1.0] and means[1].tolist() == [4.0, 0.0]
    assert np.allclose(means[2], feats.mean(0))  # no text: the overall mean, not zeros


def test_euclidean_is_finite_with_its_gradient_where_a_feature_sits_on_a_prototype():
    a = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    dist = euclidean(a, a.detach())  # the diagonal is an exact zero: the official sqrt NaNs
    dist.sum().backward()
    assert torch.isfinite(dist).all() and torch.isfinite(a.grad).all()
    assert dist[0, 1].item() == pytest.approx(float(np.hypot(2, 3)), rel=1e-5)


def _stage() -> DPNStage:
    """A DPN stage on four blobs: K = 4, two known classes whose labeled texts are the first
    three points of blobs 3 and 1 (so known class j is not K-means cluster j)."""
    feats, blob = _blobs()
    pool_order = np.concatenate(
        [[30, 31, 32, 10, 11, 12], np.setdiff1d(np.arange(40), [30, 31, 32, 10, 11, 12])]
    )
    feats, blob = feats[pool_order], blob[pool_order]
    km_labels = (blob + 1) % 4  # K-means ids unrelated to the class ids
    centers = class_means(feats, km_labels, 4)
    task = SimpleNamespace(
        num_classes=4, num_known=2, num_labeled=6, labeled_y=np.array([0, 0, 0, 1, 1, 1])
    )
    params = SimpleNamespace(temperature=0.07, normalize=False)
    mode = SimpleNamespace(backbone=SimpleNamespace(hidden_size=8, device=torch.device("cpu")))
    pool = PoolClustering(feats, km_labels, centers, 0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return DPNStage(task, params, mode, pool, None, lambda _: True, gamma=10.0, momentum=0.9)


def test_decoupling_aligns_the_pseudo_labels_of_known_texts_with_their_classes():
    stage = _stage()
    assert stage.pseudo[:6].tolist() == [0, 0, 0, 1, 1, 1]
    # known-aligned clusters are exactly the two blobs holding labeled texts
    assert stage.info["alignment"]["pool_known_aligned_share"] == 0.5
    assert torch.allclose(
        stage.proto_u[0], torch.as_tensor(stage.pool.features[:3].mean(0)), atol=0.2
    )


def test_spl_losses_are_small_at_the_prototypes_and_large_away():
    stage = _stage()
    stage.features = lambda idx, augment=False: torch.as_tensor(stage.pool.features[idx])
    stage.enabled = lambda name: name != "ce"
    near = stage.step(np.arange(40), np.zeros(0, dtype=np.int64))
    stage.features = lambda idx, augment=False: torch.as_tensor(stage.pool.features[idx] * 0.2)
    far = stage.step(np.arange(40), np.zeros(0, dtype=np.int64))
    assert set(near) == {"u", "l"}
    assert near["u"].item() < far["u"].item()
    assert all(torch.isfinite(v) for v in [*near.values(), *far.values()])


def test_presets_and_a_frozen_backbone_is_refused(tmp_path, shared_data):
    cls = registry.get("method", "dpn")
    assert cls.resolve_params(None, {}) == cls.resolve_params("cpu", {})
    paper = cls.resolve_params("paper", {})
    assert (paper.mode, paper.train_top, paper.batch_size, paper.lr) == ("full", 3, 256, 1e-5)
    assert (paper.epochs, paper.gamma, paper.kmeans_n_init) == (0, 0.0, 20)
    result = _run(tmp_path, shared_data, "-p", "mode=head")
    assert result.exit_code == 2 and "trains nothing" in result.stderr


def _run(tmp: Path, data: Path, *args: str):
    argv = ["run", "dpn", "--dataset", "banking", "--results-dir", str(tmp / "results")]
    return CliRunner().invoke(cli, [*argv, "--data-dir", str(data), *args], catch_exceptions=False)


def test_smoke_run_on_banking(tmp_path, shared_data, tiny_bert):  # noqa: F811
    result = _run(tmp_path, shared_data, "--preset", "smoke", "--encoder", str(tiny_bert))
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "results").rglob("record.json")
    record = json.loads(path.read_text())
    diag = record["diagnostics"]
    assert 0 < record["metrics"]["acc"] <= 100
    assert diag["epochs_run"] == 1 and diag["epochs"][0]["steps"] == 3
    assert set(diag["epochs"][0]["loss"]) == {"u", "l", "ce"}
    assert diag["gamma"] == 10.0  # banking's official value
    assert any("batch_size=8" in c for c in diag["cuts"])
    assert any("epochs=1 (official 60)" in c for c in diag["cuts"])
    assert any("MLM" in d for d in diag["departures"])


def test_full_pretraining_then_top_layers_and_torch_rng_left_alone(tiny_bert, tmp_path):  # noqa: F811
    from gcdbench.api.spec import RunSpec
    from gcdbench.runner.context import RunContext
    from gcdbench.testing import tiny_task

    task, _, parts = tiny_task()
    cls = registry.get("method", "dpn")
    params = cls.resolve_params("smoke", {"mode": "full", "train_top": 1})
    spec = RunSpec("dpn", "tiny", 0.5, 0, 0.5, encoder=str(tiny_bert))
    texts = {p.file.sha256: list(p.texts) for p in (parts.train, parts.dev, parts.test)}
    ctx = RunContext(spec, texts, lambda: None, tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    output = cls(params).run(task, ctx)
    assert torch.equal(torch.get_rng_state(), before)
    diag = output.diagnostics
    assert diag["training"]["mode"] == "full" and diag["stage2_mode"]["trained_layers"] == [1]
    assert len(output.test_assignments) == len(task.test)
