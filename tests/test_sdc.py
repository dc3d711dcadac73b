"""The `sdc` method (Self-Debiasing Calibration): conformance on the tiny task, its presets,
the pieces of a step (calibration, swapped Sinkhorn targets, hard-novel binarisation,
schedules, the biased model's refit classifier, the prototype initialisation) and one smoke
run through the CLI on real data with the official variant's short LR schedule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.cli import cli
from gcdbench.testing import method_checks
from gcdbench_builtins import sdc
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models on a shared 2-core machine: one thread avoids pool synchronisation stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_conformance(tiny_bert):  # noqa: F811
    for check in method_checks(registry.get("method", "sdc"), encoder=str(tiny_bert)):
        check()


def test_presets_bare_is_cpu_and_paper_is_official():
    cls = registry.get("method", "sdc")
    assert cls.resolve_params(None, {}) == cls.resolve_params("cpu", {})
    paper = cls.resolve_params("paper", {})
    assert (paper.epochs, paper.batch_size, paper.lr) == (80, 128, 5e-5)
    assert (paper.mode, paper.pooling, paper.normalize) == ("full", "mean", False)
    assert (paper.train_layers, paper.init_kmeans_n_init, paper.pretrain_batch_size) == (4, 20, 128)
    assert sdc.cuts(paper) == []
    cpu = cls.resolve_params(None, {})
    assert any(cut.startswith("epochs=40 ") for cut in sdc.cuts(cpu))
    with pytest.raises(Exception, match="beta"):
        cls.resolve_params(None, {"beta": "-0.5"})


def test_beta_per_dataset():
    assert sdc.resolve_beta(-1, "banking") == 0.03
    assert sdc.resolve_beta(-1, "clinc") == 0.42
    assert sdc.resolve_beta(-1, "stackoverflow") == 0.05
    assert sdc.resolve_beta(0.2, "banking") == 0.2


def test_schedules_follow_the_official_exponential_decay():
    assert sdc.schedule(0, 80, 0.4, 0.3) == pytest.approx(0.4)
    assert sdc.schedule(80, 80, 0.4, 0.3) == pytest.approx(0.3)
    assert sdc.schedule(40, 80, 0.3, 0.4) == pytest.approx(0.3 * (0.4 / 0.3) ** 0.5)


def test_official_lr_schedule_is_shorter_than_the_run_at_banking_25():
    # 212 labeled texts (BANKING 25%, seed 0), batch 128, 80 epochs: 2 steps per epoch run,
    # the official schedule covers 100 of the 160
    assert sdc.schedule_length("paper", 212, 128, 80) == 160
    assert sdc.schedule_length("official", 212, 128, 80) == 100
    assert sdc.schedule_length("official", 100, 128, 80) == 0  # official: lr 0 throughout


def test_calibration_moves_mass_from_known_to_novel():
    logits = torch.zeros(2, 4)  # 2 known, 2 novel
    bias_logits = torch.tensor([[3.0, -1.0], [0.0, 0.0]])
    omega = torch.tensor([[0.5], [0.25]])
    transfer = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    out = sdc.calibrate(logits, bias_logits, omega, transfer, 0.1, 2)
    assert torch.equal(logits, torch.zeros(2, 4))  # a copy, the input untouched
    assert out[0, :2].tolist() == pytest.approx([-0.15, 0.05])
    # novel part: ω·β·(ℓᵇ M) = 0.05 · [3·0.9 − 0.5, 3·0.1 − 0.5]
    assert out[0, 2:].tolist() == pytest.approx([0.05 * 2.2, 0.05 * -0.2])
    assert out[1].abs().sum() == 0
    no_transfer = sdc.calibrate(logits, bias_logits, omega, None, 0.1, 2)
    assert no_transfer[:, 2:].abs().sum() == 0
    assert torch.equal(sdc.calibrate(logits, bias_logits, omega, transfer, 0.0, 2), logits)


def test_binarise_only_confident_novel_rows():
    targets = torch.tensor([[0.1, 0.1, 0.7, 0.1], [0.5, 0.2, 0.2, 0.1], [0.3, 0.0, 0.35, 0.35]])
    changed = sdc.binarise(targets, 0.3, 2)
    assert changed == 2
    assert targets[0].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert targets[1].tolist() == pytest.approx([0.5, 0.2, 0.2, 0.1])  # novel max 0.2 < 0.3
    assert targets[2].tolist() == [1.0, 0.0, 1.0, 1.0]  # every entry >= t, as the official


def test_bias_classifier_fits_and_keeps_every_known_class():
    rng = np.random.default_rng(0)
    centers = np.eye(3, 8) * 4
    labels = np.repeat([0, 1], 10)  # known class 2 has no labeled text
    features = centers[labels] + rng.normal(0, 0.3, (20, 8))
    head = sdc.fit_bias_classifier(features, labels, 3, c=1.0)
    again = sdc.fit_bias_classifier(features, labels, 3, c=1.0)
    assert head.weight.shape == (3, 8) and head.train_acc == 1.0
    assert np.array_equal(head.weight, again.weight)  # no randomness
    logits = head.logits(features)
    assert (logits[:, 2] < logits.max(1)).all()
    weaker = sdc.fit_bias_classifier(features, labels, 3, c=0.01)
    assert np.linalg.norm(weaker.weight) < np.linalg.norm(head.weight)


def test_initial_prototypes_put_known_classes_first_in_order():
    rng = np.random.default_rng(0)
    centers = np.eye(4, 6) * 10
    pool_y = np.concatenate([[1] * 5, [0] * 5, np.repeat([0, 1, 2, 3], 20)])
    features = centers[pool_y] + rng.normal(0, 0.2, (len(pool_y), 6))
    init = sdc.initial_prototypes(features, pool_y[:10], 2, 4, seed=0, n_init=3, normalize=False)
    assert init.rows.shape == (4, 6) and init.transfer.shape == (2, 2)
    assert np.abs(init.rows[0] - centers[0]).max() < 0.5
    assert np.abs(init.rows[1] - centers[1]).max() < 0.5
    assert init.transfer.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert init.describe()["known_classes_without_labeled_text"] == 0


def test_cli_smoke_official_variant(tmp_path, shared_data, tiny_bert):  # noqa: F811
    # massive_scenario (18 classes, ~3k texts) is the cheapest real dataset for a CLI run
    argv = ["run", "sdc", "--dataset", "massive_scenario", "--encoder", str(tiny_bert)]
    argv += ["--preset", "smoke", "-p", "variant=official"]
    argv += ["--results-dir", str(tmp_path / "results"), "--data-dir", str(shared_data)]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "results").rglob("record.json")
    record = json.loads(Path(path).read_text())
    diagnostics = record["diagnostics"]
    stage2 = diagnostics["stage2"]
    n_lab, batch = stage2["labeled_texts"], 8  # the smoke preset's batch_size
    assert stage2["optimizer_steps"] == -(-n_lab // batch) * 2  # 2 smoke epochs
    assert stage2["scheduled_steps"] == (n_lab // batch) * round(2 * 100 / 80)
    if stage2["scheduled_steps"] < stage2["optimizer_steps"]:
        assert stage2["epochs"][-1]["lr_end"] == 0.0
    assert len(stage2["epochs"]) == 2 and diagnostics["beta"] == 0.05
    assert any(d.startswith("official: LR schedule") for d in diagnostics["departures"])
    prediction = diagnostics["prediction"]
    assert prediction["default"] == "kmeans" and prediction["kmeans_clusters"] == 18
    assert 1 <= prediction["argmax_clusters"] <= 18
    assert 0 < record["metrics"]["acc"] <= 100
