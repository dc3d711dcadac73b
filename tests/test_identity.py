"""A run id means one result: caches never change predictions, and the id covers data and code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.cli import cli
from gcdbench.engine import ENGINE_FINGERPRINT, ENGINE_VERSION, engine_fingerprint
from gcdbench.runner.identity import stale_reasons
from gcdbench.runner.store import ResultsStore, load_record


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _only_record(results: Path) -> Path:
    (path,) = ResultsStore(results).record_paths()
    return path


def test_engine_fingerprint_is_recorded():
    """Engine code changed without a decision: bump ENGINE_VERSION if results can change,
    then record the fingerprint (`python -m gcdbench.engine --update`)."""
    assert engine_fingerprint() == ENGINE_FINGERPRINT, (
        "gcdbench's engine code changed. If the change can alter any result, bump "
        f"ENGINE_VERSION (now {ENGINE_VERSION}) in gcdbench/engine.py; in either case run "
        "`python -m gcdbench.engine --update` to record the new fingerprint."
    )


@pytest.mark.slow
def test_cold_and_warm_pretraining_cache_give_identical_predictions(
    tmp_path, shared_data, monkeypatch
):
    monkeypatch.setenv("GCDBENCH_CACHE", str(tmp_path / "empty-cache"))
    common = ["run", "no-llm", "--preset", "smoke", "--data-dir", str(shared_data)]
    _run(*common, "--results-dir", str(tmp_path / "cold"))
    _run(*common, "--results-dir", str(tmp_path / "warm"))
    cold, warm = _only_record(tmp_path / "cold"), _only_record(tmp_path / "warm")
    cold_record, warm_record = load_record(cold), load_record(warm)
    assert not cold_record.diagnostics["training"]["pretrain"]["cache_hit"]
    assert warm_record.diagnostics["training"]["pretrain"]["cache_hit"]
    assert cold_record.run_id == warm_record.run_id
    cold_csv = (cold.parent / "predictions.csv").read_bytes()
    assert cold_csv == (warm.parent / "predictions.csv").read_bytes()
    assert cold_record.metrics == warm_record.metrics


def _copy_banking(shared_data: Path, target: Path) -> Path:
    shutil.copytree(shared_data / "banking", target / "banking")
    return target


def _change_one_train_text(folder: Path) -> None:
    train = folder / "banking" / "train.tsv"
    lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
    text, label = lines[1].rstrip("\n").split("\t")
    lines[1] = f"{text} please\t{label}\n"
    train.write_text("".join(lines), encoding="utf-8")


def test_changed_data_is_a_new_run_and_the_old_record_goes_stale(tmp_path, shared_data):
    data = _copy_banking(shared_data, tmp_path / "data")
    results = tmp_path / "results"
    args = ["run", "kmeans", "--data-dir", str(data), "--results-dir", str(results)]
    _run(*args)
    old = load_record(_only_record(results))
    assert old.identity["split_hash"] == old.split["hash"]
    assert stale_reasons(old) == []
    assert "already in the results store" in _run(*args)

    _change_one_train_text(data)
    output = _run(*args)
    assert "already in the results store" not in output
    records = {r.run_id: r for r in ResultsStore(results).records()}
    assert len(records) == 2
    (new,) = (r for r in records.values() if r.run_id != old.run_id)
    assert new.spec == old.spec  # same request, other data: another run
    assert new.identity["data_files"]["train.tsv"] != old.identity["data_files"]["train.tsv"]
    assert stale_reasons(new) == []
    reasons = stale_reasons(records[old.run_id])
    assert reasons and "train.tsv" in reasons[0] and "changed" in reasons[0]

    shown = _run("show", old.run_id[:10], "--results-dir", str(results))
    # Long paths wrap at the console's width; the words are what matters.
    assert "stale" in shown and "train.tsv" in "".join(shown.split())
    listing = _run("show", "--results-dir", str(results))
    assert "stale" in listing


def test_code_versions_make_a_record_stale(tmp_path, shared_data, monkeypatch):
    results = tmp_path / "results"
    _run("run", "kmeans", "--data-dir", str(shared_data), "--results-dir", str(results))
    record = load_record(_only_record(results))
    assert record.identity["engine_version"] == ENGINE_VERSION
    assert set(record.identity["plugins"]) == {"method", "dataset", "encoder"}
    assert record.identity["models"]["encoder"] == record.encoder["fingerprint"]

    monkeypatch.setattr(registry.get("method", "kmeans"), "version", "99")
    assert stale_reasons(record) == ["method version 1 (installed: 99)"]
    monkeypatch.undo()

    other_weights = type(record).from_dict(record.to_dict())
    other_weights.identity["models"]["encoder"] = "0" * 64
    now = record.encoder["fingerprint"][:12]
    assert stale_reasons(other_weights) == [
        f"encoder weights changed since the run (000000000000… → {now}…)"
    ]

    monkeypatch.setattr("gcdbench.runner.identity.ENGINE_VERSION", "999")
    assert stale_reasons(record)[0].startswith(f"engine version {ENGINE_VERSION}")
    monkeypatch.undo()

    # A record written before identities existed (schema 1) is never taken as current.
    raw = json.loads(_only_record(results).read_text())
    for key in ("identity", "run_id"):
        raw.pop(key)
    raw["schema_version"] = 1
    legacy = type(record).from_dict(raw)
    assert legacy.run_id == legacy.spec.hash
    assert "before run identity" in stale_reasons(legacy)[0]
