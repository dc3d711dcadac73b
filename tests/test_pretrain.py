"""MTP pre-training: optimiser/schedule shape and the on-disk cache shared across methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gcdbench.testing import tiny_task
from gcdbench.training.backbone import TextBackbone
from gcdbench.training.optim import make_optimisation, parameter_groups, steps_per_epoch
from gcdbench.training.params import PretrainParams, presets_for
from gcdbench.training.pretrain import MANIFEST, _store, pretrain
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)

SMOKE = PretrainParams(**presets_for(PretrainParams)["smoke"])


def test_no_weight_decay_on_bias_and_layernorm():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    decay, no_decay = parameter_groups([model], model.parameters(), 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
        id(model[2].bias),
    }


def test_schedule_counts_the_last_partial_batch():
    # stackoverflow 10%: 180 labeled, batch 48 -> 4 batches per epoch, not floor = 3 (§11.19)
    assert steps_per_epoch(180, 48) == 4 and steps_per_epoch(48, 48) == 1
    layer = torch.nn.Linear(2, 1)
    total = steps_per_epoch(180, 48) * 5
    opt = make_optimisation([layer], layer.parameters(), lr=1.0, total_steps=total)
    rates = []
    for _ in range(total):
        opt.step(layer(torch.ones(1, 2)).sum())
        rates.append(opt.learning_rate)
    peak = int(0.1 * total)  # warm-up: 2 steps of 20
    assert rates[peak - 1] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(rates[peak - 1 :], rates[peak:], strict=False))
    assert rates[-2] > 0 and rates[-1] == pytest.approx(0.0)  # zero only after the last step


def test_gradients_are_clipped_to_norm_one():
    layer = torch.nn.Linear(3, 1)
    opt = make_optimisation([layer], layer.parameters(), lr=0.0, total_steps=10)
    norm = opt.step(1000.0 * layer(torch.ones(1, 3)).sum())
    clipped = torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()
    assert norm > 100 and clipped == pytest.approx(1.0, rel=1e-4)


def _pretrain(folder: Path, cache: Path, seed: int = 0, **changes):
    task, _, _ = tiny_task(seed=0)
    params = PretrainParams(**{**presets_for(PretrainParams)["smoke"], **changes})
    backbone = TextBackbone.from_ref(str(folder), pooling="mean", with_mlm_head=True, max_length=24)
    rng = np.random.default_rng(seed)
    return pretrain(task, backbone, params, seed=seed, rng=rng, cache_root=cache)


def test_cache_hit_miss_and_manifest(tiny_bert, tmp_path):  # noqa: F811
    first = _pretrain(tiny_bert, tmp_path)
    assert not first.cache_hit and first.mode is not None
    manifest = first.manifest
    assert len(manifest["dev_acc"]) == manifest["epochs_run"] <= SMOKE.pretrain_epochs
    assert manifest["dev_acc"][manifest["best_epoch"]] == manifest["best_dev_acc"]
    assert manifest["key_inputs"]["split_hash"] and "method" not in manifest["key_inputs"]
    # The MLM term trained the fresh head: pre-training is more than CE on the pooled features.
    assert any("MLM head" in d for d in manifest["deviations"])

    second = _pretrain(tiny_bert, tmp_path)
    assert second.cache_hit and second.key == first.key and second.mode is None
    trained = first.backbone.state_dict()
    for name, tensor in second.backbone.state_dict().items():
        assert torch.equal(tensor.cpu(), trained[name].cpu()), name

    assert not _pretrain(tiny_bert, tmp_path, seed=1).cache_hit
    assert not _pretrain(tiny_bert, tmp_path, pretrain_lr=1e-3).cache_hit
    assert len(list((tmp_path / "pretrained").iterdir())) == 3  # no temp folders left


def test_pretraining_changes_the_trained_layers(tiny_bert, tmp_path):  # noqa: F811
    start = TextBackbone.from_ref(str(tiny_bert), pooling="mean", max_length=24)
    after = _pretrain(tiny_bert, tmp_path, pretrain_lr=5e-3).backbone
    top = f"encoder.layer.{start.num_layers - 1}.output.dense.weight"
    bottom = "embeddings.word_embeddings.weight"
    base_after = after.encoder_model.state_dict()
    base_start = start.encoder_model.state_dict()
    assert not torch.equal(base_after[top], base_start[top])  # top-1 mode trains the top layer
    assert torch.equal(base_after[bottom], base_start[bottom])  # and nothing below it


def test_concurrent_writer_keeps_the_first_result(tiny_bert, tmp_path):  # noqa: F811
    outcome = _pretrain(tiny_bert, tmp_path)
    folder = tmp_path / "pretrained" / outcome.key
    before = (folder / MANIFEST).read_text()
    _store(folder, outcome.backbone, {"other": "writer"})  # a second writer finishing later
    assert (folder / MANIFEST).read_text() == before
    assert [p.name for p in folder.parent.iterdir()] == [outcome.key]


def test_head_mode_skips_pretraining(tiny_bert, tmp_path):  # noqa: F811
    outcome = _pretrain(tiny_bert, tmp_path, mode="head")
    assert outcome.manifest == {"skipped": "head mode"} and not outcome.cache_hit
    assert not (tmp_path / "pretrained").exists()
