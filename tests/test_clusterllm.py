"""ClusterLLM (docs/methods/clusterllm.md): conformance with a tiny trainable encoder, its two
query kinds, the mining, loss and k-selection pieces on constructed data, a CLI run on
BANKING with the oracle, and a few triplet questions through SmolLM2 and the ledger.

The tiny random BERT keeps runs fast; the tests read what the method did (questions asked,
what was used, the k it estimated from exact answers), not how good its clusters are.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench import registry
from gcdbench.api.feedback import Query
from gcdbench.api.prompts import PLAIN
from gcdbench.cli import cli
from gcdbench.feedback.ledger import Ledger
from gcdbench.testing import check_method, check_query_kind
from gcdbench_builtins.clusterllm import (
    ClusterLLM,
    ClusterLLMParams,
    Triplet,
    coarse_clusters,
    fbeta,
    hierarchy_pairs,
    mine_anchors,
    sample_triplets,
    select_k,
    standardise,
    triplet_infonce,
    ward_merges,
)
from gcdbench_builtins.clusterllm_kinds import PAIR, TRIPLET
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch/BLAS thread: the models are tiny and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


# -- conformance and the kinds ------------------------------------------------------------


def test_conformance_with_the_oracle(tiny_bert):  # noqa: F811
    check_method(ClusterLLM, encoder=str(tiny_bert))


def test_registered_with_both_kinds_and_presets():
    assert registry.get("method", "clusterllm") is ClusterLLM
    assert set(ClusterLLM.asks) == {TRIPLET, PAIR} <= set(registry.names("query-kind"))
    paper = ClusterLLM.resolve_params("paper", {})
    assert (paper.triplets, paper.epochs, paper.batch_size, paper.lr) == (1024, 15, 4, 2e-6)
    assert (paper.max_length, paper.pairs_per_step, paper.k_stride) == (512, 3, 1)
    assert ClusterLLM.resolve_params("cpu", {}) == ClusterLLMParams()
    with pytest.raises(Exception, match="k=estimate needs the granularity stage"):
        ClusterLLM.resolve_params(None, {"k": "estimate", "granularity": "false"})


def _render(kind, query) -> str:
    template = kind.template()
    messages = kind.render(query, template, layout="official", answer_mode=PLAIN, order=None)
    return "\n".join(m.content for m in messages)


def test_the_triplet_kind():
    kind = registry.get("query-kind", TRIPLET)
    query = Query(
        TRIPLET,
        {"query": "card lost", "options": ["where is my card", "exchange rate?"], "task": "intent"},
        {"anchor": 0, "options": [1, 2], "part": "test"},
    )
    check_query_kind(kind, query)
    text = _render(kind, query)
    assert "in terms of intent" in text
    # the paper's order: the query, then Choice 1 and Choice 2
    assert text.index("Query: card lost") < text.index("Choice 1: where is my card")
    assert text.index("Choice 1:") < text.index("Choice 2: exchange rate?")
    assert kind.decode(query, "Choice 2").value == 1
    assert kind.decode(query, "I cannot tell").value is None
    with pytest.raises(Exception, match="exactly two"):
        kind.validate(Query(TRIPLET, {"query": "a", "options": ["b", "c", "d"]}))


def test_the_pair_kind_renders_its_demonstrations():
    kind = registry.get("query-kind", PAIR)
    demos = [
        ["my card is lost", "card went missing", "lost card", "lost card"],
        ["rate for euros", "top up failed", "exchange rate", "top up failed"],
    ]
    query = Query(
        PAIR,
        {
            "first": "pin blocked",
            "second": "unblock my pin",
            "task": "intent",
            "demonstrations": demos,
        },
        {"first": 3, "second": 4, "part": "test"},
    )
    check_query_kind(kind, query)
    text = _render(kind, query)
    assert "Yes. Because both intents are lost card." in text
    assert (
        "No. Because Text 1 has intent exchange rate and Text 2 has intent top up failed." in text
    )
    assert text.index("[Example 2]") < text.index("Text 1: pin blocked")
    # decode gives the shown position; the provider maps it to the answer's value
    assert kind.decode(query, "No").value == 1 and kind.decode(query, "Yes.").value == 0
    assert kind.value(0) is True and kind.value(1) is False
    with pytest.raises(Exception, match="demonstration"):
        kind.validate(Query(PAIR, {"first": "a", "second": "b", "demonstrations": [["a", "b"]]}))


# -- mining, loss and k selection on constructed data ---------------------------------------


def test_anchors_lie_between_clusters_and_triplets_offer_their_closest_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    blobs = [c + rng.normal(0, 0.3, size=(30, 2)) for c in centres]
    between = np.array([[5.0, 0.0], [5.0, 0.2], [4.8, -0.1]])  # halfway from blob 0 to 1
    x = np.vstack([*blobs, between])
    labels = np.repeat([0, 1, 2, 0], [30, 30, 30, 3])
    anchors, closest, n_closest = mine_anchors(x, labels, 0.02, 0.033, rng)  # 3 of 93
    assert n_closest == 2 and sorted(anchors.tolist()) == [90, 91, 92]
    triplets = sample_triplets(anchors, closest, labels, 10, rng)
    assert len(triplets) == 10
    for t in triplets:
        assert t.anchor not in t.options
        assert {labels[t.options[0]], labels[t.options[1]]} == {0, 1}  # the two nearest blobs
    keys = {(t.anchor, *t.options) for t in triplets}
    assert len(keys) == len(triplets)


def test_ward_coarse_clustering_follows_the_threshold():
    rng = np.random.default_rng(1)
    x = np.vstack([c + rng.normal(0, 0.1, size=(20, 3)) for c in np.eye(3) * 5])
    s = standardise(x)
    params = ClusterLLMParams(distance_threshold=5.0)
    assert coarse_clusters(s, params, 0).max() + 1 == 3
    # a threshold above every merge still leaves two clusters to offer
    assert coarse_clusters(s, ClusterLLMParams(distance_threshold=1e6), 0).max() + 1 == 2


def test_infonce_matches_the_released_loop_form():
    gen = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(5, 8, generator=gen) for _ in range(3))
    tau = 0.01
    cos = torch.nn.functional.cosine_similarity
    rows, rows_back = [], []
    for i in range(5):
        rows.append(torch.stack([cos(a[i], p[i], 0)] + [cos(a[i], n[j], 0) for j in range(5)]))
        others = [cos(p[i], a[j], 0) for j in range(5) if j != i]
        rows_back.append(torch.stack([cos(p[i], a[i], 0), *others]))
    zero = torch.zeros(5, dtype=torch.long)
    expected = torch.nn.functional.cross_entropy(torch.stack(rows) / tau, zero)
    expected += torch.nn.functional.cross_entropy(torch.stack(rows_back) / tau, zero)
    assert torch.allclose(triplet_infonce(a, p, n, tau), expected, atol=1e-4)


def test_fbeta_is_scikit_learns_with_the_answers_as_reference():
    from sklearn.metrics import fbeta_score

    rng = np.random.default_rng(2)
    truth, pred = rng.random(40) < 0.5, rng.random(40) < 0.3
    assert fbeta(truth, pred, 0.92) == pytest.approx(fbeta_score(truth, pred, beta=0.92))
    assert fbeta(truth, np.zeros(40, bool), 0.92) == 0.0


def test_select_k_reads_the_cut_the_answers_agree_with():
    steps = list(range(2, 12))
    same = [s >= 6 for s in steps]  # merges leaving >= 6 clusters join one category
    best, scores = select_k(steps, same, list(range(2, 13)), 0.92)
    assert best == 6 and scores[6 - 2] == 1.0
    # asked at every other step, the cut is only known to lie in (4, 6]: ties go to the largest
    best, _ = select_k([2, 4, 6, 8, 10], [False, False, True, True, True], list(range(2, 12)), 0.92)
    assert best == 6


@pytest.mark.parametrize("truth_level", [3, 6])
def test_a_constructed_hierarchy_gives_back_its_number_of_groups(truth_level):
    """Three far-apart groups, each of two sub-groups: exact answers at either granularity
    lead to that number of clusters."""
    rng = np.random.default_rng(3)
    centres = [g * 20.0 + sub * 3.0 for g in range(3) for sub in range(2)]
    x = np.concatenate([c + rng.normal(0, 0.2, size=(15, 1)) for c in centres])
    x = np.hstack([x, np.zeros_like(x)])
    sub_of = np.repeat(np.arange(6), 15)
    gold = sub_of // 2 if truth_level == 3 else sub_of
    merges = ward_merges(x)
    n = len(x)
    pairs = hierarchy_pairs(merges, n, list(range(2, 40)), 2, rng)
    assert all(2 <= s < 40 for _, _, s in pairs)
    same = [bool(gold[i] == gold[j]) for i, j, _ in pairs]
    best, _ = select_k([s for _, _, s in pairs], same, list(range(2, 41)), 0.92)
    assert best == truth_level


def test_a_pair_drawn_at_step_s_is_split_exactly_above_s():
    from scipy.cluster.hierarchy import fcluster

    rng = np.random.default_rng(4)
    x = rng.normal(size=(25, 3))
    merges = ward_merges(x)
    for i, j, s in hierarchy_pairs(merges, 25, range(2, 24), 1, rng):
        at_s = fcluster(merges, s, "maxclust")
        above = fcluster(merges, s + 1, "maxclust")
        assert at_s[i] == at_s[j] and above[i] != above[j]


def test_encoder_choice_is_the_nearer_option():
    from gcdbench_builtins.clusterllm import encoder_choice

    f = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    assert encoder_choice(f, Triplet(0, (1, 2))) == 1
    assert encoder_choice(f, Triplet(0, (2, 1))) == 0


# -- through the CLI --------------------------------------------------------------------------


def _run(tmp_path: Path, shared_data: Path, encoder: Path, *args: str) -> dict:
    results = tmp_path / "r"
    argv = ["run", "clusterllm", "-d", "banking", "--known-ratio", "0.25", "--seed", "0"]
    argv += ["--encoder", str(encoder), "--data-dir", str(shared_data)]
    argv += ["--results-dir", str(results), "-q", *args]
    outcome = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    path = sorted(results.rglob("record.json"), key=lambda p: p.stat().st_mtime)[-1]
    return {**json.loads(path.read_text()), "_dir": str(path.parent)}


def test_banking_with_the_oracle_two_iterations_and_the_k_estimate(
    tmp_path,
    shared_data,
    tiny_bert,  # noqa: F811
):
    record = _run(
        tmp_path, shared_data, tiny_bert, "--preset", "smoke", "--llm", "oracle",
        "-p", "iterations=2", "-p", "k=estimate", "-p", "labeled_triplets=4",
    )  # fmt: skip
    diagnostics = record["diagnostics"]
    rounds = diagnostics["iterations"]
    assert len(rounds) == 2 and diagnostics["features"] == "fine-tuned"
    for r in rounds:
        assert r["triplets_asked"] == 12 and r["labeled_triplets"] == 4 and r["steps"] >= 1
        assert 0 <= r["triplets_used"] <= 12
    granularity = diagnostics["granularity"]
    assert granularity["true_k"] == 77 and granularity["pairs_asked"] == len(range(2, 30, 3))
    assert len(granularity["demonstrations"]) == 4  # 2 "Yes", 2 "No" from labeled texts
    yes, no = granularity["demonstrations"][:2], granularity["demonstrations"][2:]
    assert all(a == b for a, b in yes) and all(a != b for a, b in no)
    assert diagnostics["k_source"] == "estimate"
    assert diagnostics["k_used"] == granularity["estimated_k"] == len(set(record_ids(record)))
    quality = diagnostics["feedback_quality"]["kinds"]
    assert quality[TRIPLET]["asked"] == 24 and quality[PAIR]["asked"] == granularity["pairs_asked"]
    # The exact oracle declines a triplet neither of whose options shares the anchor's class
    # (common with random weights); every answer it gives is right and is trained on.
    statuses = quality[TRIPLET]["statuses"]
    assert set(statuses) <= {"ok", "no-correct-option"}
    assert statuses.get("ok", 0) == sum(r["triplets_used"] for r in rounds)
    assert quality[TRIPLET]["feedback_accuracy"] in (None, 1.0)
    assert quality[PAIR]["feedback_accuracy"] == 1.0


def record_ids(record: dict) -> list[int]:
    """The cluster id of every test text, from the run's predictions file."""
    with open(Path(record["_dir"]) / record["predictions_file"], newline="") as handle:
        return [int(row["cluster"]) for row in csv.DictReader(handle)]


def _ledger_rows(path: Path) -> dict[str, int]:
    ledger = Ledger(path)
    try:
        return {row["kind"]: row["answers"] for row in ledger.stats()}
    finally:
        ledger.close()


def test_a_few_triplets_through_smollm2_then_from_the_ledger(tmp_path, shared_data, tiny_bert):  # noqa: F811
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional dependency")
    ledger = tmp_path / "ledger.sqlite"
    args = [
        "--preset", "smoke", "-p", "triplets=4", "-p", "granularity=false",
        "--llm", "llamacpp:smollm2-135m", "--ledger", str(ledger),
        # One thread, one token per batch: on this shared 2-core VM llama.cpp's batched
        # prompt evaluation crashed (SIGSEGV) and spinning threads slowed it to minutes.
        "--llm-option", "n_threads=1", "--llm-option", "n_batch=1",
    ]  # fmt: skip
    first = _run(tmp_path, shared_data, tiny_bert, *args)
    stats = first["feedback"]["stats"]["per_kind"]
    assert set(stats) == {TRIPLET}
    assert stats[TRIPLET]["queries"] == 4 and stats[TRIPLET]["backend_requests"] == 4
    assert sum(stats[TRIPLET]["statuses"].values()) == 4
    assert list(first["feedback"]["templates"]) == [f"{TRIPLET}/clusterllm-v1"]
    assert first["diagnostics"]["iterations"][0]["triplets_asked"] == 4
    assert _ledger_rows(ledger) == {TRIPLET: 4}

    again = _run(tmp_path, shared_data, tiny_bert, *args, "--force")
    stats = again["feedback"]["stats"]["per_kind"][TRIPLET]
    assert stats["backend_requests"] == 0 and stats["ledger_hits"] == 4
    assert again["metrics"] == first["metrics"]
