"""The LLM backend interface: a batch of chat requests in, a list of results out.

Backends are plugins (``register_llm_backends``); a round of questions goes to a backend in
one call, so each backend can batch, run concurrently or share a prefix cache as it sees fit.
Nothing here imports a backend library.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion. ``choices`` asks the backend to restrict the answer to one of
    these strings (grammar / structured output) where it can; ``json_schema`` asks for a
    JSON object of that schema; ``option_labels`` asks for the log-probabilities of these
    labels at the first answer token where the backend exposes them."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int = 50
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    choices: tuple[str, ...] | None = None
    json_schema: Mapping[str, Any] | None = None
    option_labels: tuple[str, ...] | None = None

    def message_dicts(self) -> list[dict[str, str]]:
        """The messages as chat APIs take them: ``[{"role": ..., "content": ...}, ...]``."""
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def decoding(self) -> dict[str, Any]:
        """The decoding parameters, as the ledger keys them."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "choices": list(self.choices) if self.choices is not None else None,
            "json_schema": dict(self.json_schema) if self.json_schema is not None else None,
            "option_labels": list(self.option_labels) if self.option_labels is not None else None,
        }


@dataclass
class ChatResult:
    """What came back for one request. ``error`` is set (and ``text`` empty) when the
    request failed after every retry; the caller counts it, never hides it."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    option_logprobs: dict[str, float] | None = None
    retries: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def label_logprobs(
    top: Mapping[str, float] | Iterable[tuple[str, float]], labels: Sequence[str]
) -> dict[str, float]:
    """Log-probabilities of ``labels`` among a first answer token's top alternatives (a mapping
    or ``(token, logprob)`` pairs). Tokenisers differ on a leading space (" A" vs "A"), so both
    spellings count toward a label (their probabilities added). Labels outside the top list are
    left out, not guessed."""
    found: dict[str, float] = {}
    for token, logprob in top.items() if isinstance(top, Mapping) else top:
        label = token.strip()
        if label in labels:
            prior = found.get(label)
            found[label] = (
                logprob
                if prior is None
                else max(prior, logprob) + math.log1p(math.exp(-abs(prior - logprob)))
            )
    return found


class Backend(ABC):
    """A loaded model behind some API. ``identity`` names what answers — provider, model id
    and weights hash or revision — and is part of every ledger key."""

    name: str
    supports_choices: bool = False
    supports_json_schema: bool = False
    supports_logprobs: bool = False

    @property
    @abstractmethod
    def identity(self) -> Mapping[str, str]: ...

    @abstractmethod
    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Results in the order of ``requests``; one call per batch."""

    def chat_reporting(
        self, requests: Sequence[ChatRequest], on_result: Callable[[int, ChatResult], None]
    ) -> list[ChatResult]:
        """:meth:`chat`, calling ``on_result(i, result)`` once result ``i`` is in, so the
        caller can keep it (the feedback ledger commits it) before the batch ends. A backend
        that answers one request at a time, or several concurrently, overrides it to hand
        over each result as it comes back."""
        results = self.chat(requests)
        for index, result in enumerate(results):
            on_result(index, result)
        return results

    def describe(self) -> dict[str, Any]:
        """Provenance for the run record (never an API key)."""
        return {"backend": self.name, **self.identity}

    def close(self) -> None:  # noqa: B027 - optional
        """Release the model or connections."""


class BackendFactory(ABC):
    """What a plugin registers: a named way to build a backend.

    ``create(model, options)``: ``model`` is what follows ``NAME:`` in ``--llm NAME:MODEL``
    (None for the backend's default model); ``options`` are ``--llm-option key=value``.
    """

    name: str
    description: str = ""
    default_model: str | None = None

    @abstractmethod
    def create(self, model: str | None, options: Mapping[str, str]) -> Backend: ...
