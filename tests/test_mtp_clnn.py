"""MTP-CLNN (issue 14): conformance, that it is the engine's round loop with the NCL term
alone, the same-label rule of each variant, presets and a smoke run through the CLI on real
BANKING data. Weights are a tiny random BERT, so nothing here reads how good the clusters are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench import registry
from gcdbench.api import training
from gcdbench.api.spec import RunSpec
from gcdbench.cli import cli
from gcdbench.runner.context import RunContext
from gcdbench.testing import check_method, tiny_task
from gcdbench_builtins.mtp_clnn import (
    MtpClnn,
    MtpClnnParams,
    cuts,
    engine_params,
    pair_label_ids,
)
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch/OpenMP thread: the models are tiny and the machine's two cores are shared
    (tests/test_glean_loop.py measured 14x slower conformance checks with two threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def _context(tmp: Path, bert: Path, params: MtpClnnParams) -> RunContext:
    _, _, parts = tiny_task()
    spec = RunSpec("mtp-clnn", "tiny", 0.5, 0, 0.5, encoder=str(bert))
    texts = {p.file.sha256: list(p.texts) for p in (parts.train, parts.dev, parts.test)}
    return RunContext(spec, texts, lambda: None, tmp)


# -- 1. conformance and reuse of the engine ----------------------------------------------------


def test_conformance(tiny_bert):  # noqa: F811
    check_method(MtpClnn, encoder=str(tiny_bert))


def test_paper_variant_is_the_engine_round_loop_with_ncl_alone(tiny_bert, tmp_path):  # noqa: F811
    task, _, _ = tiny_task()
    params = MtpClnn.resolve_params("smoke", {})
    ours = MtpClnn(params).run(task, _context(tmp_path / "a", tiny_bert, params))
    engine = training.train_and_cluster(
        task,
        _context(tmp_path / "b", tiny_bert, params),
        engine_params(params, task.dataset),
        "mtp-clnn",
    )
    assert np.array_equal(ours.test_assignments, engine.assignments)
    rounds = ours.diagnostics["rounds"]
    assert len(rounds) == 2  # smoke: 2 epochs, neighbours refreshed every epoch
    assert {name for row in ours.diagnostics["losses_per_epoch"] for name in row} == {
        "epoch",
        "ncl",
    }


# -- 2. the same-label rule --------------------------------------------------------------------


def test_pair_ids_paper_official_and_ablated():
    labeled_y = np.array([0, 0, 1, 1, 2, 0])
    paper = pair_label_ids(labeled_y, 3, official=False)
    assert paper.tolist() == labeled_y.tolist()
    official = pair_label_ids(labeled_y, 3, official=True)
    assert official[[2, 3, 4]].tolist() == [1, 1, 2]
    assert sorted(official[[0, 1, 5]].tolist()) == [3, 4, 5]  # each alone, past the known ids
    ablated = pair_label_ids(labeled_y, 3, official=False, enabled=False)
    assert len(set(ablated.tolist())) == len(labeled_y) and ablated.min() >= 3


def test_official_rule_drops_class_zero_pairs_from_the_adjacency():
    # Four labeled texts (classes 0, 0, 1, 1) and their neighbour lists pointing nowhere in
    # the batch: only label pairs (and the diagonal) can be positives.
    labeled_y = np.array([0, 0, 1, 1])
    neighbours = torch.tensor([[4], [4], [4], [4], [0]])
    batch = torch.arange(4)
    masks = {
        official: training.neighbour_adjacency(
            batch, neighbours, 4, torch.as_tensor(pair_label_ids(labeled_y, 2, official=official))
        )
        for official in (False, True)
    }
    assert bool(masks[False][0, 1]) and bool(masks[False][2, 3])
    assert not bool(masks[True][0, 1]) and bool(masks[True][2, 3])


def test_official_variant_records_the_class_it_skips(tiny_bert, tmp_path):  # noqa: F811
    task, _, _ = tiny_task()
    params = MtpClnn.resolve_params("smoke", {"variant": "official", "knn_metric": "inner"})
    out = MtpClnn(params).run(task, _context(tmp_path, tiny_bert, params))
    summary = out.diagnostics["label_positives"]
    assert summary["classes_with_label_positives"] == summary["known_classes_labeled"] - 1
    assert any("class 0 gets none" in line for line in out.diagnostics["departures"])
    assert any("inner product" in line for line in out.diagnostics["departures"])


# -- 3. parameters and presets -----------------------------------------------------------------


def test_defaults_are_the_cpu_preset_and_the_paper_preset_is_official():
    assert MtpClnn.resolve_params(None, {}) == MtpClnn.resolve_params("cpu", {})
    cpu = MtpClnn.resolve_params(None, {})
    assert (cpu.losses, cpu.mode, cpu.normalize) == ("ncl", "top-2", True)
    paper = MtpClnn.resolve_params("paper", {})
    assert (paper.epochs, paper.batch_size, paper.update_per_epoch) == (34, 128, 5)
    assert (paper.feat_dim, paper.temperature, paper.knn_metric) == (128, 0.07, "inner")
    assert (paper.mode, paper.pooling, paper.pretrain_batch_size) == ("full", "cls", 64)
    assert engine_params(paper, "banking").lr == 1e-5
    assert engine_params(paper, "stackoverflow").lr == 1e-6
    assert engine_params(paper, "banking").variant == "official"  # inner-product kNN
    assert training.resolve_topk(paper.k, "stackoverflow", 20_000) == 500
    assert cuts(paper, 1e-5, "banking") == []
    cpu_cuts = " ".join(cuts(cpu, cpu.lr, "banking"))
    assert "mode='top-2'" in cpu_cuts and "epochs=6" in cpu_cuts and "lr=0.0003" in cpu_cuts


def _run(tmp: Path, data: Path, *args: str):
    argv = ["run", "mtp-clnn", *args, "--results-dir", str(tmp / "results")]
    return CliRunner().invoke(cli, [*argv, "--data-dir", str(data)], catch_exceptions=False)


def test_official_variant_refuses_a_ce_term(tmp_path, shared_data):
    result = _run(tmp_path, shared_data, "--variant", "official", "-p", "losses=ncl,ce")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no CE term" in errors[0], result.stderr
    assert not list((tmp_path / "results").rglob("record.json"))


# -- 4. a smoke run on real BANKING ------------------------------------------------------------


def test_smoke_run_on_banking(tmp_path, shared_data, tiny_bert):  # noqa: F811
    options = ["--dataset", "banking", "--known-ratio", "0.25", "--seed", "0"]
    result = _run(
        tmp_path, shared_data, *options, "--preset", "smoke", "--encoder", str(tiny_bert), "-q"
    )
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "results").rglob("record.json")
    record = json.loads(path.read_text())
    assert record["spec"]["method"] == "mtp-clnn" and record["spec"]["preset"] == "smoke"
    diagnostics = record["diagnostics"]
    assert diagnostics["training"]["k"] == 5 and diagnostics["training"]["lr"] == 3e-4
    assert [r["round"] for r in diagnostics["rounds"]] == [0, 1]
    assert all(e["steps"] == 3 for r in diagnostics["rounds"] for e in r["epochs"])
    assert [row["epoch"] for row in diagnostics["losses_per_epoch"]] == [0, 1]
    assert diagnostics["label_positives"]["classes_with_label_positives"] == 19  # round(77/4)
    assert any("external" in line for line in diagnostics["departures"])
    assert "mode='top-1' (official 'full')" in diagnostics["cuts"]
    assert 0 < record["metrics"]["acc"] <= 100
    assert registry.get("method", "mtp-clnn") is MtpClnn
