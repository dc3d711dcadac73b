"""Every answer is in the ledger the moment it arrives: a batch killed with SIGKILL half-way
keeps the answers it already got, and a restart asks the backend only for the rest.

Real backends, in a real subprocess killed by its PID: the OpenAI-compatible client against a
scripted chat server on 127.0.0.1 (tests/llm_servers.py), and SmolLM2-135M in process through
llama.cpp. Run as a script, this file is that subprocess: it asks one batch and exits.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from gcdbench.api.feedback import FeedbackEnv, FeedbackProvider, Query
from gcdbench.feedback.resolve import open_feedback

KIND = "select-similar-instance"
OPTIONS = ["how do I top up", "where is my new card", "close my account", "change my pin"]
SMOLLM2 = "llamacpp:smollm2-135m;n_ctx=1024;n_threads=1"
ALL_AT_THE_END = (
    "the whole batch was stored only when it ended: the backend's chat_reporting must hand "
    "each result to on_result(index, result) as it comes in"
)


def questions(n: int) -> list[Query]:
    # "id=qN" lets the scripted server count the hits of each question.
    return [
        Query(KIND, {"query": f"id=q{i} where is card {i}", "options": OPTIONS}) for i in range(n)
    ]


def open_provider(spec: str, ledger: Path) -> FeedbackProvider:
    return open_feedback(spec, FeedbackEnv(ledger_path=ledger))


def rows(ledger: Path) -> int:
    """Answers committed to the ledger, read the way another process would."""
    if not ledger.exists():
        return 0
    with closing(sqlite3.connect(ledger, timeout=10)) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
        except sqlite3.OperationalError:  # the asker has not created the table yet
            return 0


def stored(ledger: Path) -> dict[str, tuple[object, ...]]:
    """key -> what the answer is (everything but when and how fast it came)."""
    with closing(sqlite3.connect(ledger)) as db:
        cursor = db.execute(
            "SELECT key, kind, identity, template_id, template_sha256, raw_text, value_json, "
            "status, confidence, option_logprobs_json, prompt_tokens, completion_tokens, "
            "cost_usd, run_hash FROM answers"
        )
        return {row[0]: row[1:] for row in cursor}


def kill_after(spec: str, ledger: Path, n: int, at_least: int, timeout_s: float) -> int:
    """Start an asker of ``n`` questions, SIGKILL it once ``at_least`` answers are committed;
    the number of rows it left."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, spec, str(ledger), str(n)]
    asker = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    try:
        while rows(ledger) < at_least:
            if asker.poll() is not None:
                err = asker.stderr.read().decode() if asker.stderr else ""
                pytest.fail(f"the asker exited ({asker.returncode}) before the kill: {err[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"fewer than {at_least} answers in the ledger after {timeout_s} s")
            time.sleep(0.01)
        asker.send_signal(signal.SIGKILL)  # the PID we started; nothing else
        asker.wait(timeout=30)
    finally:
        if asker.poll() is None:
            asker.kill()
            asker.wait(timeout=30)
    assert asker.returncode == -signal.SIGKILL, "the batch finished before the kill"
    return rows(ledger)


def backend_requests(provider: FeedbackProvider) -> int:
    return int(provider.describe()["stats"]["per_kind"][KIND]["backend_requests"])


def restart(spec: str, ledger: Path, n: int) -> tuple[int, int]:
    """Ask the same batch again: (backend requests, ledger hits)."""
    provider = open_provider(spec, ledger)
    try:
        answers = provider.answer(questions(n))
        per_kind = provider.describe()["stats"]["per_kind"][KIND]
    finally:
        provider.close()
    assert all(a.status == "ok" for a in answers), [a.status for a in answers]
    return int(per_kind["backend_requests"]), int(per_kind["ledger_hits"])


def _hits(server: object) -> Callable[[], int]:
    return lambda: sum(server.hits.values())  # type: ignore[attr-defined]


def test_openai_answers_survive_sigkill_and_only_the_rest_is_asked(scripted_server, tmp_path):
    pytest.importorskip("openai", reason="the openai SDK is an optional dependency")
    server = scripted_server(latency_s=0.25)
    hits = _hits(server)
    # Two requests in flight at a time: answers come back from a concurrent pool.
    spec = f"openai:m;base_url={server.base_url};concurrency=2;max_retries=0"
    ledger, n = tmp_path / "ledger.sqlite", 12

    kept = kill_after(spec, ledger, n, at_least=3, timeout_s=60)
    answered = sum(server.answered.values())
    assert kept < n, ALL_AT_THE_END
    assert kept >= 3
    # Every answer the server sent is in the ledger, bar those still in flight at the kill.
    assert answered - 2 <= kept <= answered

    before = hits()
    asked, from_ledger = restart(spec, ledger, n)
    assert (asked, from_ledger) == (n - kept, kept)
    assert hits() - before == n - kept  # the server saw only the questions not yet stored
    assert rows(ledger) == n

    # Same keys, same rows as a batch that was never interrupted.
    whole = tmp_path / "whole.sqlite"
    assert restart(spec, whole, n) == (n, 0)
    assert stored(ledger) == stored(whole)


def test_llamacpp_answers_survive_sigkill_and_only_the_rest_is_asked(tmp_path):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (the llm or test extra)")
    ledger, n = tmp_path / "ledger.sqlite", 6
    kept = kill_after(SMOLLM2, ledger, n, at_least=2, timeout_s=120)
    assert kept < n, ALL_AT_THE_END
    assert kept >= 2
    keys_before = set(stored(ledger))
    asked, from_ledger = restart(SMOLLM2, ledger, n)
    assert (asked, from_ledger) == (n - kept, kept)
    assert rows(ledger) == n and keys_before < set(stored(ledger))


def _ask_one_batch(spec: str, ledger: str, n: int) -> None:
    provider = open_provider(spec, Path(ledger))
    try:
        provider.answer(questions(n))
    finally:
        provider.close()


if __name__ == "__main__":  # the asker the tests above kill
    _ask_one_batch(sys.argv[1], sys.argv[2], int(sys.argv[3]))
