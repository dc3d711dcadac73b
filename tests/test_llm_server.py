"""The ``openai`` backend against a real llama.cpp OpenAI-compatible server (SmolLM2-135M on
127.0.0.1, started once per session and stopped by its PID)."""

from __future__ import annotations

from gcdbench.llm.api import ChatMessage, ChatRequest
from gcdbench.llm.openai_compat import OpenAICompatibleBackend
from gcdbench.llm.resolve import open_backend

SYSTEM = ChatMessage("system", "You are a helpful assistant. Answer briefly.")


def server_backend(llama_server) -> OpenAICompatibleBackend:
    backend = open_backend(
        f"openai:{llama_server.alias}", {"base_url": llama_server.base_url, "concurrency": "4"}
    )
    assert isinstance(backend, OpenAICompatibleBackend)
    return backend


def test_batch_comes_back_in_order_with_tokens_and_latency(llama_server):
    backend = server_backend(llama_server)
    words = ["apple", "river", "mountain"]
    requests = [
        ChatRequest((SYSTEM, ChatMessage("user", f"Repeat this word exactly: {w}")), max_tokens=6)
        for w in words
    ]
    results = backend.chat(requests)
    assert len(results) == 3 and all(r.ok for r in results), [r.error for r in results]
    # greedy and deterministic: asking one at a time gives the same text for the same slot
    assert [r.text for r in results] == [backend.chat([q])[0].text for q in requests]
    for result in results:
        assert result.prompt_tokens > 10 and 0 < result.completion_tokens <= 6
        assert result.latency_s > 0 and result.retries == 0
        assert result.extra["server_model"] == llama_server.alias
    assert backend.describe()["server_models"] == [llama_server.alias]


def test_choices_are_constrained_or_degrade_visibly(llama_server):
    backend = server_backend(llama_server)
    question = ChatMessage("user", "Which one is a fruit? Answer with one of: banana, truck.")
    (result,) = backend.chat([ChatRequest((SYSTEM, question), choices=("banana", "truck"))])
    assert result.ok, result.error
    mode = backend.describe()["structured"]
    if mode == "auto→none":
        # the server accepted no structured form: the raw text comes back, flagged by the mode
        assert "raw" not in result.extra
    else:
        # llama.cpp's server refuses json_schema but honours json_object with a schema
        assert mode in ("auto→json_schema", "auto→json_object")
        assert result.text in ("banana", "truck"), result.extra["raw"]


def test_option_labels_come_from_server_logprobs(llama_server):
    backend = server_backend(llama_server)
    question = ChatMessage("user", "Is water wet? Reply with the letter A (yes) or B (no).")
    (result,) = backend.chat(
        [ChatRequest((SYSTEM, question), max_tokens=1, option_labels=("A", "B"))]
    )
    assert result.ok, result.error
    assert result.option_logprobs is not None
    assert set(result.option_logprobs) <= {"A", "B"}
    assert all(lp <= 0.0 for lp in result.option_logprobs.values())
