"""keyphrase (Viswanathan et al., TACL 2024, arXiv 2307.00524; docs/methods/keyphrase.md):
conformance, the ``keyphrases`` kind, the demonstrations and the fallback on the tiny task, the
oracle upper bound against the method with its LLM part ablated on BANKING, and a small run
through SmolLM2-135M and the ledger.

The BANKING runs use the built-in bag-of-words encoder: no model to load, so a run takes
seconds, and plain K-means on it is weak, so keyphrases have room to help (or not: the oracle
comparison is a real test). Every run gets one BLAS/OpenMP thread: on the shared 2-core
machine, oversubscribed K-means took 55 s instead of 9 s (measured).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench.api.feedback import OK, PARSE_FAILURE, FeedbackEnv, Query
from gcdbench.api.method import Method, MethodOutput, params_dict
from gcdbench.api.spec import RunSpec
from gcdbench.api.task import GCDTask
from gcdbench.cli import cli
from gcdbench.encoders.bag_of_words import BagOfWordsEncoder
from gcdbench.encoders.cache import FeatureCache
from gcdbench.feedback.ledger import Ledger
from gcdbench.feedback.prompts import render
from gcdbench.runner.context import build_context
from gcdbench.testing import check_method, check_query_kind, tiny_task
from gcdbench_builtins.keyphrase import Keyphrase
from gcdbench_builtins.text_expansion_kinds import KEYPHRASES

BANKING = ["--dataset", "banking", "--known-ratio", "0.25", "--seed", "0"]
BANKING_TEST_TEXTS = 3080
SMALL = ["--dataset", "massive_scenario", "--known-ratio", "0.5", "--seed", "0"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with threadpool_limits(limits=1):
        yield


# -- helpers shared with tests/test_idas.py ---------------------------------------------------


def cli_record(results: Path, data: Path, method: str, *args: str) -> dict[str, Any]:
    """Run ``gcdbench run METHOD ARGS`` with the bag-of-words encoder into ``results``; the
    one record it wrote (``--force`` re-runs overwrite it)."""
    argv = ["run", method, *args, "--encoder", "bag-of-words", "-q"]
    argv += ["--data-dir", str(data), "--results-dir", str(results)]
    outcome = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    (path,) = results.rglob("record.json")
    return json.loads(path.read_text())


def tiny_run(
    method_cls: type[Method], tmp: Path, ablations: tuple[str, ...] = (), **overrides: Any
) -> tuple[MethodOutput, GCDTask]:
    """The method's smoke preset on the tiny in-memory task (bag of words, exact oracle)."""
    task, gold, parts = tiny_task(0)
    params = method_cls.resolve_params("smoke", overrides)
    spec = RunSpec(method_cls.name, "tiny", 0.5, 0, 0.5, llm="oracle", params=params_dict(params))
    texts = {p.file.sha256: list(p.texts) for p in (parts.train, parts.dev, parts.test) if p}
    ctx = build_context(
        spec,
        texts,
        tmp,
        uses=method_cls.uses,
        encoder=BagOfWordsEncoder(),
        feedback_env=FeedbackEnv(seed=0, gold=gold, ledger_path=tmp / "ledger.sqlite"),
        features=FeatureCache(tmp / "features"),
    )
    try:
        output = method_cls(params, method_cls.expand_ablations(list(ablations))).run(task, ctx)
    finally:
        if ctx.feedback_loaded:
            ctx.feedback.close()
    return output, task


@functools.cache
def llama_cpp_decodes() -> str | None:
    """Why in-process llama.cpp cannot answer here, or None when it can: a child process
    loads SmolLM2 and decodes a few-token prompt. The llama-cpp-python build on the project's
    CPU machine segfaulted on every prompt longer than one token (any n_ubatch > 1, measured),
    which would take pytest down with it."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional dependency")
    probe = (
        "import llama_cpp\n"
        "from gcdbench.llm.models import packaged_gguf\n"
        "m = llama_cpp.Llama(str(packaged_gguf('smollm2-135m').path), n_ctx=256, verbose=False)\n"
        "m('one two three four five six seven', max_tokens=2)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        return "llama.cpp took over 120 s to decode an 8-token prompt with SmolLM2-135M"
    if done.returncode != 0:
        return f"llama.cpp crashed decoding an 8-token prompt (exit code {done.returncode})"
    return None


def ledger_answers(path: Path) -> dict[str, int]:
    ledger = Ledger(path)
    try:
        counts: dict[str, int] = {}
        for row in ledger.stats():  # one row per (kind, model, status): add them up
            counts[row["kind"]] = counts.get(row["kind"], 0) + row["answers"]
        return counts
    finally:
        ledger.close()


# -- the method and its kind ------------------------------------------------------------------


def test_conformance_with_the_oracle():
    check_method(Keyphrase)


def test_the_kind_checks_renders_and_decodes():
    demo = ["my card has not arrived", '{"keyphrases": ["card arrival"]}']
    query = Query(
        KEYPHRASES.name,
        {"text": "where is my card", "task": "intent", "demonstrations": [demo]},
        {"id": 0, "part": "test"},
    )
    check_query_kind(KEYPHRASES, query)
    user = render(query).messages[-1].content
    # instructions, the demonstration, then the text last (the shared prefix comes first)
    assert user.index("intent") < user.index("my card has not arrived")
    assert user.rstrip().endswith('Text: "where is my card"\nKeyphrases:')

    def decode(text: str) -> Any:
        parsed = KEYPHRASES.decode(query, text)
        return parsed.value if parsed.status == OK else parsed.status

    assert decode('{"keyphrases": ["card status", "card location"]}') == [
        "card status",
        "card location",
    ]
    assert decode('```json\n["delivery time", "ETA"]\n```') == ["delivery time", "ETA"]
    assert decode("- refund\n- cancel purchase") == ["refund", "cancel purchase"]
    # cut off at the token limit: a failure, not the fragments of a comma split
    assert decode('{"keyphrases": ["card status", "card loc') == PARSE_FAILURE
    assert decode('{"keyphrases": ["<keyphrase>"]}') == PARSE_FAILURE
    assert decode("") == PARSE_FAILURE


def test_demonstrations_come_from_labeled_known_classes(tmp_path):
    output, task = tiny_run(Keyphrase, tmp_path)
    [asked] = output.feedback_log.asked
    demos = asked.queries[0].payload["demonstrations"]
    labeled = set(task.train.texts[: task.num_labeled])
    known = {name.replace("_", " ") for name in task.known_class_names}
    assert len(demos) == min(3, task.num_known)
    assert all(text in labeled for text, _ in demos)
    assert {json.loads(k)["keyphrases"][0] for _, k in demos} <= known
    # every question shares the same demonstrations (one prompt prefix)
    assert all(q.payload["demonstrations"] == demos for q in asked.queries)
    d = output.diagnostics
    assert d["questions"] == len(asked.queries) <= 12  # the smoke preset's max_texts
    assert d["expanded_by_llm"] + d["fallback_texts"] == len(task.test)

    zero_shot, _ = tiny_run(Keyphrase, tmp_path / "zero", ablations=("demos",))
    assert all("demonstrations" not in q.payload for q in zero_shot.feedback_log.asked[0].queries)


def test_a_budget_expands_the_least_certain_texts_and_the_rest_fall_back(tmp_path):
    margin, task = tiny_run(Keyphrase, tmp_path / "m", max_texts=5)
    random, _ = tiny_run(Keyphrase, tmp_path / "r", max_texts=5, selection="random")
    for output, how in ((margin, "margin"), (random, "random")):
        d = output.diagnostics
        assert (d["selection"], d["selected_texts"]) == (how, 5)
        assert (
            d["expanded_by_llm"] >= 5
            and d["fallback_texts"] == len(task.test) - d["expanded_by_llm"]
        )
        assert d["feature_dim"] == 2 * 1024  # [text, keyphrases], bag of words
    ids = {
        name: {q.meta["id"] for q in o.feedback_log.asked[0].queries}
        for name, o in (("margin", margin), ("random", random))
    }
    assert ids["margin"] != ids["random"]


# -- BANKING through the command line ---------------------------------------------------------


def test_oracle_keyphrases_beat_plain_kmeans_on_banking(tmp_path, shared_data):
    oracle = cli_record(
        tmp_path / "oracle",
        shared_data,
        "keyphrase",
        *BANKING,
        "--preset",
        "smoke",
        "--llm",
        "oracle",
        "-p",
        "max_texts=none",
    )
    plain = cli_record(
        tmp_path / "plain",
        shared_data,
        "keyphrase",
        *BANKING,
        "--preset",
        "smoke",
        "--llm",
        "oracle",
        "--ablate",
        "llm",
    )
    d = oracle["diagnostics"]
    assert (d["expanded_by_llm"], d["fallback_texts"], d["selection"]) == (
        BANKING_TEST_TEXTS,
        0,
        "all",
    )
    assert oracle["feedback"]["stats"]["per_kind"]["keyphrases"]["queries"] == d["questions"]
    assert plain["diagnostics"]["questions"] == 0 == plain["diagnostics"]["expanded_by_llm"]
    assert ((plain["feedback"] or {}).get("stats") or {}).get("total", {}).get("queries", 0) == 0
    # The gold name as keyphrase must lift plain K-means by a wide margin on every metric.
    for metric in ("acc", "ari", "nmi"):
        assert oracle["metrics"][metric] > plain["metrics"][metric] + 20, metric


def test_smollm2_replies_parse_and_a_rerun_comes_from_the_ledger(tmp_path, shared_data):
    why = llama_cpp_decodes()
    if why:
        pytest.skip(why)
    ledger = tmp_path / "ledger.sqlite"
    llm = ["--llm", "llamacpp:smollm2-135m", "--ledger", str(ledger)]
    args = [*SMALL, "--preset", "smoke", "-p", "max_texts=6", *llm]
    record = cli_record(tmp_path / "r", shared_data, "keyphrase", *args)
    stats = record["feedback"]["stats"]["per_kind"]["keyphrases"]
    asked = record["diagnostics"]["questions"]
    assert stats["queries"] == asked and 1 <= asked <= 6
    assert stats["backend_requests"] >= asked  # retries of unreadable replies come on top
    assert list(record["feedback"]["templates"]) == ["keyphrases/keyphrase-v1"]
    assert sum(stats["statuses"].values()) == asked
    assert record["diagnostics"]["answers_ok"] == stats["statuses"].get("ok", 0)
    assert ledger_answers(ledger)["keyphrases"] >= asked

    again = cli_record(tmp_path / "r", shared_data, "keyphrase", *args, "--force")
    replayed = again["feedback"]["stats"]["per_kind"]["keyphrases"]
    assert replayed["backend_requests"] == 0 and replayed["ledger_hits"] >= asked
    assert again["metrics"] == record["metrics"]


def test_an_openai_compatible_server_through_the_ledger(tmp_path, shared_data, scripted_server):
    """The same path without llama.cpp: a local chat server that answers "answer <prompt>"
    (read as comma-separated keyphrases), the ledger, and a re-run served from it."""
    server = scripted_server()
    ledger = tmp_path / "ledger.sqlite"
    llm = ["--llm", "openai:scripted", "--llm-option", f"base_url={server.base_url}"]
    args = [*SMALL, "--preset", "smoke", "-p", "max_texts=6", *llm, "--ledger", str(ledger)]
    record = cli_record(tmp_path / "r", shared_data, "keyphrase", *args)
    stats = record["feedback"]["stats"]["per_kind"]["keyphrases"]
    assert stats["queries"] == stats["backend_requests"] == 6 == stats["statuses"]["ok"]
    assert record["diagnostics"]["expanded_by_llm"] >= 6
    assert ledger_answers(ledger) == {"keyphrases": 6}
    again = cli_record(tmp_path / "r", shared_data, "keyphrase", *args, "--force")
    replayed = again["feedback"]["stats"]["per_kind"]["keyphrases"]
    assert (replayed["backend_requests"], replayed["ledger_hits"]) == (0, 6)
    assert again["metrics"] == record["metrics"]
