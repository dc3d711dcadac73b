"""The ``transformers`` backend on a tiny random Llama built offline with all-MiniLM-L6-v2's
tokenizer and a plain chat template.

The weights are random, so the answers mean nothing; what these tests prove is the plumbing:
chat templating, left-padded batching that matches one-at-a-time results, label and choice
scores that equal an independent forward pass, and sampling that leaves torch's global RNG as
it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gcdbench.encoders.models import PACKAGED_MODELS, packaged_model_path
from gcdbench.errors import GcdbenchError
from gcdbench.llm.api import ChatMessage, ChatRequest
from gcdbench.llm.resolve import open_backend
from gcdbench.llm.transformers_backend import TransformersBackend

TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_tiny_model(folder: Path, chat_template: str | None = TEMPLATE) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(
        packaged_model_path(PACKAGED_MODELS["all-MiniLM-L6-v2"])
    )
    tokenizer.eos_token = "[SEP]"
    tokenizer.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TransformersBackend:
    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
    backend = open_backend(f"transformers:{folder}", {"batch_size": "4", "dtype": "float32"})
    assert isinstance(backend, TransformersBackend)
    return backend


def ask(text: str, **kwargs) -> ChatRequest:
    return ChatRequest((ChatMessage("user", text),), **kwargs)


def reference_logprobs(backend: TransformersBackend, request: ChatRequest, tokens: list[int]):
    """An independent, unpadded forward pass over prompt + ``tokens``."""
    ids = torch.tensor([backend._prompt_ids(request) + tokens])
    with torch.inference_mode():
        return torch.log_softmax(backend.model(input_ids=ids).logits[0].float(), dim=-1)


def test_generation_batched_equals_one_at_a_time(tiny):
    requests = [ask("hello " * n, max_tokens=5) for n in (1, 4, 9)]
    batched = tiny.chat(requests)
    single = [tiny.chat([r])[0] for r in requests]
    assert [r.text for r in batched] == [r.text for r in single]
    for result, request in zip(batched, requests, strict=True):
        assert result.text and 0 < result.completion_tokens <= 5
        assert result.prompt_tokens == len(tiny._prompt_ids(request))


def test_option_labels_are_first_token_logprobs(tiny):
    requests = [ask("short"), ask("a much longer question to force left padding here")]
    requests = [ChatRequest(r.messages, option_labels=("a", "b", "c")) for r in requests]
    for result, request in zip(tiny.chat(requests), requests, strict=True):
        reference = reference_logprobs(tiny, request, [])[-1]
        for label, value in (result.option_logprobs or {}).items():
            assert value == pytest.approx(float(reference[tiny._first_token(label)]), abs=1e-4)
        assert set(result.option_logprobs or {}) == {"a", "b", "c"}
        assert result.text == max(result.option_logprobs, key=result.option_logprobs.get)
        assert result.completion_tokens == 0  # scored, not generated


def test_choices_are_scored_by_sequence_logprob(tiny):
    request = ask("which one?", choices=("apple pie", "car", "blue whale"))
    (result,) = tiny.chat([request])
    scores = result.extra["choice_logprobs"]
    for choice, value in scores.items():
        tokens = tiny.tokenizer(choice, add_special_tokens=False)["input_ids"]
        reference = reference_logprobs(tiny, request, tokens)
        n = len(tiny._prompt_ids(request))
        expected = sum(float(reference[n + k - 1, tok]) for k, tok in enumerate(tokens))
        assert value == pytest.approx(expected, abs=1e-3)
    assert result.text == max(scores, key=scores.get)


def test_sampling_leaves_the_global_rng_alone(tiny):
    state = torch.random.get_rng_state()
    first = tiny.chat([ask("sample", max_tokens=6, temperature=1.0, seed=7)])[0].text
    again = tiny.chat([ask("sample", max_tokens=6, temperature=1.0, seed=7)])[0].text
    assert torch.equal(state, torch.random.get_rng_state())
    assert first == again  # the request's seed, not the global state, decides


def test_identity_hashes_the_weights(tiny):
    assert tiny.identity["provider"] == "transformers"
    assert tiny.identity["revision"].startswith("sha256:")


def test_a_model_without_chat_template_is_refused(tmp_path):
    folder = build_tiny_model(tmp_path / "plain", chat_template=None)
    with pytest.raises(GcdbenchError, match="no chat template"):
        open_backend(f"transformers:{folder}")
