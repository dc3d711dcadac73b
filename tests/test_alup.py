"""ALUP (docs/methods/alup.md): conformance, the ``alup-match`` kind and its gold rule, the
round helpers, runs with the oracle and the noisy oracle on a BANKING slice (the first six
classes, registered by this module), the components, the leaky official variant, and one
round through SmolLM2-135M that a re-run replays from the ledger.

The tiny random BERT stands in for the encoder: the tests read what the rounds asked,
labeled and propagated, never how good the clusters are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench import hookimpl, registry
from gcdbench.api.dataset import DatasetDefinition
from gcdbench.api.feedback import Query
from gcdbench.api.query_kind import GoldView
from gcdbench.api.task import Gold
from gcdbench.cli import cli
from gcdbench.data.readers import read_gcd_tsv
from gcdbench.testing import check_method, check_query_kind, tiny_task
from gcdbench_builtins.alup import (
    Alup,
    AlupParams,
    RoundClusters,
    l2_knn,
    pick_queries,
    prototype_classes,
    representatives,
    worked_examples,
)
from gcdbench_builtins.alup_kinds import MATCH, AlupMatch
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)

SLICE = "alup-banking-slice6"
PER_CLASS = {"train": 24, "dev": 4, "test": 8}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch/OpenMP thread: the models are tiny and the machine's 2 cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


class _SlicePlugin:
    @hookimpl
    def register_datasets(self, register):
        register(DatasetDefinition(SLICE, "first 6 BANKING classes (ALUP tests)", "gcd-tsv", (), 6))


@pytest.fixture(scope="module")
def slice_root(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("alup-slice")
    source = shared_data / "banking"
    _, labels = read_gcd_tsv(source / "train.tsv")
    keep = set(sorted(set(labels))[:6])
    (root / SLICE).mkdir()
    for part, per_class in PER_CLASS.items():
        texts, labels = read_gcd_tsv(source / f"{part}.tsv")
        taken: dict[str, int] = {}
        rows = []
        for text, label in zip(texts, labels, strict=True):
            if label in keep and taken.get(label, 0) < per_class:
                taken[label] = taken.get(label, 0) + 1
                rows.append((text, label))
        with open(root / SLICE / f"{part}.tsv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    registry.register_plugin(_SlicePlugin(), "test-alup-slice")
    yield root
    registry.unregister_plugin("test-alup-slice")


@pytest.fixture(scope="module")
def run(slice_root, tiny_bert, tmp_path_factory) -> Callable[..., dict[str, Any]]:  # noqa: F811
    """``run("--llm oracle --ablate propagation")`` -> the record; each distinct run once."""
    done: dict[tuple[str, ...], dict[str, Any]] = {}
    base = tmp_path_factory.mktemp("alup-results")

    def go(args: str, *extra: str) -> dict[str, Any]:
        key = (args, *extra)
        if key not in done:
            results = base / str(len(done))
            argv = ["run", "alup", *args.split(), *extra, "--dataset", SLICE]
            argv += ["--known-ratio", "0.5", "--seed", "0", "--preset", "smoke"]
            argv += ["--encoder", str(tiny_bert), "--data-dir", str(slice_root)]
            argv += ["--results-dir", str(results), "-q"]
            outcome = CliRunner().invoke(cli, argv, catch_exceptions=False)
            assert outcome.exit_code == 0, outcome.output
            (path,) = results.rglob("record.json")
            done[key] = json.loads(path.read_text())
        return done[key]

    return go


def _rounds(record: dict[str, Any]) -> list[dict[str, Any]]:
    return record["diagnostics"]["stage2"]["rounds"]


def _quality(record: dict[str, Any]) -> dict[str, Any]:
    return record["diagnostics"]["feedback_quality"]["kinds"][MATCH]


# -- the kind ---------------------------------------------------------------------------------


def _gold(train_y: list[int]) -> GoldView:
    y = np.asarray(train_y)
    classes = tuple(f"c{i}" for i in range(int(y.max()) + 1))
    return GoldView(Gold(classes, {c: c for c in classes}, np.arange(1), y, y))


def test_kind_checks_render_and_gold_rule():
    kind = AlupMatch()
    example = Query(
        MATCH,
        {"query": "card lost", "options": ["where is my card", "fee?"], "task": "intent"},
        {"anchor": 0, "candidates": [1, 2]},
    )
    check_query_kind(kind, example)
    messages = kind.render(
        example, kind.template(), layout="cache-friendly", answer_mode="plain", order=[2, 0, 1]
    )
    user = messages[-1].content
    assert "Choice 1: none of these" in user and "Choice 3: fee?" in user
    assert user.rstrip().endswith("Query: card lost") and "$" not in user
    gold = _gold([0, 0, 1, 2])
    assert kind.correct_options(example, gold) == [0]
    miss = Query(MATCH, {"query": "x", "options": ["a", "b"]}, {"anchor": 0, "candidates": [2, 3]})
    assert kind.correct_options(miss, gold) == [2]  # nothing matches: "none" only
    assert kind.judge(miss, 2, gold) and not kind.judge(miss, 0, gold)
    with_examples = Query(
        MATCH, {"query": "x", "options": ["a"], "examples": ["Query: q\nAnswer: Choice 1"]}
    )
    rendered = kind.render(
        with_examples, kind.template(), layout="official", answer_mode="plain", order=None
    )
    assert "Worked examples:\nQuery: q" in rendered[-1].content


# -- the round helpers --------------------------------------------------------------------------


def test_l2_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    index, dist = l2_knn(x, 4, chunk=7)
    full = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    assert np.array_equal(index, np.argsort(full, axis=1, kind="stable")[:, :4])
    assert np.allclose(dist, np.sort(full, axis=1)[:, :4])


def test_queries_representatives_and_class_map():
    assignments = np.array([0, 0, 1, 1, 1, 2])
    uncertainty = np.array([0.1, 0.5, 0.9, 0.2, 0.3, 0.4])
    params = AlupParams()
    assert pick_queries(assignments, uncertainty, params) == [1, 2, 5]
    capped = AlupParams(queries_per_round=2)
    assert pick_queries(assignments, uncertainty, capped) == [1, 2]  # 0.5 and 0.9 kept
    features = np.array([[0.0], [1.0], [5.0], [6.0], [7.0], [20.0]])
    centers = np.array([[0.4], [6.1], [20.0]])
    clusters = RoundClusters(assignments, centers, np.arange(3), np.eye(3)[assignments])
    assert representatives(features, clusters).tolist() == [0, 3, 5]
    task, _, _ = tiny_task(0)
    d = 4
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(len(task.train), d))
    centers = rng.normal(size=(task.num_classes, d))
    classes = prototype_classes(pool, centers, task, None)
    assert sorted(classes.tolist()) == list(range(task.num_classes))  # a bijection
    # a previous round's novel ids are kept where they are free
    previous = classes.copy()
    again = prototype_classes(pool, centers, task, previous)
    assert np.array_equal(again, classes)


def test_worked_examples_come_from_labeled_texts():
    task, _, _ = tiny_task(0)
    params = AlupParams(worked_examples=3, example_candidates=2)
    examples = worked_examples(task, params, np.random.default_rng(0))
    assert len(examples) == 3
    labeled = set(task.train.texts[: task.num_labeled])
    for text in examples:
        lines = text.splitlines()
        assert lines[0].removeprefix("Query: ") in labeled
        assert lines[-2] == "Choice 3: none of these" and lines[-1].startswith("Answer: Choice")
    assert [t.splitlines()[-1] for t in examples[1:]] == ["Answer: Choice 3"] * 2
    assert worked_examples(task, AlupParams(), np.random.default_rng(0)) == []


# -- runs ---------------------------------------------------------------------------------------


def test_conformance_with_the_oracle(tiny_bert):  # noqa: F811
    check_method(Alup, encoder=str(tiny_bert))


def test_oracle_run_labels_propagates_and_is_scored(run):
    record = run("--llm oracle")
    rounds = _rounds(record)
    assert len(rounds) == 2  # smoke: 2 stage-2 epochs, an LLM round before each
    for r in rounds:
        assert r["asked"] > 0 and r["statuses"] == {"ok": r["asked"]}
        assert r["answers"].get("labeled", 0) + r["answers"].get("none", 0) == r["asked"]
    assert rounds[0]["answers"]["propagated"] > 0
    assert rounds[1]["subset"] > rounds[0]["subset"]  # the labeled subset grows
    quality = _quality(record)
    assert quality["asked"] == sum(r["asked"] for r in rounds)
    assert quality["feedback_accuracy"] == 1.0
    assert record["feedback"]["stats"]["per_kind"][MATCH]["queries"] == quality["asked"]
    cuts = record["diagnostics"]["cuts"]
    assert any("stage-2 epochs" in c for c in cuts) and record["diagnostics"]["departures"]
    assert "leaks_labels" not in record["provenance"]


def test_noisy_oracle_runs_and_wrong_answers_are_scored_wrong(run):
    noisy = run("--llm noisy-oracle:0.8")
    assert _quality(noisy)["asked"] == sum(r["asked"] for r in _rounds(noisy))
    wrong = run("--llm noisy-oracle:0.0")
    assert _quality(wrong)["feedback_accuracy"] == 0.0


def test_components_switch_what_they_name(run):
    full = run("--llm oracle")
    alone = run("--llm oracle --ablate propagation")
    assert all("propagated" not in r["answers"] for r in _rounds(alone))
    assert _rounds(alone)[0]["subset"] < _rounds(full)[0]["subset"]
    no_llm = run("--llm oracle --ablate llm")
    assert no_llm["diagnostics"]["stage2"] == {"skipped": "ablated"} and not no_llm["feedback"]


def test_official_variant_leaks_and_says_so(run):
    record = run("--llm oracle --variant official")
    assert record["provenance"]["leaks_labels"]
    assert not any("prototypes" in d for d in record["diagnostics"]["departures"])
    assert _rounds(record)[0]["asked"] > 0


def test_a_local_llm_round_then_the_ledger_replays_it(run, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional dependency")
    ledger = str(tmp_path / "ledger.sqlite")
    # One thread: llama.cpp's spinning threads are slow on a shared 2-core machine.
    # One short question (no worked example, two candidates): on a loaded 2-core machine
    # loading the model and answering take tens of seconds even for this tiny model.
    args = "--llm llamacpp:smollm2-135m --llm-option n_threads=1 -p llm_rounds=1"
    args += " -p queries_per_round=1 -p worked_examples=0 -p max_candidates=2"
    first = run(args, "--ledger", ledger)
    stats = first["feedback"]["stats"]["per_kind"][MATCH]
    assert stats["queries"] == 1 and stats["backend_requests"] == 1 and stats["ledger_hits"] == 0
    assert sum(stats["statuses"].values()) == 1
    assert list(first["feedback"]["templates"]) == [f"{MATCH}/alup-v1"]
    again = run(f"{args} --llm-offline", "--ledger", ledger)
    replay = again["feedback"]["stats"]["per_kind"][MATCH]
    assert replay["backend_requests"] == 0 and replay["ledger_hits"] == 1
    assert again["metrics"] == first["metrics"]
