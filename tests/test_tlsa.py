"""TLSA (issue 14): its three query kinds (oracle, judge, decoding, templates), the batch
sampler and margins, conformance, smoke runs with the oracle and the noisy oracle, and one
run through SmolLM2 (prompts render, replies parse or fail cleanly, answers in the ledger).

Runs use the smoke preset, the tiny random BERT and a slice of BANKING (its first 6 classes),
so the tests read what the record says was asked and answered, not how good the clusters are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench import hookimpl, registry
from gcdbench.api.dataset import DatasetDefinition
from gcdbench.api.feedback import PARSE_FAILURE, Query
from gcdbench.api.query_kind import GoldView
from gcdbench.api.task import Gold
from gcdbench.cli import cli
from gcdbench.data.readers import read_gcd_tsv
from gcdbench.feedback.ledger import Ledger
from gcdbench.testing import check_method, check_query_kind
from gcdbench_builtins.tlsa import (
    Tlsa,
    components,
    confidence_margins,
    cuts,
    unique_label_batches,
)
from gcdbench_builtins.tlsa_kinds import NAME, RENAME, VERIFY, snake_name
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)

SLICE, CLASSES = "banking-tlsa6", 6
PER_CLASS = {"train": 24, "dev": 4, "test": 8}
KINDS = (NAME, RENAME, VERIFY)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a busy 2-core machine: one thread is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


# -- query kinds ------------------------------------------------------------------------------


def _gold() -> GoldView:
    # pool ids 0-3: class 0, 4-7: class 1, 8-9: class 2
    train_y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    names = {"card_arrival": "card_arrival", "top_up": "top_up", "lost_card": "lost_card"}
    gold = Gold(
        ("card_arrival", "top_up", "lost_card"), names, np.array([0]), train_y, np.array([0])
    )
    return GoldView(gold)


def _kind(name: str) -> Any:
    return registry.get("query-kind", name)


EXAMPLES = {
    NAME: Query(NAME, {"texts": ["a", "b"], "known_names": ["x"], "task": "intent"}, {"ids": [0]}),
    RENAME: Query(
        RENAME,
        {"groups": [["a"], ["b"]], "known_names": ["x"], "local_examples": [["t", "x"]]},
        {"group_ids": [[0], [4]]},
    ),
    VERIFY: Query(
        VERIFY,
        {"label": "top up", "texts": ["a", "b", "c"], "other_labels": ["card arrival"]},
        {"ids": [4, 0, 5], "members": [4, 5, 6, 0]},
    ),
}


@pytest.mark.parametrize("name", KINDS)
def test_each_kind_passes_the_kind_checks_and_renders(name):
    kind = _kind(name)
    check_query_kind(kind, EXAMPLES[name])
    messages = kind.render(
        EXAMPLES[name], kind.template(), layout="cache-friendly", answer_mode="plain", order=None
    )
    user = messages[-1].content
    assert "$" not in user and "intent" in user
    schema = kind.json_schema(EXAMPLES[name])
    assert schema["type"] == "object"


def test_naming_oracle_decode_and_judge():
    kind, gold = _kind(NAME), _gold()
    query = Query(NAME, {"texts": ["a"] * 5}, {"ids": [4, 5, 6, 0, 8]})
    assert kind.oracle_answer(query, gold).value == "top_up"
    assert kind.decode(query, '{"label": "Top Up Failed"}').value == "top_up_failed"
    assert kind.decode(query, "label: card delivery status").value == "card_delivery_status"
    assert kind.decode(query, '{"label": "<label>"}').status == PARSE_FAILURE
    assert kind.decode(query, "").status == PARSE_FAILURE
    assert kind.judge(query, "top up", gold) is True  # the sample's majority class
    assert kind.judge(query, "card_arrival", gold) is False  # another gold class
    assert kind.judge(query, "topping_up_money", gold) is None  # cannot say from gold


def test_rename_needs_exactly_g_distinct_names():
    kind, gold = _kind(RENAME), _gold()
    query = EXAMPLES[RENAME]
    assert kind.decode(query, '{"labels": ["a b", "c"]}').value == ["a_b", "c"]
    for bad in ('{"labels": ["a"]}', '{"labels": ["a", "A"]}', '{"labels": ["a","b","c"]}'):
        assert kind.decode(query, bad).status == PARSE_FAILURE
    assert kind.oracle_answer(query, gold).value == ["card_arrival", "top_up"]
    assert kind.judge(query, ["card_arrival", "top_up"], gold) is True
    assert kind.judge(query, ["top_up", "x"], gold) is False
    assert kind.judge(query, ["card_arrival", "x"], gold) is None


def test_verification_gold_is_the_members_majority_and_judged_by_agreement():
    kind, gold = _kind(VERIFY), _gold()
    query = EXAMPLES[VERIFY]  # members' majority: class 1; shown 4 (1), 0 (0), 5 (1)
    assert kind.oracle_answer(query, gold).value == [0, 2]
    assert kind.decode(query, '{"selected_indices": [3, 1]}').value == [0, 2]
    assert kind.decode(query, '{"selected_indices": []}').value == []
    assert kind.decode(query, '{"selected_indices": [4]}').status == PARSE_FAILURE
    assert kind.decode(query, "the first two").status == PARSE_FAILURE
    assert kind.judge(query, [0, 2], gold) is True
    assert kind.judge(query, [0], gold) is False  # 2 of 3 agree, under 0.8


def test_snake_names():
    assert snake_name("  Card-Arrival  ") == "card_arrival"
    assert snake_name("label") is None
    assert snake_name("one two three four five six seven eight nine") is None


# -- pieces -----------------------------------------------------------------------------------


def test_batches_hold_one_pair_per_label_and_cover_every_pair():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 10 + [1] * 3 + [2] * 3 + [3])
    batches = unique_label_batches(labels, 3, rng)
    assert all(len(set(labels[b].tolist())) == len(b) for b in batches)
    assert set(np.concatenate(batches).tolist()) == set(range(len(labels)))


def test_margins_and_components():
    centers = np.array([[0.0, 0.0], [2.0, 0.0]])
    feats = np.array([[0.0, 0.0], [0.9, 0.0]])
    conf = confidence_margins(feats, np.array([0, 0]), centers)
    assert conf[0] == pytest.approx(1.0) and conf[1] == pytest.approx(0.1)
    sim = np.zeros((4, 4), dtype=bool)
    sim[0, 2] = sim[2, 0] = True
    assert components(sim) == [[0, 2]]


def test_the_cpu_preset_says_what_it_cuts():
    cpu = Tlsa.resolve_params("cpu", {})
    assert any(c == "phase-2 epochs: 3 (paper 40)" for c in cuts(cpu))
    assert cuts(Tlsa.resolve_params("paper", {})) == []


def test_conformance(tiny_bert):  # noqa: F811
    check_method(Tlsa, encoder=str(tiny_bert))


# -- runs -------------------------------------------------------------------------------------


class _SlicePlugin:
    @hookimpl
    def register_datasets(self, register):
        register(DatasetDefinition(SLICE, "first 6 BANKING classes", "gcd-tsv", (), CLASSES))


@pytest.fixture(scope="module")
def data_root(shared_data, tmp_path_factory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("tlsa-slice")
    _, labels = read_gcd_tsv(shared_data / "banking" / "train.tsv")
    keep = set(sorted(set(labels))[:CLASSES])
    (root / SLICE).mkdir()
    for part, per_class in PER_CLASS.items():
        texts, labels = read_gcd_tsv(shared_data / "banking" / f"{part}.tsv")
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
    registry.register_plugin(_SlicePlugin(), "test-tlsa-slice")
    yield root
    registry.unregister_plugin("test-tlsa-slice")


def _run(root: Path, bert: Path, results: Path, *extra: str) -> dict[str, Any]:
    args = ["run", "tlsa", "--dataset", SLICE, "--known-ratio", "0.5", "--seed", "0"]
    args += ["--preset", "smoke", "--encoder", str(bert), "--data-dir", str(root)]
    args += ["--results-dir", str(results), "-q", *extra]
    outcome = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    (path,) = results.rglob("record.json")
    return json.loads(path.read_text())


def test_smoke_with_the_oracle_asks_every_kind_and_scores_it(
    data_root,
    tiny_bert,  # noqa: F811
    tmp_path,
):
    record = _run(data_root, tiny_bert, tmp_path / "r", "--llm", "oracle")
    per_kind = record["feedback"]["stats"]["per_kind"]
    assert per_kind[NAME]["queries"] == 3  # the 3 novel clusters, named at epoch 1 only
    assert per_kind[VERIFY]["queries"] == 2 * CLASSES  # every cluster, both epochs
    diag = record["diagnostics"]
    assert sum(diag["questions"].values()) <= 40  # the smoke budget
    quality = diag["feedback_quality"]["kinds"]
    assert quality[VERIFY]["feedback_accuracy"] == 1.0
    assert quality[NAME]["feedback_accuracy"] == 1.0
    assert [e["epoch"] for e in diag["epochs"]] == [1, 2] and diag["warmup"]
    assert diag["cuts"] and diag["departures"]
    # The oracle names novel clusters by their gold class: names are real class names.
    _, labels = read_gcd_tsv(data_root / SLICE / "train.tsv")
    assert set(diag["novel_names"]) & set(labels)


def test_smoke_with_the_noisy_oracle_and_without_the_llm(
    data_root,
    tiny_bert,  # noqa: F811
    tmp_path,
):
    noisy = _run(data_root, tiny_bert, tmp_path / "n", "--llm", "noisy-oracle:0.8")
    assert noisy["metrics"]["acc"] > 0
    free = _run(data_root, tiny_bert, tmp_path / "f", "--llm", "oracle", "--ablate", "all-llm")
    assert not free["diagnostics"]["questions"][VERIFY]
    assert free["diagnostics"]["epochs"][0]["verified_pairs"] > 0  # sampled texts kept


def test_smollm2_prompts_render_replies_parse_and_reach_the_ledger(
    data_root,
    tiny_bert,  # noqa: F811
    tmp_path,
):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional dependency")
    ledger = tmp_path / "ledger.sqlite"
    llm = ["--llm", "llamacpp:smollm2-135m", "--ledger", str(ledger)]
    # One epoch, no renaming, 5 questions: 3 namings, then the budget leaves 2 verifications.
    few = ["-p", "epochs=1", "-p", "refine_start=2", "-p", "max_questions=5"]
    record = _run(data_root, tiny_bert, tmp_path / "s", *llm, *few)
    per_kind = record["feedback"]["stats"]["per_kind"]
    assert per_kind[NAME]["queries"] == 3 and per_kind[VERIFY]["queries"] == 2
    assert record["diagnostics"]["not_asked_budget"] == CLASSES - 2
    quality = record["diagnostics"]["feedback_quality"]["kinds"]
    for kind in (NAME, VERIFY):
        assert set(quality[kind]["statuses"]) <= {"ok", PARSE_FAILURE}
    store = Ledger(ledger)
    try:
        rows: dict[str, int] = {}
        for row in store.stats():  # one row per (kind, model, status)
            rows[row["kind"]] = rows.get(row["kind"], 0) + row["answers"]
    finally:
        store.close()
    assert rows == {NAME: 3, VERIFY: 2}
