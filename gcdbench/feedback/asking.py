"""How one query becomes chat requests, and how a reply becomes a value.

Split from :mod:`gcdbench.feedback.llm_provider` so the rendering and decoding rules can be
read (and tested) without the ledger and batching around them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from gcdbench.api.feedback import OK, Query
from gcdbench.api.parsing import Parsed
from gcdbench.api.query_kind import ChoiceKind, QueryKind
from gcdbench.api.values import parse_value
from gcdbench.errors import GcdbenchError
from gcdbench.feedback import kinds, prompts
from gcdbench.llm.api import Backend, ChatMessage, ChatRequest, ChatResult
from gcdbench.util.random import keyed_generator

#: ``--llm-option`` keys that used to set the asking policy, and the method parameters that
#: do now (one place, recorded once in the run id).
_MOVED = {
    "order_consistency": "the method's order_consistency parameter (-p order_consistency=2)",
    "confidence_threshold": "the method's confidence filter (e.g. -p filter_threshold=0.8)",
    "layout": "the method's prompt_layout parameter (-p prompt_layout=official)",
}


@dataclass(frozen=True)
class LLMOptions:
    """The provider's ``--llm-option`` keys: what the backend does with a prompt. Each one
    changes answers, so all are recorded in the run's spec. Other keys go to the backend.
    How a question is asked (option orders, confidences, layout) is the method's
    :class:`~gcdbench.api.feedback.AskingPolicy`, not an option here."""

    choose_by_logprobs: bool = False  # pick the option label with the highest log-probability
    constrained: bool = True  # restrict the reply (choices / JSON schema) where the backend can
    temperature: float = 0.0
    sample_seed: int = 0

    @classmethod
    def split(cls, options: Mapping[str, str]) -> tuple[LLMOptions, dict[str, str]]:
        """The provider's options, and the rest (for the backend)."""
        known = {f.name: f for f in fields(cls)}
        mine: dict[str, Any] = {}
        rest: dict[str, str] = {}
        for key, raw in options.items():
            if key in _MOVED:
                raise GcdbenchError(
                    f"--llm-option {key} is part of how a method asks, not of the backend; "
                    f"use {_MOVED[key]}."
                )
            if key not in known:
                rest[key] = raw
                continue
            try:
                mine[key] = _coerce(key, str(raw))
            except ValueError:
                raise GcdbenchError(
                    f"--llm-option {key}={raw!r} is not a valid {known[key].type}; "
                    f"e.g. --llm-option {key}={getattr(cls(), key) or 1}."
                ) from None
        return cls(**mine), rest


#: The types ``LLMOptions`` fields declare (annotations are strings under
#: ``from __future__ import annotations``).
_TYPES: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


def _coerce(key: str, raw: str) -> Any:
    declared = {f.name: str(f.type) for f in fields(LLMOptions)}[key]
    return parse_value(raw, _TYPES[declared])


@dataclass(frozen=True)
class Ask:
    """One rendered prompt of a query: ``order[i]`` is the option shown at position i."""

    query_index: int
    query: Query
    kind: QueryKind
    order: tuple[int, ...] | None
    template_id: str
    template_sha256: str
    request: ChatRequest
    answer_mode: str
    retry: bool = False  # asked again after a reply that could not be read


def orderings(query: Query, n_options: int, k: int, seed: int) -> list[tuple[int, ...]]:
    """The identity order, then up to k-1 distinct seeded permutations, a function of the
    question's key and the seed only (so a re-run renders the same prompts). While options
    remain, each order shows a different option first, so a model that always picks the
    first position never gives agreeing answers."""
    identity = tuple(range(n_options))
    wanted = min(k, math.factorial(n_options) if n_options <= 10 else k)
    if n_options == 2 and wanted > 1:
        return [identity, (1, 0)]
    rng = keyed_generator(seed, query.content_key())
    out = [identity]
    while len(out) < wanted:
        perm = tuple(int(i) for i in rng.permutation(n_options))
        new_first = len(out) >= n_options or all(perm[0] != o[0] for o in out)
        if perm not in out and new_first:
            out.append(perm)
    return out


def build_asks(index: int, query: Query, backend: Backend, options: LLMOptions) -> list[Ask]:
    kind = kinds.validate(query)
    if not isinstance(kind, ChoiceKind):
        return [_ask(index, query, kind, None, backend, options)]
    n = len(kind.options(query))
    return [
        _ask(index, query, kind, order, backend, options)
        for order in orderings(query, n, query.policy.orderings, options.sample_seed)
    ]


def _ask(
    index: int,
    query: Query,
    kind: QueryKind,
    order: tuple[int, ...] | None,
    backend: Backend,
    options: LLMOptions,
) -> Ask:
    mode = prompts.PLAIN
    choices: tuple[str, ...] | None = None
    schema: dict[str, Any] | None = None
    labels: tuple[str, ...] | None = None
    max_tokens = kind.max_tokens
    if isinstance(kind, ChoiceKind):
        assert order is not None  # a choice is always asked in some order
        if options.choose_by_logprobs and backend.supports_logprobs:
            mode = prompts.NUMBER
            labels = tuple(str(i + 1) for i in range(len(order)))
            choices = labels if options.constrained and backend.supports_choices else None
            max_tokens = 5
        elif query.policy.min_confidence is not None:
            mode = prompts.CONFIDENCE
            if options.constrained and backend.supports_json_schema:
                schema = kind.choice_schema(len(order))
        elif options.constrained and backend.supports_choices:
            choices = kind.reply_choices(query, order)
    elif options.constrained and backend.supports_json_schema:
        schema = kind.json_schema(query)
    rendered = prompts.render(query, answer_mode=mode, order=order)
    request = ChatRequest(
        messages=rendered.messages,
        max_tokens=max_tokens,
        temperature=options.temperature,
        seed=options.sample_seed,
        choices=choices,
        json_schema=schema,
        option_labels=labels,
    )
    return Ask(
        index, query, kind, order, rendered.template.id, rendered.template.sha256, request, mode
    )


def decode(ask: Ask, text: str, option_logprobs: Mapping[str, float] | None) -> tuple[Parsed, bool]:
    """The reply's value in *shown* positions (for choices), and whether logprobs were asked
    for but missing (a fallback to parsing the text)."""
    labels = ask.request.option_labels
    if labels:
        scores = {
            lab: option_logprobs[lab]
            for lab in labels
            if option_logprobs and lab in option_logprobs
        }
        if scores:
            best = max(scores, key=lambda lab: scores[lab])
            total = sum(math.exp(v) for v in scores.values())
            return Parsed(labels.index(best), math.exp(scores[best]) / total), False
    return ask.kind.decode(ask.query, text, ask.order), bool(labels)


#: The turn that asks again after a reply that could not be read.
RETRY_PROMPT = (
    "Your reply could not be read. Answer again, exactly in the answer format asked for above, "
    "and nothing else."
)


def needs_retry(ask: Ask, result: ChatResult) -> bool:
    """A reply that nothing constrained (no choices, schema or log-probabilities) and that
    does not decode, to an ask that is not itself a retry."""
    request = ask.request
    constrained = request.choices or request.json_schema is not None or request.option_labels
    if constrained or ask.retry:
        return False
    return decode(ask, result.text, result.option_logprobs)[0].status != OK


def retry_ask(ask: Ask, reply: str) -> Ask:
    """The same question once more: the conversation so far, then :data:`RETRY_PROMPT`."""
    messages = (
        *ask.request.messages,
        ChatMessage("assistant", reply),
        ChatMessage("user", RETRY_PROMPT),
    )
    return dataclasses.replace(
        ask, request=dataclasses.replace(ask.request, messages=messages), retry=True
    )
