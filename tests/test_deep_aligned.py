"""``deep-aligned`` (DeepAligned): conformance, the K estimate, the centroid alignment, the
presets and smoke runs through the CLI on real data (massive_scenario) with a tiny random BERT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.cli import cli
from gcdbench.testing import method_checks
from gcdbench_builtins.deep_aligned import (
    DeepAligned,
    align_to_previous,
    estimate_k_by_cluster_size,
)
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


def test_registered_and_conformant(tiny_bert):  # noqa: F811
    assert registry.get("method", "deep-aligned") is DeepAligned
    for check in method_checks(DeepAligned, encoder=str(tiny_bert)):
        check()


def test_importing_the_plugin_loads_no_heavy_library():
    code = (
        "import sys, gcdbench_builtins.deep_aligned; "
        "print([m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _blobs(sizes: list[int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.eye(len(sizes), 16) * 50.0  # far apart, one axis each
    groups = [c + rng.normal(0, 0.5, (n, 16)) for c, n in zip(centres, sizes, strict=True)]
    return np.concatenate(groups)


def test_k_estimate_drops_clusters_below_the_mean_size():
    # Three big categories and six small groups: with K' = 9 every group gets a cluster,
    # and the six below N / K' = 960 / 9 are dropped.
    features = _blobs([300, 300, 300, 10, 10, 10, 10, 10, 10])
    assert estimate_k_by_cluster_size(features, 9, seed=0) == 3
    # Equal-sized clusters are all at the mean size: all kept.
    assert estimate_k_by_cluster_size(_blobs([50, 50, 50, 50]), 4, seed=0) == 4
    with pytest.raises(ValueError):
        estimate_k_by_cluster_size(features, 0, seed=0)


def test_alignment_maps_new_clusters_to_the_previous_ids():
    previous = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    perm = np.array([2, 0, 1])  # new cluster j sits at previous centroid perm[j]
    centers = previous[perm] + 0.1
    labels = np.array([0, 0, 1, 2, 2, 1])
    aligned, ordered = align_to_previous(previous, centers, labels)
    assert aligned.tolist() == perm[labels].tolist()
    np.testing.assert_allclose(ordered, previous + 0.1)
    first, same = align_to_previous(None, centers, labels)
    assert first.tolist() == labels.tolist() and same is centers


def test_presets():
    cpu = DeepAligned.resolve_params(None, {})
    assert cpu == DeepAligned.resolve_params("cpu", {})
    assert (cpu.mode, cpu.pretrain_mlm, cpu.normalize, cpu.variant) == (
        "top-1",
        False,
        False,
        "paper",
    )
    paper = DeepAligned.resolve_params("paper", {})
    assert (paper.epochs, paper.patience, paper.lr, paper.batch_size) == (100, 20, 5e-5, 128)
    assert (paper.pretrain_epochs, paper.pretrain_patience, paper.pretrain_lr) == (100, 20, 5e-5)
    assert (paper.silhouette_sample, paper.round_kmeans_n_init, paper.precision) == (0, 10, "fp32")


def _run(tmp: Path, data: Path, tiny: Path, *args: str) -> dict:
    argv = ["run", "deep-aligned", "--preset", "smoke", "--encoder", str(tiny), *args]
    # massive_scenario (18 classes, ~3k texts) is the smallest registered set: quick.
    argv += ["--dataset", "massive_scenario", "--known-ratio", "0.25", "--results-dir", str(tmp)]
    result = CliRunner().invoke(cli, [*argv, "--data-dir", str(data)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (path,) = list(tmp.rglob("record.json"))
    return json.loads(path.read_text())


def test_smoke_run(tmp_path, shared_data, tiny_bert):  # noqa: F811
    record = _run(tmp_path, shared_data, tiny_bert, "-p", "patience=5")
    diag = record["diagnostics"]
    assert 0 < record["metrics"]["acc"] <= 100
    assert diag["k"] == {"k": 18, "true_k": 18, "estimated": False}
    epochs = diag["epochs"]
    # Two training epochs, then the paper variant scores the last model too.
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert all(-1 <= e["silhouette"] <= 1 for e in epochs)
    assert "loss" in epochs[0] and "pseudo_labels_changed" in epochs[1]
    assert diag["stop"]["kept"] == "best" and diag["stop"]["steps_per_epoch"] == 3
    assert diag["head_warmup"]["epochs"] == 2
    assert any("mask-aware mean" in d for d in diag["departures"])
    assert any(c.startswith("epochs=2") for c in diag["cuts"])
    assert diag["training"]["pretrain"]["key_inputs"]["params"]["pretrain_mlm"] is False


def test_official_variant_and_k_estimate(tmp_path, shared_data, tiny_bert):  # noqa: F811
    record = _run(
        tmp_path,
        shared_data,
        tiny_bert,
        "--variant",
        "official",
        "-p",
        "patience=5",
        "-p",
        "k_estimate_factor=2",
    )
    diag = record["diagnostics"]
    # Patience never triggers: the official code evaluates the last model, unscored.
    assert diag["stop"] == {**diag["stop"], "reason": "epochs", "kept": "last"}
    assert [e["epoch"] for e in diag["epochs"]] == [0, 1]
    k = diag["k"]
    assert k["estimated"] and k["true_k"] == 18 and k["k_max"] == 36
    assert 1 <= k["k_hat"] <= 36 and k["k"] == max(2, k["k_hat"])
    assert any("variant official" in d for d in diag["departures"])


def test_k_estimate_factor_too_small_fails_with_one_line(tmp_path, shared_data, tiny_bert):  # noqa: F811
    argv = ["run", "deep-aligned", "--preset", "smoke", "--encoder", str(tiny_bert)]
    argv += ["-p", "k_estimate_factor=0.01", "--dataset", "banking"]
    argv += ["--results-dir", str(tmp_path), "--data-dir", str(shared_data)]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "fewer than 2 clusters" in result.output
