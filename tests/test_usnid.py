"""USNID (docs/methods/usnid.md): conformance, presets, token erasure, the paper/official
heads, centroid-initialised K-means, and smoke runs on real BANKING data through the CLI with
the tiny random BERT (the weights are random: the tests read what the record says each stage
did, never how good the clusters are)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench import registry
from gcdbench.cli import cli
from gcdbench.errors import GcdbenchError
from gcdbench.testing import method_checks
from gcdbench_builtins.usnid import USNID, USNIDParams, _kmeans, _Net, erase_tokens
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids spinning contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def test_conformance(tiny_bert):  # noqa: F811
    assert registry.get("method", "usnid") is USNID
    for check in method_checks(USNID, encoder=str(tiny_bert)):
        check()


def test_presets_and_parameter_rules():
    assert USNID.resolve_params(None, {}) == USNID.resolve_params("cpu", {})
    paper = USNID.resolve_params("paper", {})
    assert (paper.mode, paper.pretrain_mode, paper.pretrain_patience) == ("full", "top-1", 10)
    assert (paper.epochs, paper.batch_size, paper.pretrain_batch_size) == (100, 128, 128)
    assert (paper.max_steps_per_epoch, paper.pretrain_max_steps) == (0, 0)
    assert paper.lr == 0 and paper.temperature == 0  # resolved per dataset at run time
    assert paper.pretrain_mlm is False and paper.normalize is False
    with pytest.raises(GcdbenchError, match="no MLM"):
        USNID.resolve_params(None, {"pretrain_mlm": "true"})
    with pytest.raises(GcdbenchError, match="pretrain_mode"):
        USNID.resolve_params(None, {"pretrain_mode": "full"})


def test_token_erasure_deletes_the_official_share_and_keeps_order():
    # [CLS] a b c d e f g h i j [SEP] pad pad  -> 10 ordinary tokens, floor(0.4 * 10) = 4 erased
    ids = torch.tensor([[101, *range(1000, 1010), 102, 0, 0], [101, 2000, 2001, 102, *[0] * 10]])
    mask = (ids != 0).long()
    special = ((ids == 101) | (ids == 102) | (ids == 0)).long()
    gen = torch.Generator().manual_seed(3)
    new_ids, new_mask = erase_tokens(ids, mask, special, 0.4, gen, pad_id=0)
    assert new_mask.sum(1).tolist() == [8, 4]  # 12 - 4 and 4 - floor(0.8) = 4
    row = new_ids[0][new_mask[0].bool()].tolist()
    assert row[0] == 101 and row[-1] == 102
    kept = row[1:-1]
    assert len(kept) == 6 and kept == sorted(kept) and set(kept) < set(range(1000, 1010))
    assert new_ids.shape[1] == 8 and (new_ids[1, 4:] == 0).all()
    # Different draws erase different tokens; the same generator state repeats them.
    again, _ = erase_tokens(ids, mask, special, 0.4, torch.Generator().manual_seed(3), pad_id=0)
    other, _ = erase_tokens(ids, mask, special, 0.4, torch.Generator().manual_seed(4), pad_id=0)
    assert torch.equal(again, new_ids) and not torch.equal(other, new_ids)


def test_paper_heads_read_tanh_and_official_heads_do_not():
    pooled = torch.randn(5, 16) * 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        paper = _Net(16, 4, USNIDParams(variant="paper"))
        torch.manual_seed(0)
        official = _Net(16, 4, USNIDParams(variant="official"))
    paper.train(False)
    official.train(False)
    z_p, proj_p, logits_p = paper.forward(pooled)
    z_o, proj_o, logits_o = official.forward(pooled)
    assert torch.equal(z_p, z_o)  # the clustered feature is z either way
    assert torch.allclose(logits_o, official.classifier(z_o))
    assert torch.allclose(proj_o, official.mlp_head(z_o))
    assert torch.allclose(logits_p, paper.classifier(z_p.tanh()))
    assert torch.allclose(proj_p, paper.mlp_head(z_p.tanh()))
    assert not torch.allclose(logits_p, logits_o)


def test_kmeans_from_centroids_keeps_cluster_identity():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(size=(30, 2)) for c in centres]).astype(np.float32)
    first = _kmeans(points, 3, 0, init=None, n_init=2)
    # Started from permuted centroids, cluster c stays where centroid c started.
    permuted = first.centers[[2, 0, 1]]
    second = _kmeans(points, 3, 0, init=permuted, n_init=1)
    mapping = {int(a): int(b) for a, b in zip(first.labels, second.labels, strict=True)}
    assert mapping == {2: 0, 0: 1, 1: 2}


def _run(tmp: Path, data: Path, *args: str):
    argv = ["run", "usnid", *args, "--dataset", "banking", "--results-dir", str(tmp / "results")]
    return CliRunner().invoke(cli, [*argv, "--data-dir", str(data)], catch_exceptions=False)


def _records(tmp: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (tmp / "results").rglob("record.json")]


@pytest.mark.parametrize("mode", ["top-1", "full"])
def test_smoke_run_on_banking_records_both_stages(tmp_path, shared_data, tiny_bert, mode):  # noqa: F811
    result = _run(
        tmp_path, shared_data, "--encoder", str(tiny_bert), "--preset", "smoke", "-p",
        f"mode={mode}", "--known-ratio", "0.25",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = _records(tmp_path)
    diag = record["diagnostics"]
    pre = diag["pretrain"]
    assert 1 <= pre["epochs_run"] <= 2 and pre["steps_per_epoch"] == 2
    assert {"ce", "supcon", "dev_acc"} <= set(pre["epochs"][0])
    train = diag["train"]
    assert train["pool_steps_per_epoch"] == 2 and train["temperature"] == 0.05  # banking's
    first = train["epochs"][0]
    assert first["kmeans_init"] == "k-means++" and "labeled_supcon" in first
    assert {"pseudo_ce", "pseudo_supcon"} <= set(first)
    if train["epochs_run"] > 1:
        assert train["epochs"][1]["kmeans_init"] == "previous centroids"
        assert 0 <= train["epochs"][1]["changed"] <= 1
    assert diag["training"]["stage2"]["mode"] == mode
    augmentation = [d for d in diag["departures"] if "views" in d]
    assert ("token erasure per batch" in augmentation[0]) == (mode == "full")
    assert any("stage 1: at most 2 epochs" in c for c in diag["cuts"])
    assert diag["resolved"] == {"lr": pytest.approx(1e-4), "temperature": 0.05}
    assert 0 < record["metrics"]["acc"] <= 100


def test_ablations_and_official_variant_change_what_runs(tmp_path, shared_data, tiny_bert):  # noqa: F811
    args = ["--encoder", str(tiny_bert), "--preset", "smoke", "--known-ratio", "0.25"]
    result = _run(
        tmp_path, shared_data, *args, "--ablate", "pretrain", "--ablate", "labeled-supcon",
        "--ablate", "pseudo-ce", "--variant", "official",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = _records(tmp_path)
    diag = record["diagnostics"]
    assert diag["pretrain"] == {"skipped": "ablated"}
    first = diag["train"]["epochs"][0]
    assert "labeled_supcon" not in first and first["pseudo_ce"] == 0.0
    assert first["pseudo_supcon"] != 0.0
    assert any("variant official" in d for d in diag["departures"])
    assert record["spec"]["params"]["variant"] == "official"


def test_params_are_a_pretrain_params_subclass():
    # The engine's prepare_training reads the PretrainParams fields; stage 1 swaps mode only.
    fields = {f.name for f in dataclasses.fields(USNIDParams)}
    assert {"mode", "pooling", "precision", "pretrain_mlm", "normalize"} <= fields
