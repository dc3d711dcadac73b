"""The ``openai`` backend: any OpenAI-compatible chat-completions endpoint (OpenAI, ``vllm
serve``, llama.cpp's server, Together, DeepSeek, ...).

A batch runs as concurrent requests (at most ``concurrency`` in flight) on the SDK's
``AsyncOpenAI``. The SDK's own retries are off (``max_retries=0``) so this module's loop sees
every attempt: it retries 429, 408/409, 5xx, timeouts, connection errors and malformed bodies
with exponential backoff plus jitter, honours ``Retry-After``, and counts each retry in
``ChatResult.retries``. A request that fails its last attempt comes back with ``error`` set and
empty ``text``; nothing is invented. The API key is read from the environment only and never
appears in identity, describe(), logs or error messages.

``chat`` is synchronous: it runs its own event loop, or, when called from inside a running
loop (a notebook, an async app), runs that loop in a worker thread and waits for it.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from gcdbench.errors import GcdbenchError
from gcdbench.llm import cluster_limit
from gcdbench.llm.api import Backend, BackendFactory, ChatRequest, ChatResult, label_logprobs
from gcdbench.llm.options import BackendOptions

OPENAI_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
STRUCTURED_MODES = ("auto", "json_schema", "json_object", "choice", "none")
#: what ``structured=auto`` tries next when a server refuses a form of structured output
FALLBACK = {"json_schema": "json_object", "json_object": "none"}
TOP_LOGPROBS = 20


class MalformedResponse(Exception):
    """A 2xx answer that is not a usable chat completion."""


def _answer_schema(choices: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": list(choices)}},
        "required": ["answer"],
        "additionalProperties": False,
    }


def _parse_answer(text: str, choices: Sequence[str]) -> str | None:
    """The choice inside a structured reply ``{"answer": ...}``, or None if it is not one."""
    try:
        value = json.loads(text).get("answer")
    except (ValueError, AttributeError):
        return None
    return value if value in choices else None


class OpenAICompatibleBackend(Backend):
    name = "openai"
    supports_choices = True
    supports_json_schema = True
    supports_logprobs = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str,
        concurrency: int = 32,
        timeout_s: float = 60.0,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        structured: str = "auto",
        seed: int = 0,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._auto = structured == "auto"
        self.structured = "json_schema" if structured == "auto" else structured
        self.logprobs_ok = True
        self.server_models: set[str] = set()
        # jitter only; a private generator keeps the global RNG untouched
        self._jitter = random.Random(seed)

    @property
    def identity(self) -> Mapping[str, str]:
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return {"provider": "openai-compatible", "host": host, "model": self.model}

    def describe(self) -> dict[str, Any]:
        # The server's own model id (e.g. a dated snapshot) is known only after an answer, so it
        # is provenance here rather than part of the identity that keys the ledger.
        return {
            **super().describe(),
            "server_models": sorted(self.server_models),
            "concurrency": self.concurrency,
            "structured": ("auto→" if self._auto else "") + self.structured,
            "logprobs": self.logprobs_ok,
        }

    # -- the batch --------------------------------------------------------------------------
    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        return self.chat_reporting(requests, lambda index, result: None)

    def chat_reporting(
        self, requests: Sequence[ChatRequest], on_result: Callable[[int, ChatResult], None]
    ) -> list[ChatResult]:
        """The batch, concurrently; ``on_result(i, result)`` as each request's result is in
        (on the event loop's thread), so the caller keeps it before the batch ends."""
        if not requests:
            return []
        # asyncio here and below, not at the top: every command loads this module (the
        # built-in LLM plugin's), and importing asyncio takes tens of milliseconds.
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.chat_async(requests, on_result))
        box: dict[str, Any] = {}

        def worker() -> None:
            try:
                box["results"] = asyncio.run(self.chat_async(requests, on_result))
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=worker, name="gcdbench-openai")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["results"]

    async def chat_async(
        self,
        requests: Sequence[ChatRequest],
        on_result: Callable[[int, ChatResult], None] | None = None,
    ) -> list[ChatResult]:
        import asyncio

        from openai import AsyncOpenAI

        gate = asyncio.Semaphore(self.concurrency)
        async with AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._api_key,
            max_retries=0,
            timeout=self.timeout_s,
        ) as client:

            async def one(index: int, request: ChatRequest) -> ChatResult:
                async with gate:
                    result = await self._with_retries(client, request)
                if on_result is not None:
                    on_result(index, result)
                return result

            return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))

    async def _with_retries(self, client: Any, request: ChatRequest) -> ChatResult:
        import asyncio

        retries = 0
        failures: list[str] = []
        started = time.perf_counter()  # latency is what the caller waited, retries included
        while True:
            try:
                result = await self._attempt(client, request)
                result.latency_s = time.perf_counter() - started
                result.retries = retries
                if failures:
                    result.extra["failed_attempts"] = failures
                return result
            except Exception as exc:
                retryable, wait_hint = self._classify(exc)
                failures.append(self._error_kind(exc))
                if not retryable or retries >= self.max_retries:
                    return ChatResult(
                        retries=retries,
                        latency_s=time.perf_counter() - started,
                        error=self._describe_error(exc, retries),
                        extra={"failed_attempts": failures},
                    )
                retries += 1
                await asyncio.sleep(self._backoff(retries, wait_hint))

    def _backoff(self, retry: int, wait_hint: float | None) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        delay *= 0.5 + self._jitter.random() / 2  # spread retries of a burst apart
        if wait_hint is not None:
            delay = max(delay, min(wait_hint, self.max_backoff_s))
        return delay

    def _classify(self, exc: Exception) -> tuple[bool, float | None]:
        """(retry?, the server's Retry-After in seconds if it sent one)."""
        import openai

        if isinstance(exc, MalformedResponse | openai.APIConnectionError):
            return True, None  # APITimeoutError is an APIConnectionError
        if isinstance(exc, openai.APIStatusError):
            hint = None
            header = exc.response.headers.get("retry-after") if exc.response else None
            if header:
                try:
                    hint = max(0.0, float(header))
                except ValueError:
                    hint = None  # an HTTP date: fall back to our own backoff
            return exc.status_code in RETRYABLE_STATUS, hint
        if isinstance(exc, ValueError | TypeError | KeyError | AttributeError):
            return True, None  # the SDK choked on the body
        return False, None

    @staticmethod
    def _error_kind(exc: Exception) -> str:
        status = getattr(exc, "status_code", None)
        return type(exc).__name__ + (f" {status}" if status else "")

    def _describe_error(self, exc: Exception, retries: int) -> str:
        kind = self._error_kind(exc)
        message = str(exc).replace(self._api_key, "***") if self._api_key else str(exc)
        return f"{kind} after {retries} retries: {message[:300]}"

    # -- one attempt ------------------------------------------------------------------------
    async def _attempt(self, client: Any, request: ChatRequest) -> ChatResult:
        import openai

        while True:
            mode, logprobs = self.structured, self.logprobs_ok
            kwargs = self._request_kwargs(request)
            try:
                # one slot of the sweep-wide limit per attempt (docs/cluster.md); a no-op
                # when no GCDBENCH_LLM_CLUSTER_* limit is set
                async with cluster_limit.slot(self.timeout_s):
                    response = await client.chat.completions.create(**kwargs)
            except openai.APIStatusError as exc:
                # A server that does not know a structured-output form or logprobs refuses the
                # request (400/422, or 500 from llama.cpp's server): step down once, remember
                # it, and ask again. Other refusals fail the same way and surface.
                if exc.status_code not in (400, 422, 500, 501):
                    raise
                if (mode, logprobs) != (self.structured, self.logprobs_ok):
                    continue  # a concurrent request already stepped down: ask the new way
                if self._relax(kwargs, str(exc)):
                    continue
                raise
            return self._to_result(response, request, kwargs.get("response_format"))

    def _relax(self, kwargs: Mapping[str, Any], message: str) -> bool:
        if "response_format" in kwargs or "extra_body" in kwargs:
            mentioned = any(k in message for k in ("response_format", "json_schema", "structured"))
            if self._auto and mentioned and self.structured in FALLBACK:
                self.structured = FALLBACK[self.structured]
                return True
        if kwargs.get("logprobs") and self.logprobs_ok and "logprob" in message:
            self.logprobs_ok = False
            return True
        return False

    def _request_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request.message_dicts(),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        schema: dict[str, Any] | None = None
        if request.json_schema is not None:
            schema = dict(request.json_schema)
        elif request.choices:
            schema = _answer_schema(request.choices)
        if schema is not None and request.choices and self.structured.startswith("json"):
            # the JSON wrapper costs tokens: leave room for {"answer": "<longest choice>"}
            longest = max(len(c) for c in request.choices)
            kwargs["max_tokens"] = max(request.max_tokens, 16 + longest)
        if schema is not None and self.structured == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema},
            }
        elif schema is not None and self.structured == "json_object":
            # llama.cpp's server: JSON mode, constrained by the schema it carries
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        elif request.choices and self.structured == "choice":
            # vLLM's server: constrain decoding to the strings themselves
            kwargs["extra_body"] = {"structured_outputs": {"choice": list(request.choices)}}
        if request.option_labels and self.logprobs_ok:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = TOP_LOGPROBS
        return kwargs

    def _to_result(self, response: Any, request: ChatRequest, structured: Any) -> ChatResult:
        choices = getattr(response, "choices", None)
        if not choices:
            raise MalformedResponse(f"no choices in the response ({type(response).__name__})")
        message = getattr(choices[0], "message", None)
        text = getattr(message, "content", None)
        if not isinstance(text, str):
            raise MalformedResponse("the first choice has no text content")
        extra: dict[str, Any] = {"finish_reason": getattr(choices[0], "finish_reason", None)}
        server_model = getattr(response, "model", None)
        if isinstance(server_model, str):
            self.server_models.add(server_model)
            extra["server_model"] = server_model
        if structured and request.choices and request.json_schema is None:
            answer = _parse_answer(text, request.choices)
            extra["raw"] = text
            if answer is not None:
                text = answer
        option_logprobs = None
        if request.option_labels:
            content = getattr(getattr(choices[0], "logprobs", None), "content", None)
            if content:
                top = getattr(content[0], "top_logprobs", None) or ()
                option_logprobs = label_logprobs(
                    ((alt.token, alt.logprob) for alt in top), request.option_labels
                )
        usage = getattr(response, "usage", None)
        return ChatResult(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            option_logprobs=option_logprobs,
            extra=extra,
        )


class OpenAICompatibleFactory(BackendFactory):
    name = "openai"
    description = (
        "any OpenAI-compatible endpoint (OpenAI, vllm serve, llama.cpp server, Together, "
        "DeepSeek); concurrent, with retries; key from OPENAI_API_KEY"
    )
    default_model = "gpt-4o-mini"
    OPTIONS = (
        "base_url",
        "api_key_env",
        "concurrency",
        "timeout",
        "max_retries",
        "backoff",
        "max_backoff",
        "structured",
        "seed",
    )

    def create(self, model: str | None, options: Mapping[str, str]) -> Backend:
        opts = BackendOptions(self.name, options, self.OPTIONS)
        base_url = opts.text("base_url") or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
        key_env = opts.text("api_key_env", "OPENAI_API_KEY") or "OPENAI_API_KEY"
        api_key = os.environ.get(key_env, "")
        cluster_limit.limit_from_env()  # a bad limit stops here, not as failed requests
        if not api_key:
            if urlsplit(base_url).hostname == "api.openai.com":
                raise GcdbenchError(
                    f"the openai backend needs an API key for {base_url}; set {key_env} in the "
                    "environment (keys are never taken from options or files)."
                )
            api_key = "not-needed"  # local servers (vllm serve, llama.cpp) ignore the key
        return OpenAICompatibleBackend(
            model or self.default_model or "",
            base_url=base_url,
            api_key=api_key,
            concurrency=opts.integer("concurrency", 32, minimum=1),
            timeout_s=opts.number("timeout", 60.0, minimum=0.001),
            max_retries=opts.integer("max_retries", 6, minimum=0),
            backoff_s=opts.number("backoff", 0.5, minimum=0.0),
            max_backoff_s=opts.number("max_backoff", 30.0, minimum=0.0),
            structured=opts.choice("structured", "auto", STRUCTURED_MODES),
            seed=opts.integer("seed", 0),
        )
