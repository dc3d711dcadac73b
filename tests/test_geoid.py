"""The `geoid` method (GeoID, Tang et al., ACL 2024): conformance, its numeric pieces
(simplex ETF, semi-supervised K-means, Hungarian matching to the vertices, Sinkhorn,
confidence selection, ramps) and a smoke run through the CLI on real BANKING data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from gcdbench import registry
from gcdbench.api import GcdbenchError
from gcdbench.api.toolkit import torch_threads
from gcdbench.cli import cli
from gcdbench.testing import method_checks
from gcdbench_builtins.geoid import (
    align_to_vertices,
    feature_size,
    marginal_entropy_loss,
    ramps,
    rdrop_loss,
    select_confident,
    semi_supervised_kmeans,
    simplex_etf,
)
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a busy 2-core machine: thread synchronisation costs more than it saves.
    with torch_threads(1):
        yield


def test_conformance(tiny_bert):  # noqa: F811
    for check in method_checks(registry.get("method", "geoid"), encoder=str(tiny_bert)):
        check()


def test_presets_cpu_is_the_defaults_and_paper_is_the_official_scripts():
    cls = registry.get("method", "geoid")
    assert cls.resolve_params(None, {}) == cls.resolve_params("cpu", {})
    paper = cls.resolve_params("paper", {})
    assert (paper.epochs, paper.lr, paper.kmeans_n_init, paper.max_steps_per_epoch) == (
        200,
        1e-3,
        100,
        0,
    )
    assert (paper.train_mode, paper.mode, paper.pooling, paper.update_per_epoch) == (
        "top-1",
        "full",
        "cls",
        5,
    )
    cpu = cls.resolve_params("cpu", {})
    assert cpu.train_mode == "top-1" and cpu.epochs < paper.epochs and cpu.variant == "paper"


def test_feature_size_follows_the_official_scripts_and_rejects_d_below_k():
    assert [feature_size(0, k) for k in (77, 150, 20, 6)] == [128, 256, 64, 64]
    assert feature_size(300, 150) == 300
    cls = registry.get("method", "geoid")
    with pytest.raises(GcdbenchError, match=r"feat_dim >= K = 150.*-p feat_dim=0"):
        cls.cross_check(cls.resolve_params(None, {"feat_dim": "128"}), 150)
    cls.cross_check(cls.resolve_params(None, {"feat_dim": "0"}), 150)


def test_simplex_etf_is_equiangular_with_unit_columns():
    etf = simplex_etf(16, 10, np.random.default_rng(0))
    assert etf.shape == (16, 10)
    np.testing.assert_allclose(np.linalg.norm(etf, axis=0), 1.0, atol=1e-5)
    cosine = etf.T @ etf
    off = cosine[~np.eye(10, dtype=bool)]
    np.testing.assert_allclose(off, -1 / 9, atol=1e-5)
    # a different stage generator draws a different rotation, the same geometry
    other = simplex_etf(16, 10, np.random.default_rng(1))
    assert not np.allclose(other, etf)
    with pytest.raises(GcdbenchError, match="feat_dim"):
        simplex_etf(8, 10, np.random.default_rng(0))


def _blobs(rng: np.random.Generator, per: int = 30, k: int = 5, dim: int = 8):
    centres = rng.normal(size=(k, dim)) * 10
    y = np.repeat(np.arange(k), per)
    return centres[y] + rng.normal(size=(len(y), dim)), y


def test_semi_supervised_kmeans_pins_labeled_rows_and_finds_the_blobs():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    labeled = np.flatnonzero(y < 2)[:10]  # ten rows of classes 0 and 1, pinned
    rest = np.setdiff1d(np.arange(len(y)), labeled)
    x, y = np.concatenate([x[labeled], x[rest]]), np.concatenate([y[labeled], y[rest]])
    labeled_y = y[:10].copy()
    labeled_y[0] = 1 - labeled_y[0]  # a "wrong" label stays pinned where its label says
    fit = semi_supervised_kmeans(x, labeled_y, 5, np.random.default_rng(1), n_init=3, max_iter=50)
    assert np.array_equal(fit.labels[:10], labeled_y)  # classes 0, 1 -> clusters 0, 1
    assert adjusted_rand_score(y[10:], fit.labels[10:]) == pytest.approx(1.0)
    for cls_id in (0, 1):  # the unlabeled rows of a labeled class join its cluster
        assert set(fit.labels[10:][y[10:] == cls_id]) == {cls_id}
    again = semi_supervised_kmeans(x, labeled_y, 5, np.random.default_rng(1), n_init=3, max_iter=50)
    assert np.array_equal(again.labels, fit.labels)


def test_alignment_recovers_the_permutation_and_official_inverts_it():
    vertices = simplex_etf(8, 6, np.random.default_rng(0)).T  # [K, d]
    perm = np.array([2, 0, 1, 5, 3, 4])  # cluster c sits on vertex perm[c]
    centres = vertices[perm] + 0.01
    assert np.array_equal(align_to_vertices(centres, vertices), perm)
    inverse = align_to_vertices(centres, vertices, official=True)
    assert np.array_equal(inverse[perm], np.arange(6)) and not np.array_equal(inverse, perm)


def test_select_confident_keeps_the_top_share_per_class():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.5, 0.4, 0.3, 0.2, 0.1])
    pred = np.array([0, 0, 0, 0, 0, 2, 2, 2, 2, 2])
    candidates = np.ones(10, dtype=bool)
    candidates[4] = False  # a labeled row: not a candidate
    chosen = select_confident(conf, pred, candidates, 2, 3, 0.5, 0.4)
    # class 0 (known): 4 candidates, keep 2 (0.9, 0.8); class 2 (novel): 5, keep 2
    assert chosen.tolist() == [1, 1, 0, 0, 0, 2, 2, 0, 0, 0]
    everything = select_confident(conf, pred, candidates, 2, 3, 1.0, 1.0)
    assert (everything[candidates] > 0).all() and everything[4] == 0


def test_regularisers_vanish_when_they_should():
    same = torch.randn(5, 7)
    assert float(rdrop_loss(same, same)) == pytest.approx(0.0, abs=1e-6)
    assert float(rdrop_loss(same, torch.randn(5, 7))) > 0
    balanced = torch.eye(4).repeat(2, 1) * 5
    assert float(marginal_entropy_loss(balanced)) == pytest.approx(0.0, abs=1e-6)
    assert float(marginal_entropy_loss(torch.eye(4)[[0, 0, 0, 0]] * 5)) > 1.0


def test_ramps_match_the_released_schedule():
    start, middle, end = ramps(0, 200), ramps(70, 200), ramps(140, 200)
    assert (start.w, start.rho_known, start.rho_novel) == (0.0, 0.3, 0.1)
    assert middle.w == 1.0 and middle.rho_known == pytest.approx(0.55)
    assert (end.rho_known, end.rho_novel) == pytest.approx((0.8, 0.8))


def _run(tmp: Path, data: Path, *args: str):
    argv = ["run", "geoid", *args, "--dataset", "banking", "--results-dir", str(tmp / "r")]
    return CliRunner().invoke(cli, [*argv, "--data-dir", str(data)], catch_exceptions=False)


def test_smoke_run_on_banking_records_cuts_and_departures(tmp_path, shared_data, tiny_bert):  # noqa: F811
    result = _run(tmp_path, shared_data, "--encoder", str(tiny_bert), "--preset", "smoke")
    assert result.exit_code == 0, result.output
    (path,) = list((tmp_path / "r").rglob("record.json"))
    record = json.loads(path.read_text())
    assert 0 < record["metrics"]["acc"] <= 100
    assert not record.get("leaks_labels")  # never watches the test set
    geoid = record["diagnostics"]["geoid"]
    assert geoid["feat_dim"] == 128 and geoid["k"] == 5 and geoid["variant"] == "paper"
    epochs = geoid["epochs"]
    assert [e["steps"] for e in epochs] == [3, 3]
    assert "kmeans" not in epochs[0] and epochs[1]["kmeans"]["iterations"] >= 1
    assert epochs[1]["loss"]["selected_novel"] > 0 and "cluster" in epochs[1]["loss"]
    assert record["diagnostics"]["training"]["stage2_mode"]["mode"] == "top-1"
    cuts = " ".join(record["diagnostics"]["cuts"])
    assert "official 200" in cuts and "restarts (official 100)" in cuts
    assert any("Eq. 6" in d for d in record["diagnostics"]["departures"])


def test_feat_dim_below_k_fails_with_one_line(tmp_path, shared_data):
    result = _run(tmp_path, shared_data, "--preset", "smoke", "-p", "feat_dim=64")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "feat_dim >= K = 77" in errors[0], result.stderr
    assert not list((tmp_path / "r").rglob("record.json"))


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_variants_run_and_say_what_they_follow(tiny_bert, tmp_path, variant):  # noqa: F811
    from gcdbench.api.spec import RunSpec
    from gcdbench.runner.context import RunContext
    from gcdbench.testing import tiny_task

    task, _, parts = tiny_task()
    cls = registry.get("method", "geoid")
    params = cls.resolve_params("smoke", {"variant": variant, "epochs": "3"})
    spec = RunSpec("geoid", "tiny", 0.5, 0, 0.5, encoder=str(tiny_bert))
    texts = {p.file.sha256: list(p.texts) for p in (parts.train, parts.dev, parts.test)}
    ctx = RunContext(spec, texts, lambda: None, tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    output = cls(params).run(task, ctx)
    assert torch.equal(torch.get_rng_state(), before)
    assert len(output.test_assignments) == len(task.test)
    departures = " ".join(output.diagnostics["departures"])
    assert ("variant official" in departures) == (variant == "official")
    assert ("Eq. 6" in departures) == (variant == "paper")
    last = output.diagnostics["geoid"]["epochs"][-1]
    assert last["kmeans"]["iterations"] >= 1 and np.isfinite(last["loss"]["total"])
