"""A query kind added by a plugin alone (tests/plugins/same_category.py: one module, one
template file, no change to gcdbench/) is asked through every path: the oracle, the noisy
oracle, the in-process llama.cpp backend, llama.cpp's real OpenAI-compatible server, the
ledger (a re-run asks nothing) and the feedback-quality report.

SmolLM2-135M's answers are not good ones; the LLM tests check the path, not the model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.cli import cli
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.ledger import Ledger

sys.path.insert(0, str(Path(__file__).parent / "plugins"))
import same_category

FAST = ["--dataset", "massive_scenario", "--known-ratio", "0.5", "--seed", "0"]
KIND = "same-category"


@pytest.fixture
def pairwise_plugin():
    registry.register_plugin(same_category, "test-same-category")
    yield
    registry.unregister_plugin("test-same-category")


def _run(tmp_path, shared_data, *args):
    argv = ["run", "same-category-demo", *FAST, "--results-dir", str(tmp_path / "r")]
    argv += ["--data-dir", str(shared_data), "-q", *args]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _record(tmp_path, llm: str) -> dict:
    records = [json.loads(p.read_text()) for p in (tmp_path / "r").rglob("record.json")]
    [record] = [r for r in records if r["spec"]["llm"].startswith(llm)]
    return record


def test_the_kind_is_registered_with_its_template(pairwise_plugin):
    kind = registry.get("query-kind", KIND)
    assert kind.templates() == ["pairwise-v1"]
    listing = CliRunner().invoke(cli, ["plugins"])
    assert KIND in listing.output
    shown = CliRunner().invoke(cli, ["list", "query-kinds", KIND, "--json"])
    [row] = json.loads(shown.output)
    assert row["templates"] == ["pairwise-v1 (default)"] and row["choice"] is True
    assert row["payload"] == ["first: str", "second: str", "task: str (optional)"]
    every = json.loads(CliRunner().invoke(cli, ["list", "query-kinds", "--json"]).output)
    assert {"select-similar-instance", "select-category", "characterize-cluster", KIND} <= {
        r["name"] for r in every
    }


def test_oracle_and_noisy_oracle_answer_and_the_report_scores_it(
    tmp_path, shared_data, pairwise_plugin
):
    _run(tmp_path, shared_data, "--llm", "oracle")
    record = _record(tmp_path, "oracle")
    assert record["feedback"]["stats"]["per_kind"][KIND]["queries"] == 12
    quality = record["diagnostics"]["feedback_quality"]["kinds"][KIND]
    assert quality["asked"] == 12 and quality["feedback_accuracy"] == 1.0
    assert quality["encoder_accuracy"] is not None  # the encoder's own answers, judged too

    _run(tmp_path, shared_data, "--llm", "noisy-oracle:0.0")
    noisy = _record(tmp_path, "noisy-oracle:0.0")
    # Always wrong on a two-way question: every answer is the other option.
    assert noisy["diagnostics"]["feedback_quality"]["kinds"][KIND]["feedback_accuracy"] == 0.0


def _ledger_rows(path: Path) -> dict[str, int]:
    ledger = Ledger(path)
    try:
        return {row["kind"]: row["answers"] for row in ledger.stats()}
    finally:
        ledger.close()


def test_in_process_llamacpp_asks_it_through_the_ledger(tmp_path, shared_data, pairwise_plugin):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional dependency")
    ledger = tmp_path / "ledger.sqlite"
    llm = ["--llm", "llamacpp:smollm2-135m", "--ledger", str(ledger)]
    _run(tmp_path, shared_data, *llm, "-p", "orderings=2")
    record = _record(tmp_path, "llamacpp:smollm2-135m")
    stats = record["feedback"]["stats"]["per_kind"][KIND]
    assert stats["queries"] == 12 and stats["backend_requests"] == 24
    assert list(record["feedback"]["templates"]) == [f"{KIND}/pairwise-v1"]
    quality = record["diagnostics"]["feedback_quality"]["kinds"][KIND]
    assert quality["asked"] == 12 and set(quality["statuses"]) <= {"ok", "inconsistent"}
    assert _ledger_rows(ledger) == {KIND: 24}

    _run(tmp_path, shared_data, *llm, "-p", "orderings=2", "--force")
    again = _record(tmp_path, "llamacpp:smollm2-135m")["feedback"]["stats"]["per_kind"][KIND]
    assert again["backend_requests"] == 0 and again["ledger_hits"] == 24


def test_the_real_llama_cpp_server_answers_it(tmp_path, shared_data, pairwise_plugin, llama_server):
    pytest.importorskip("openai", reason="the openai SDK is an optional dependency")
    ledger = tmp_path / "ledger.sqlite"
    _run(
        tmp_path,
        shared_data,
        "--llm",
        "openai:smollm2",
        "--llm-option",
        f"base_url={llama_server.base_url}",
        "--ledger",
        str(ledger),
    )
    record = _record(tmp_path, "openai:smollm2")
    stats = record["feedback"]["stats"]["per_kind"][KIND]
    # The server constrains the reply to "Yes"/"No", so every answer parses.
    assert stats["queries"] == 12 and stats["statuses"] == {"ok": 12}
    assert _ledger_rows(ledger) == {KIND: 12}


def test_every_registered_kind_passes_the_kind_checks(pairwise_plugin):
    from gcdbench.api.feedback import Query
    from gcdbench.testing import ConformanceError, check_query_kind

    for name in registry.names("query-kind"):
        check_query_kind(registry.get("query-kind", name))
    kind = registry.get("query-kind", KIND)
    check_query_kind(kind, Query(KIND, {"first": "card lost", "second": "where is my card"}))
    with pytest.raises(GcdbenchError, match="lacks 'second'"):
        check_query_kind(kind, Query(KIND, {"first": "card lost"}))

    class Broken(same_category.SameCategory):
        default_template = "pairwise-v9"

    with pytest.raises(ConformanceError, match=r"default template 'pairwise-v9'"):
        check_query_kind(Broken())
