"""End to end through real models: `gcdbench llm ask` against llama.cpp's OpenAI-compatible
server (SmolLM2-135M, via the ``openai`` backend) and the in-process ``llamacpp`` backend.

SmolLM2's answers are not good ones; these tests check the path — rendering, constrained
decoding, parsing, the ledger and offline replay — not the model.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gcdbench.cli import cli

pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional dependency")
pytest.importorskip("openai", reason="the openai SDK is an optional dependency")

QUESTION = [
    "--query",
    "when will my new card arrive",
    "--option",
    "how do I change my PIN",
    "--option",
    "my card still has not been delivered",
]


def _ask(*args: str):
    return CliRunner().invoke(cli, ["llm", "ask", *args], catch_exceptions=False)


def _fields(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


def test_llm_ask_through_the_local_server(llama_server, tmp_path):
    ledger = str(tmp_path / "ledger.sqlite")
    llm = ["--llm", "openai:smollm2", "--llm-option", f"base_url={llama_server.base_url}"]
    first = _ask("select-similar-instance", *llm, *QUESTION, "--ledger", ledger, "--show-prompt")
    assert first.exit_code == 0, first.output
    assert "Query: when will my new card arrive" in first.output
    got = _fields(first.output)
    # The server constrains the reply to the choices, so it always parses.
    assert got["status"] == "ok" and got["value"] in {"0", "1"}
    assert got["cached"] == "False" and got["backend requests"] == "1"
    assert int(got["tokens"].split()[0]) > 50

    again = _fields(_ask("select-similar-instance", *llm, *QUESTION, "--ledger", ledger).output)
    assert again["cached"] == "True" and again["backend requests"] == "0"
    assert again["value"] == got["value"] and again["raw"] == got["raw"]

    offline = _ask(
        "select-similar-instance",
        *llm,
        "--query",
        "a question never asked",
        "--option",
        "a",
        "--option",
        "b",
        "--ledger",
        ledger,
        "--llm-offline",
    )
    assert offline.exit_code == 2 and "not in the ledger" in offline.stderr

    stats = CliRunner().invoke(cli, ["llm", "ledger", "stats", "--ledger", ledger])
    assert stats.exit_code == 0 and f"1 answers in {ledger}" in stats.output.replace("\n", "")


def test_llm_ask_in_process_llamacpp_names_a_cluster(tmp_path):
    result = _ask(
        "characterize-cluster",
        "--llm",
        "llamacpp:smollm2-135m",
        "--text",
        "my card has not arrived",
        "--text",
        "where is my new card",
        "--known",
        "lost_card",
        "--ledger",
        str(tmp_path / "l.sqlite"),
    )
    assert result.exit_code == 0, result.output
    got = _fields(result.output)
    assert got["status"] in {"ok", "parse-failure"} and got["backend requests"] == "1"
