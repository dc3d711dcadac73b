"""active-gcd (Active GCD, Ma et al. 2024, ported to text): conformance, the assign-to-group
kind and its gold reading, the query strategy, the stable label mapping, and runs through
``gcdbench run`` with the oracle, a noisy oracle and SmolLM2-135M (ledger).

The CLI runs use the smoke preset on hashed bag-of-words features, so each takes seconds;
they check what the record says was asked, used and trained, not how good the clusters are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench import registry
from gcdbench.api.feedback import Query
from gcdbench.api.query_kind import GoldView
from gcdbench.api.task import Gold
from gcdbench.cli import cli
from gcdbench.feedback.ledger import Ledger
from gcdbench.testing import check_method, check_query_kind
from gcdbench_builtins.active_gcd import ActiveGCD, label_mapping, select_queries
from gcdbench_builtins.active_gcd_kinds import ASSIGN

BANKING = ["-d", "banking", "--known-ratio", "0.25", "--seed", "0", "--encoder", "bag-of-words"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One BLAS/OpenMP thread: the models are tiny and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


# -- conformance and the kind ----------------------------------------------------------------


def test_conformance():
    check_method(ActiveGCD)


def _example(**meta: Any) -> Query:
    payload = {
        "text": "my card has not arrived yet",
        "known": ["card arrival", "exchange rate"],
        "groups": [["i lost my card", "my card was stolen"], ["top up failed", "top-up declined"]],
        "task": "intent",
    }
    return Query(ASSIGN, payload, meta)


def test_the_kind_validates_renders_and_is_registered():
    kind = registry.get("query-kind", ASSIGN)
    assert kind.templates() == ["active-gcd-v1"]
    check_query_kind(kind, _example(id=0, option_ids=[[1], [2], [3, 4], [5, 6], []]))
    assert kind.options(_example())[-1] == "none of these groups"
    template = kind.template()
    [_, user] = kind.render(
        _example(), template, layout="cache-friendly", answer_mode="plain", order=None
    )
    lines = user.content.splitlines()
    assert 'Choice 3: a new group like: "i lost my card" / "my card was stolen"' in lines
    assert "Choice 5: none of these groups" in lines
    assert lines[-1] == "Text: my card has not arrived yet"  # the text last: the prefix is shared
    with pytest.raises(Exception, match="5 options but 4 entries"):
        kind.validate(_example(id=0, option_ids=[[1], [2], [3, 4], [5, 6]]))


def _gold(train_y: list[int]) -> GoldView:
    classes = tuple(f"c{i}" for i in range(10))
    return GoldView(
        Gold(
            classes,
            {c: c for c in classes},
            np.array([0, 1]),
            np.asarray(train_y),
            np.zeros(1, dtype=np.int64),
        )
    )


def test_the_oracle_reveals_the_gold_class_in_the_models_label_space():
    kind = registry.get("query-kind", ASSIGN)
    # pool ids:  0  1  2  3  4  5  6  7
    gold = _gold([0, 0, 1, 5, 5, 0, 7, 6])
    # options: known c0 (ids 1), known c1 (id 2), group A (3, 4: c5), group B (5, 6: a tie
    # c0/c7, the first listed wins: c0), none
    option_ids = [[1], [2], [3, 4], [5, 6], []]
    # a known-class text: its class's name only, though group B shows c0 too
    assert kind.correct_options(_example(id=0, option_ids=option_ids), gold) == [0]
    # a novel text whose class a group shows
    assert kind.correct_options(_example(id=4, option_ids=option_ids), gold) == [2]
    # a novel class no option shows: the last option
    assert kind.correct_options(_example(id=7, option_ids=option_ids), gold) == [4]
    # two groups showing one novel class: either is right
    twice = [[1], [2], [3, 4], [4, 3], []]
    assert kind.correct_options(_example(id=3, option_ids=twice), gold) == [2, 3]


# -- the query strategy ----------------------------------------------------------------------


def _probs(preds: list[int], margins: list[float], k: int = 5) -> np.ndarray:
    """Rows with argmax ``preds`` and top-1 − top-2 = ``margins``."""
    rows = np.zeros((len(preds), k))
    for i, (p, m) in enumerate(zip(preds, margins, strict=True)):
        second = (p + 1) % k
        rows[i, p] = 0.5 + m / 2
        rows[i, second] = 0.5 - m / 2
    return rows


def _select(probs: np.ndarray, n: int, **kw: Any) -> list[int]:
    args = {
        "strategy": "novel-margin-adaptive",
        "round_index": 2,
        "adaptive_round": 2,
        "novel_heads": [3, 4],
        "min_quota": 0,
        "rng": np.random.default_rng(0),
    }
    args.update(kw)
    return select_queries(probs, n, **args).picked.tolist()


def test_adaptive_novel_picks_only_novel_predictions_and_switches_confidence():
    #            0    1    2    3    4    5    6    7
    preds = [0, 3, 3, 4, 1, 4, 3, 4]
    margin = [0.0, 0.9, 0.1, 0.5, 0.0, 0.2, 0.6, 0.8]
    probs = _probs(preds, margin)
    # round 1 < adaptive_round: the most confident first; quota 4 // 2 = 2 per novel head
    assert _select(probs, 4, round_index=1) == [1, 7, 6, 3]
    # from round 2 on: the least confident; texts 0 and 4 (known heads) are never picked
    assert _select(probs, 4, round_index=2) == [2, 5, 3, 6]
    assert _select(probs, 4, strategy="novel-margin", round_index=1) == [2, 5, 3, 6]
    # the plain margin strategy takes the known-head texts too
    assert set(_select(probs, 2, strategy="margin")) == {0, 4}


def test_per_cluster_quota_and_shortfall_fill():
    # head 3 holds four texts, head 4 one: quota 4 // 2 = 2 takes two of head 3 and head 4's
    # only one, then the next-ranked novel text fills the fourth place
    preds = [3, 3, 3, 3, 4, 0]
    margin = [0.1, 0.2, 0.3, 0.4, 0.9, 0.0]
    sel = select_queries(
        _probs(preds, margin),
        4,
        strategy="novel-margin-adaptive",
        round_index=3,
        adaptive_round=2,
        novel_heads=[3, 4],
        min_quota=0,
        rng=np.random.default_rng(0),
    )
    assert sel.quota == 2 and sel.filled_novel == 1 and sel.filled_other == 0
    assert sel.picked.tolist() == [0, 1, 4, 2]
    # more queries than novel-predicted texts: the rest come from the known heads
    assert _select(_probs(preds, margin), 6)[-1] == 5
    # Q < |C_new|: the code's floor gives quota 0 (pure ranking); min_quota 1 keeps one per
    # predicted novel cluster before the ranking
    many = _probs([3, 3, 3, 4], [0.1, 0.2, 0.3, 0.9])
    assert _select(many, 2, novel_heads=[3, 4, 2]) == [0, 1]
    assert _select(many, 2, novel_heads=[3, 4, 2], min_quota=1) == [0, 3]


# -- the stable label mapping ----------------------------------------------------------------


def test_label_mapping_follows_the_heads_the_model_uses():
    # labels 0, 1 (known) and 7 (a novel label): the model puts label 7's texts on head 4
    preds = np.array([0, 0, 1, 1, 4, 4, 2])
    labels = np.array([0, 0, 1, 1, 7, 7, 7])
    assert label_mapping(preds, labels, 5) == {0: 0, 1: 1, 7: 4}
    # a permuted head space maps back one to one
    perm = np.array([3, 0, 4, 1, 2])
    y = np.array([0, 1, 2, 3, 4, 0, 1])
    assert label_mapping(perm[y], y, 5) == {c: int(perm[c]) for c in range(5)}
    # more labels than heads: the surplus stays unmatched
    assert len(label_mapping(np.array([0, 0, 1]), np.array([5, 6, 7]), 2)) == 2
    assert label_mapping(np.array([], dtype=int), np.array([], dtype=int), 3) == {}


# -- runs through the command line -----------------------------------------------------------


def _run(
    tmp_path: Path, shared_data: Path, *args: str, data: list[str] = BANKING
) -> dict[str, Any]:
    results = tmp_path / "r"
    argv = ["run", "active-gcd", "--preset", "smoke", *data, "--results-dir", str(results)]
    argv += ["--data-dir", str(shared_data), "-q", *args]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = sorted(results.rglob("record.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(records[-1].read_text())


def test_oracle_run_and_the_active_ablation(tmp_path, shared_data):
    record = _run(tmp_path, shared_data, "--llm", "oracle")
    diag = record["diagnostics"]
    assert diag["queries_asked"] == 2 * 6 and diag["queries_wasted"] == 0
    assert diag["queries_used"] + diag["none_answers"] == 12
    [r1, r2] = diag["rounds"]
    assert r1["confident_first"] and not r2["confident_first"]
    assert r1["predicted_novel_ratio"] == 1.0 and r1["losses"]["simgcd"]["cluster"] > 0
    assert diag["queries_used"] == 0 or r2["losses"]["al"]["cls_al"] > 0
    quality = diag["feedback_quality"]["kinds"][ASSIGN]
    assert quality["asked"] == 12 and quality["feedback_accuracy"] == 1.0
    assert quality["encoder_accuracy"] is not None
    names = {c["name"] for c in record["clusters"]}
    assert len(names) == 19  # the known heads carry their class names

    off = _run(tmp_path, shared_data, "--llm", "oracle", "--ablate", "active")
    assert off["diagnostics"]["queries_asked"] == 0
    assert off["diagnostics"].get("feedback_quality", {}).get("kinds", {}) == {}
    assert off["diagnostics"]["rounds"][0]["losses"]["al"] == {}


def test_noisy_oracle_answers_are_used_and_scored(tmp_path, shared_data):
    record = _run(tmp_path, shared_data, "--llm", "noisy-oracle:0.5")
    diag = record["diagnostics"]
    quality = diag["feedback_quality"]["kinds"][ASSIGN]
    assert quality["asked"] == 12 and 0.0 < quality["feedback_accuracy"] < 1.0
    assert diag["queries_wasted"] == 0
    assert diag["queries_used"] + diag["none_answers"] == 12


def _ledger_rows(path: Path) -> dict[str, int]:
    ledger = Ledger(path)
    try:
        return {row["kind"]: row["answers"] for row in ledger.stats()}
    finally:
        ledger.close()


def test_smollm2_answers_through_the_ledger(tmp_path, shared_data):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional dependency")
    ledger = tmp_path / "ledger.sqlite"
    # massive_scenario: 18 classes, so the option list stays short for the tiny model
    data = ["-d", "massive_scenario", "--known-ratio", "0.5", "--encoder", "bag-of-words"]
    args = ["-p", "rounds=1", "-p", "queries=3"]
    llm = ["--llm", "llamacpp:smollm2-135m", "--ledger", str(ledger)]
    record = _run(tmp_path, shared_data, *args, *llm, data=data)
    stats = record["feedback"]["stats"]["per_kind"][ASSIGN]
    assert stats["queries"] == 3 and stats["backend_requests"] == 3
    assert list(record["feedback"]["templates"]) == [f"{ASSIGN}/active-gcd-v1"]
    diag = record["diagnostics"]
    assert diag["queries_used"] + diag["none_answers"] + diag["queries_wasted"] == 3
    assert _ledger_rows(ledger) == {ASSIGN: 3}

    again = _run(tmp_path, shared_data, *args, *llm, "--force", data=data)
    stats = again["feedback"]["stats"]["per_kind"][ASSIGN]
    assert stats["backend_requests"] == 0 and stats["ledger_hits"] == 3
