from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gcdbench import registry
from gcdbench.api.spec import RunSpec
from gcdbench.data.split import make_split
from gcdbench.runner import store as store_module
from gcdbench.runner.run import RunOptions, execute, resolve_spec
from gcdbench.runner.store import ResultsStore, load_record
from tests import training_fixtures

tiny_bert = training_fixtures.tiny_bert  # shared fixture

DATASET = "massive_scenario"  # 2,974 texts, 18 classes: the quickest real set


def _spec(seed: int = 0, **overrides) -> RunSpec:
    return resolve_spec("kmeans", DATASET, 0.5, seed, encoder="bag-of-words", overrides=overrides)


def _options(tmp_path: Path, data: Path, **kw) -> RunOptions:
    return RunOptions(results_dir=tmp_path / "results", data_dir=str(data), **kw)


def test_spec_hash_is_stable():
    spec = RunSpec("kmeans", "banking", 0.25, 0, params={"n_init": 10}, method_version="1")
    # A change here silently orphans every stored result: bump deliberately, never by accident.
    assert spec.hash == RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).hash
    assert spec.hash == "30f06fc71bc64714f218e704e280577274f398b4d6c192df9a12920ecc25cc93"
    assert spec.with_(seed=1).hash != spec.hash
    assert (
        RunSpec("m", "d", 0.25, 0, ablations=("b", "a")).hash
        == RunSpec("m", "d", 0.25, 0, ablations=("a", "b")).hash
    )


def test_resolved_params_are_part_of_the_spec():
    assert _spec().params == {"max_iter": 300, "n_init": 10, "normalize": False}
    assert _spec(n_init="3").params["n_init"] == 3
    assert _spec(n_init="3").hash != _spec().hash


def test_run_writes_a_complete_record(tmp_path, shared_data):
    spec = _spec()
    outcome = execute(spec, _options(tmp_path, shared_data))
    assert outcome.status == "done"
    record = load_record(Path(outcome.record_path))
    assert record.spec == spec and record.schema_version == 2
    raw = json.loads(Path(outcome.record_path).read_text())
    assert raw["spec_hash"] == spec.hash

    # The split in the record is the one the protocol draws for this seed, for any method.
    definition = registry.get("dataset", DATASET)
    parts = definition.load(shared_data / DATASET)
    expected = make_split(parts, known_ratio=0.5, labeled_ratio=0.1, seed=0)
    assert record.split["hash"] == expected.hash
    assert (tmp_path / "results" / record.split["file"]).is_file()
    assert record.split["known_classes"] == list(expected.known_classes)

    # Provenance names the data files, code and plugin.
    assert {f["name"] for f in record.data["files"]} == {"small.jsonl"}
    assert all(f["verified"] for f in record.data["files"])
    assert record.method["plugin"]["distribution"] == "gcdbench"
    assert record.encoder["fingerprint"] == "bag-of-words-crc32-1024-v1"
    for key in ("git", "packages", "hardware", "durations_s", "peak_rss_mb", "finished_at"):
        assert key in record.provenance

    # Metrics agree with the per-sample predictions written beside the record.
    predictions = pd.read_csv(Path(outcome.record_path).parent / record.predictions_file)
    assert len(predictions) == record.split["num_test"] == len(parts.test)
    assert predictions["correct"].mean() * 100 == pytest.approx(record.metrics["acc"])
    assert set(predictions["test_row"]) == set(parts.test.rows.tolist())


def test_finished_specs_are_skipped_and_force_reruns_identically(tmp_path, shared_data):
    spec = _spec(seed=1)
    first = execute(spec, _options(tmp_path, shared_data))
    before = load_record(Path(first.record_path))
    assert execute(spec, _options(tmp_path, shared_data)).status == "skipped"
    again = execute(spec, _options(tmp_path, shared_data, force=True))
    assert again.status == "done" and again.record_path == first.record_path
    after = load_record(Path(again.record_path))
    assert after.metrics == before.metrics  # same seed, same everything
    run_dirs = list((tmp_path / "results" / "runs").rglob("record.json"))
    assert len(run_dirs) == 1
    assert not [p for p in (tmp_path / "results" / "runs").rglob(".*")]


def test_interrupted_write_leaves_no_record(tmp_path, shared_data, monkeypatch):
    def boom(path, obj):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        execute(_spec(seed=2), _options(tmp_path, shared_data))
    store = ResultsStore(tmp_path / "results")
    assert list(store.record_paths()) == []
    assert not [p for p in store.runs.rglob("*") if p.name.startswith(".tmp")]


def test_methods_share_the_split(tmp_path, shared_data):
    a = execute(_spec(seed=3), _options(tmp_path, shared_data))
    b = execute(_spec(seed=3, n_init="2"), _options(tmp_path, shared_data))
    ra, rb = (load_record(Path(o.record_path)) for o in (a, b))
    assert ra.spec.hash != rb.spec.hash
    assert ra.split["hash"] == rb.split["hash"]
    assert len(list((tmp_path / "results" / "splits").iterdir())) == 1


def test_seeds_give_different_splits(tmp_path, shared_data):
    records = [
        load_record(Path(execute(_spec(seed=s), _options(tmp_path, shared_data)).record_path))
        for s in (4, 5)
    ]
    assert records[0].split["hash"] != records[1].split["hash"]
    assert not np.isclose(records[0].metrics["acc"], records[1].metrics["acc"])


def test_a_training_run_records_the_encoder_its_identity_hashed(tmp_path, shared_data, tiny_bert):
    # A training method never embeds through ctx.embed, yet its record names the encoder
    # and the very fingerprint the run id was computed from, plus what it fine-tuned.
    spec = resolve_spec(
        "no-llm",
        DATASET,
        0.5,
        0,
        encoder=str(tiny_bert),
        preset="smoke",
        overrides={"pretrain_epochs": "0", "max_length": "16"},
    )
    outcome = execute(spec, _options(tmp_path, shared_data))
    assert outcome.status == "done", outcome.error
    record = load_record(Path(outcome.record_path))
    encoder = record.encoder
    assert encoder["name"] == str(tiny_bert) and encoder["origin"] == "path"
    assert encoder["fingerprint"] == record.identity["models"]["encoder"]
    (tuned,) = encoder["fine_tuned"]
    assert tuned["path"] == str(tiny_bert.resolve()) and tuned["max_length"] == 16
    assert tuned["weights_sha256"] == record.diagnostics["training"]["backbone"]["weights_sha256"]


def test_one_builder_makes_the_runner_and_conformance_contexts(tmp_path, tiny_bert):
    from gcdbench.encoders.bag_of_words import BagOfWordsEncoder
    from gcdbench.errors import GcdbenchError
    from gcdbench.runner.context import build_context

    spec = RunSpec("no-llm", "tiny", 0.5, 0, encoder=str(tiny_bert))
    ctx = build_context(spec, {}, tmp_path, uses=("encoder",))
    backbone = ctx.load_backbone(pooling="mean", with_mlm_head=False, max_length=8)
    assert backbone.pooling == "mean" and backbone.source["origin"] == "path"
    assert ctx.describe_encoder()["fine_tuned"][0]["fingerprint"] == backbone.fingerprint
    # an encoder object without weights: the same clear error as --encoder bag-of-words
    bare = build_context(
        spec.with_(encoder=None), {}, tmp_path, uses=("encoder",), encoder=BagOfWordsEncoder()
    )
    with pytest.raises(GcdbenchError, match="has no weights"):
        bare.load_backbone(pooling="mean", with_mlm_head=False, max_length=8)
    # a method that declares no encoder gets none
    none = build_context(spec.with_(encoder=None), {}, tmp_path, uses=())
    with pytest.raises(GcdbenchError, match="declares no encoder"):
        none.load_backbone(pooling="mean", with_mlm_head=False, max_length=8)
    assert none.describe_encoder() is None
