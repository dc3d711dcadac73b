"""The ``openai`` backend against a real local HTTP server that fails on purpose: retries are
counted, every request gets exactly one result in order, and exhausted retries give an error
result rather than a made-up answer."""

from __future__ import annotations

import asyncio
import time

from llm_servers import ScriptedChatServer

from gcdbench.llm.api import ChatMessage, ChatRequest
from gcdbench.llm.openai_compat import OpenAICompatibleBackend, OpenAICompatibleFactory

# A generous timeout: on a loaded machine a slow-but-fine answer must not count as a timeout
# (the retry would then be a second, duplicate completion on the server).
FAST_RETRIES = {"backoff": "0.001", "max_backoff": "0.01", "timeout": "2", "max_retries": "4"}


def backend_for(server: ScriptedChatServer, **options: str) -> OpenAICompatibleBackend:
    backend = OpenAICompatibleFactory().create(
        "test-model", {"base_url": server.base_url, **FAST_RETRIES, **options}
    )
    assert isinstance(backend, OpenAICompatibleBackend)
    return backend


def ask(i: int, **kwargs) -> ChatRequest:
    return ChatRequest((ChatMessage("user", f"question id={i}"),), **kwargs)


#: request i fails with FAILURES[i % 6] on its first (i % 3) attempts
FAILURES = ["429", "500", "malformed", "empty", "slow", "ok"]


def mixed_script(request_id: str, attempt: int) -> str:
    i = int(request_id)
    return FAILURES[i % 6] if attempt < i % 3 else "ok"


def test_every_request_answered_once_in_order_with_retries_counted(scripted_server):
    server = scripted_server(mixed_script, slow_s=3.0)
    n = 36
    results = backend_for(server, concurrency="8").chat([ask(i) for i in range(n)])
    assert len(results) == n
    for i, result in enumerate(results):
        expected_retries = 0 if FAILURES[i % 6] == "ok" else i % 3
        assert result.ok, result.error
        assert result.text == f"answer {i}"
        assert result.retries == expected_retries
        assert server.hits[str(i)] == expected_retries + 1  # nothing sent twice
        assert server.answered[str(i)] == 1  # and nothing answered twice
        assert len(result.extra.get("failed_attempts", [])) == expected_retries
        assert (result.prompt_tokens, result.completion_tokens) == (7, 2)
    assert set(server.hits) == {str(i) for i in range(n)}  # nothing lost


def test_exhausted_retries_give_an_error_result_not_an_answer(scripted_server):
    server = scripted_server(lambda rid, attempt: "500" if rid == "1" else "ok")
    results = backend_for(server).chat([ask(0), ask(1), ask(2)])
    assert [r.ok for r in results] == [True, False, True]
    failed = results[1]
    assert failed.text == "" and failed.retries == 4
    assert "InternalServerError 500 after 4 retries" in (failed.error or "")
    assert server.hits["1"] == 5


def test_client_errors_are_not_retried(scripted_server):
    server = scripted_server(lambda rid, attempt: "400")
    (result,) = backend_for(server).chat([ask(0)])
    assert not result.ok and result.retries == 0 and server.hits["0"] == 1


def test_retry_after_is_honoured(scripted_server):
    server = scripted_server(lambda rid, attempt: "429:0.4" if attempt == 0 else "ok")
    started = time.perf_counter()
    (result,) = backend_for(server, max_backoff="5").chat([ask(0)])
    assert result.ok and result.retries == 1
    assert time.perf_counter() - started >= 0.4  # own backoff is 1 ms; the wait is the server's


def test_concurrency_is_bounded(scripted_server):
    server = scripted_server(latency_s=0.05)
    results = backend_for(server, concurrency="4").chat([ask(i) for i in range(20)])
    assert all(r.ok for r in results)
    assert server.max_in_flight == 4


def test_api_key_never_leaks_into_errors_or_identity(scripted_server, monkeypatch):
    secret = "sk-test-do-not-leak-123"
    monkeypatch.setenv("GCDBENCH_TEST_KEY", secret)
    server = scripted_server(lambda rid, attempt: "401")
    backend = backend_for(server, api_key_env="GCDBENCH_TEST_KEY")
    (result,) = backend.chat([ask(0)])
    assert not result.ok and result.retries == 0
    assert "Incorrect API key" in (result.error or "")  # the server did echo it back...
    assert secret not in (result.error or "")  # ...and the backend scrubbed it
    assert secret not in repr(backend.identity) + repr(backend.describe())


def test_structured_output_falls_back_when_the_server_refuses_json_schema(scripted_server):
    server = scripted_server(reject_json_schema=True)
    backend = backend_for(server)
    results = backend.chat([ask(i, choices=("yes", "no")) for i in range(3)])
    assert [r.text for r in results] == ["no", "no", "no"]  # the server answers the last choice
    assert all(r.retries == 0 for r in results)  # a refused format is not a failed attempt
    assert backend.describe()["structured"] == "auto→json_object"


def test_option_labels_read_from_first_token_logprobs(scripted_server):
    server = scripted_server()
    (result,) = backend_for(server).chat([ask(0, option_labels=("A", "B", "C"))])
    assert result.option_logprobs == {"A": -0.1, "B": -2.5}  # " B" counts as B; C not offered


def test_chat_works_inside_a_running_event_loop(scripted_server):
    server = scripted_server()
    backend = backend_for(server)

    async def caller() -> list[str]:
        return [r.text for r in backend.chat([ask(0), ask(1)])]

    assert asyncio.run(caller()) == ["answer 0", "answer 1"]
