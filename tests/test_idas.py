"""idas (De Raedt et al., NLP4ConvAI 2023, arXiv 2305.19783; docs/methods/idas.md):
conformance, the ``summarize-intent`` kind, the prototype-bootstrapped growing memory of
demonstrations and the smoothing sweep on the tiny task, the oracle upper bound against the
method with its LLM part ablated on BANKING, and a small run through SmolLM2-135M and the
ledger. Helpers and the one-thread rule are shared with tests/test_keyphrase.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from threadpoolctl import threadpool_limits

from gcdbench.api.feedback import OK, PARSE_FAILURE, Query
from gcdbench.data.readers import read_gcd_tsv
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.prompts import render
from gcdbench.testing import check_method, check_query_kind
from gcdbench_builtins.idas import Idas
from gcdbench_builtins.text_expansion_kinds import SUMMARIZE_INTENT
from tests.test_keyphrase import (
    BANKING,
    BANKING_TEST_TEXTS,
    SMALL,
    cli_record,
    ledger_answers,
    llama_cpp_decodes,
    tiny_run,
)

KIND = SUMMARIZE_INTENT.name


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with threadpool_limits(limits=1):
        yield


def test_conformance_with_the_oracle():
    check_method(Idas)


def test_the_kind_checks_renders_and_decodes():
    demos = [["my card has not arrived", "card delivery status"]]
    with_demos = Query(
        KIND,
        {"text": "where is my card", "task": "intent", "demonstrations": demos},
        {"id": 0, "part": "test"},
    )
    zero_shot = Query(KIND, {"text": "where is my card", "task": "intent"}, {"id": 0})
    for query in (with_demos, zero_shot):
        check_query_kind(SUMMARIZE_INTENT, query)
    shown = render(with_demos).messages[-1].content
    bare = render(zero_shot).messages[-1].content
    # prototypes are asked to summarise; the rest to label like their labelled neighbours
    assert "reuse one of their labels" in shown and "reuse" not in bare
    assert "Label: card delivery status" in shown
    assert shown.rstrip().endswith("Text: where is my card\nLabel:")

    def decode(text: str) -> Any:
        parsed = SUMMARIZE_INTENT.decode(zero_shot, text)
        return parsed.value if parsed.status == OK else parsed.status

    assert decode("Card delivery status") == "Card delivery status"
    assert decode('Label: "lost card".\nBecause the user lost it.') == "lost card"
    assert decode('{"label": "exchange rate"}') == "exchange rate"
    assert decode("") == PARSE_FAILURE
    assert decode(" ".join(["word"] * 20)) == PARSE_FAILURE  # not a label: the format ignored


def test_prototypes_zero_shot_then_a_growing_memory(tmp_path):
    output, task = tiny_run(Idas, tmp_path)
    first, rest = output.feedback_log.asked
    assert (first.round, rest.round) == (0, 1)
    k = task.num_classes
    prototypes = [q.meta["id"] for q in first.queries]
    assert len(prototypes) == len(set(prototypes)) == k  # one per K-means cluster
    assert all("demonstrations" not in q.payload for q in first.queries)
    # the smoke preset labels 16 texts in all: the K prototypes, then 16 - K others
    assert len(rest.queries) == 16 - k
    texts = task.test.texts
    prototype_texts = {texts[i] for i in prototypes}
    seen: set[str] = set(prototype_texts)
    for query in rest.queries:
        demos = query.payload["demonstrations"]
        assert len(demos) == 2  # smoke: demos=2
        assert {t for t, _ in demos} <= seen  # drawn only from texts labelled before it
        seen.add(query.payload["text"])
    # later questions draw on labelled non-prototypes too: the memory grows
    assert any(
        t not in prototype_texts for q in rest.queries for t, _ in q.payload["demonstrations"]
    )
    d = output.diagnostics
    assert d["questions"] == 16 and d["labelled_by_llm"] + d["fallback_texts"] == len(texts)
    assert d["smoothing"]["neighbours"] in (3, 6)
    assert set(d["smoothing"]["silhouette"]) == {"3", "6"}


def test_one_wave_draws_every_demonstration_from_the_prototypes(tmp_path):
    output, _ = tiny_run(Idas, tmp_path, wave_size=100)
    first, rest = output.feedback_log.asked
    prototype_texts = {q.payload["text"] for q in first.queries}
    assert all(t in prototype_texts for q in rest.queries for t, _ in q.payload["demonstrations"])


def test_known_class_demonstrations_are_an_option(tmp_path):
    output, task = tiny_run(Idas, tmp_path, known_demos=True)
    first, _ = output.feedback_log.asked
    known = {name.replace("_", " ") for name in task.known_class_names}
    labeled = set(task.train.texts[: task.num_labeled])
    assert output.diagnostics["known_demonstrations"] == task.num_known
    for query in first.queries:  # prototypes now see the nearest known-class exemplars
        demos = query.payload["demonstrations"]
        assert demos and all(t in labeled and lab in known for t, lab in demos)


def test_ablations_and_parameter_rules(tmp_path):
    plain, task = tiny_run(Idas, tmp_path / "p", ablations=("llm", "smoothing"))
    assert plain.feedback_log.asked == [] and plain.diagnostics["smoothing"] is None
    assert plain.diagnostics["fallback_texts"] == len(task.test)
    with pytest.raises(GcdbenchError, match="smooth_min"):
        Idas.resolve_params(None, {"smooth_min": "50"})


def test_oracle_labels_beat_plain_kmeans_on_banking(tmp_path, shared_data):
    fast = ["--preset", "smoke", "--llm", "oracle", "-p", "wave_size=512"]
    oracle = cli_record(
        tmp_path / "oracle", shared_data, "idas", *BANKING, *fast, "-p", "max_texts=none"
    )
    plain = cli_record(tmp_path / "plain", shared_data, "idas", *BANKING, *fast, "--ablate", "llm")
    d = oracle["diagnostics"]
    assert (d["labelled_by_llm"], d["fallback_texts"], d["prototypes"]) == (
        BANKING_TEST_TEXTS,
        0,
        77,
    )
    assert oracle["feedback"]["stats"]["per_kind"][KIND]["queries"] == d["questions"]
    assert plain["diagnostics"]["questions"] == 0 == plain["diagnostics"]["labelled_by_llm"]
    # Both runs smooth; only the labels differ. Gold names as labels must lift it widely.
    for metric in ("acc", "ari", "nmi"):
        assert oracle["metrics"][metric] > plain["metrics"][metric] + 20, metric
    # clusters are named by their most common label: here, gold class names
    _, labels = read_gcd_tsv(shared_data / "banking" / "test.tsv")
    named = {c["name"] for c in oracle["clusters"]}
    assert len(named) >= 60 and named <= {label.replace("_", " ") for label in labels}


def test_smollm2_replies_parse_and_a_rerun_comes_from_the_ledger(tmp_path, shared_data):
    why = llama_cpp_decodes()
    if why:
        pytest.skip(why)
    ledger = tmp_path / "ledger.sqlite"
    llm = ["--llm", "llamacpp:smollm2-135m", "--ledger", str(ledger)]
    # massive_scenario has 18 classes: 18 prototypes, then 4 texts with demonstrations
    args = [*SMALL, "--preset", "smoke", "-p", "max_texts=22", *llm]
    record = cli_record(tmp_path / "r", shared_data, "idas", *args)
    stats = record["feedback"]["stats"]["per_kind"][KIND]
    asked = record["diagnostics"]["questions"]
    assert stats["queries"] == asked and record["diagnostics"]["prototype_questions"] == 18
    assert list(record["feedback"]["templates"]) == [f"{KIND}/idas-v1"]
    assert record["diagnostics"]["answers_ok"] == stats["statuses"].get("ok", 0)
    assert ledger_answers(ledger)[KIND] >= asked

    again = cli_record(tmp_path / "r", shared_data, "idas", *args, "--force")
    replayed = again["feedback"]["stats"]["per_kind"][KIND]
    assert replayed["backend_requests"] == 0 and replayed["ledger_hits"] >= asked
    assert again["metrics"] == record["metrics"]


def test_unreadable_replies_are_retried_once_and_fall_back(tmp_path, shared_data, scripted_server):
    """A local chat server whose replies are never a label ("answer <prompt>", far over 12
    words): each question is asked twice (one retry), counted as a parse failure, stored in
    the ledger, and every text keeps its own embedding; a re-run asks nothing."""
    server = scripted_server()
    ledger = tmp_path / "ledger.sqlite"
    llm = ["--llm", "openai:scripted", "--llm-option", f"base_url={server.base_url}"]
    args = [*SMALL, "--preset", "smoke", "-p", "max_texts=22", *llm, "--ledger", str(ledger)]
    record = cli_record(tmp_path / "r", shared_data, "idas", *args)
    stats = record["feedback"]["stats"]["per_kind"][KIND]
    assert stats["statuses"] == {PARSE_FAILURE: 22} and stats["backend_requests"] == 44
    d = record["diagnostics"]
    assert (d["prototype_questions"], d["answers_ok"], d["labelled_by_llm"]) == (18, 0, 0)
    assert d["fallback_texts"] == record["split"]["num_test"]  # every text keeps its own
    assert ledger_answers(ledger) == {KIND: 44}
    again = cli_record(tmp_path / "r", shared_data, "idas", *args, "--force")
    replayed = again["feedback"]["stats"]["per_kind"][KIND]
    assert (replayed["backend_requests"], replayed["ledger_hits"]) == (0, 44)
