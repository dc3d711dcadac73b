"""The `mtp` and `no-llm` methods: conformance, presets, the shared pre-training cache and a
smoke run through the CLI on real BANKING data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.cli import cli
from gcdbench.testing import method_checks
from gcdbench.training.params import RoundParams
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


@pytest.mark.parametrize("method", ["mtp", "no-llm"])
def test_conformance(method, tiny_bert):  # noqa: F811
    for check in method_checks(registry.get("method", method), encoder=str(tiny_bert)):
        check()


def test_bare_defaults_are_the_cpu_preset_and_overrides_win():
    cls = registry.get("method", "no-llm")
    assert cls.resolve_params(None, {}) == cls.resolve_params("cpu", {})
    paper = cls.resolve_params("paper", {"k": "500"})
    assert (paper.mode, paper.lr, paper.pretrain_patience, paper.k) == ("full", 1e-5, 20, 500)
    assert dataclasses.asdict(paper)["update_per_epoch"] == 5
    assert set(dataclasses.asdict(registry.get("method", "mtp").resolve_params("smoke", {}))) < set(
        dataclasses.asdict(RoundParams())
    )


def _run(tmp: Path, data: Path, *args: str):
    argv = ["run", *args, "--dataset", "banking", "--results-dir", str(tmp / "results")]
    return CliRunner().invoke(cli, [*argv, "--data-dir", str(data)], catch_exceptions=False)


def _record(tmp: Path, method: str, seed: int = 0) -> dict:
    records = [json.loads(p.read_text()) for p in (tmp / "results").rglob("record.json")]
    (match,) = [r for r in records if r["spec"]["method"] == method and r["spec"]["seed"] == seed]
    return match


def test_smoke_runs_share_pretraining_on_banking(
    tmp_path,
    shared_data,
    tiny_bert,  # noqa: F811
    monkeypatch,
):
    # A cache of its own: other methods' smoke runs in this session pre-train the same way.
    monkeypatch.setenv("GCDBENCH_CACHE", str(tmp_path / "cache"))
    encoder = ["--encoder", str(tiny_bert), "--preset", "smoke"]
    first = _run(tmp_path, shared_data, "mtp", *encoder)
    assert first.exit_code == 0, first.output
    second = _run(tmp_path, shared_data, "no-llm", *encoder)
    assert second.exit_code == 0, second.output
    mtp, no_llm = _record(tmp_path, "mtp"), _record(tmp_path, "no-llm")
    assert mtp["diagnostics"]["training"]["pretrain"]["cache_hit"] is False
    assert no_llm["diagnostics"]["training"]["pretrain"]["cache_hit"] is True
    key = mtp["diagnostics"]["training"]["pretrain"]["cache_key"]
    assert no_llm["diagnostics"]["training"]["pretrain"]["cache_key"] == key
    assert no_llm["spec"]["params"]["mode"] == "top-1" and no_llm["spec"]["preset"] == "smoke"
    rounds = no_llm["diagnostics"]["rounds"]
    assert [r["round"] for r in rounds] == [0] and no_llm["diagnostics"]["training"]["k"] == 5
    assert rounds[0]["epochs"][0]["steps"] == 3  # the smoke preset's max_steps_per_epoch
    for record in (mtp, no_llm):
        assert 0 < record["metrics"]["acc"] <= 100


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["no-llm", "--encoder", "bag-of-words"], "has no weights"),
        (["mtp", "-p", "mode=head"], "trains nothing"),
        (["no-llm", "-p", "mode=top-x"], "unknown mode"),
        (["no-llm", "-p", "precision=fp8"], "unknown precision"),
    ],
)
def test_bad_training_requests_fail_with_one_line(tmp_path, shared_data, args, needle):
    result = _run(tmp_path, shared_data, *args, "--preset", "smoke")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert not list((tmp_path / "results").rglob("record.json"))


def test_head_mode_trains_the_head_and_leaves_torch_rng_alone(tiny_bert, tmp_path):  # noqa: F811
    from gcdbench.api.spec import RunSpec
    from gcdbench.runner.context import RunContext
    from gcdbench.testing import tiny_task

    task, _, parts = tiny_task()
    cls = registry.get("method", "no-llm")
    params = cls.resolve_params("smoke", {"mode": "head"})
    spec = RunSpec("no-llm", "tiny", 0.5, 0, 0.5, encoder=str(tiny_bert))
    texts = {p.file.sha256: list(p.texts) for p in (parts.train, parts.dev, parts.test)}
    ctx = RunContext(spec, texts, lambda: None, tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    output = cls(params).run(task, ctx)
    assert torch.equal(torch.get_rng_state(), before)
    training = output.diagnostics["training"]
    assert training["pretrain"]["skipped"] == "head mode"
    assert training["trainable_parameters"] == 0
    assert any("projection-head output" in d for d in training["deviations"])
    assert len(output.test_assignments) == len(task.test)
