"""How one query becomes chat requests, and how a reply becomes a value.

Split from :mod:`gcdbench.feedback.llm_provider` so the rendering and decoding rules can be
read (and tested) without the ledger and batching around them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from gcdbench.api.feedback import Query
from gcdbench.api.spec import canonical_json
from gcdbench.errors import GcdbenchError
from gcdbench.feedback import kinds, parsing, prompts
from gcdbench.llm.api import Backend, ChatRequest
from gcdbench.llm.options import FALSE_WORDS, TRUE_WORDS
from gcdbench.util.random import keyed_generator

_MAX_TOKENS = {kinds.CHOICE: 50, kinds.NAME_DESCRIPTION: 100, kinds.LABELS: 300}


@dataclass(frozen=True)
class LLMOptions:
    """The provider's ``--llm-option`` keys; every one changes answers, so all are recorded
    in the run's spec. Other keys go to the backend."""

    order_consistency: int = 1  # ask choice questions in k option orders, keep agreeing ones
    confidence_threshold: float | None = None  # ask for a confidence; below it: low-confidence
    choose_by_logprobs: bool = False  # pick the option label with the highest log-probability
    constrained: bool = True  # restrict the reply (choices / JSON schema) where the backend can
    layout: str = "cache-friendly"  # or "official" (GLEAN's section order)
    temperature: float = 0.0
    sample_seed: int = 0

    @classmethod
    def split(cls, options: Mapping[str, str]) -> tuple[LLMOptions, dict[str, str]]:
        """The provider's options, and the rest (for the backend)."""
        known = {f.name: f for f in fields(cls)}
        mine: dict[str, Any] = {}
        rest: dict[str, str] = {}
        for key, raw in options.items():
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
        opts = cls(**mine)
        if opts.order_consistency < 1:
            raise GcdbenchError("--llm-option order_consistency must be >= 1 (1 = ask once).")
        if opts.layout not in prompts.LAYOUTS:
            raise GcdbenchError(
                f"--llm-option layout={opts.layout!r}: use one of {', '.join(prompts.LAYOUTS)}."
            )
        return opts, rest


def _coerce(key: str, raw: str) -> Any:
    if key in {"order_consistency", "sample_seed"}:
        return int(raw)
    if key in {"confidence_threshold", "temperature"}:
        return None if raw.lower() in {"", "none", "off"} else float(raw)
    if key in {"choose_by_logprobs", "constrained"}:
        if raw.lower() in TRUE_WORDS:
            return True
        if raw.lower() in FALSE_WORDS:
            return False
        raise ValueError(raw)
    return raw


@dataclass(frozen=True)
class Ask:
    """One rendered prompt of a query: ``order[i]`` is the option shown at position i."""

    query_index: int
    query: Query
    kind: kinds.QueryKind
    order: tuple[int, ...] | None
    template_id: str
    template_sha256: str
    request: ChatRequest
    answer_mode: str


def orderings(query: Query, n_options: int, k: int, seed: int) -> list[tuple[int, ...]]:
    """The identity order, then up to k-1 distinct seeded permutations, a function of the
    query's content and the seed only (so a re-run renders the same prompts)."""
    identity = tuple(range(n_options))
    wanted = min(k, math.factorial(n_options) if n_options <= 10 else k)
    content = canonical_json({"kind": query.kind, "payload": dict(query.payload)})
    rng = keyed_generator(seed, content)
    out = [identity]
    if n_options == 2 and wanted > 1:
        return [identity, (1, 0)]
    while len(out) < wanted:
        perm = tuple(int(i) for i in rng.permutation(n_options))
        if perm not in out:
            out.append(perm)
    return out


def build_asks(index: int, query: Query, backend: Backend, options: LLMOptions) -> list[Ask]:
    kind = kinds.validate(query)
    if kind.answer != kinds.CHOICE:
        return [_ask(index, query, kind, None, backend, options)]
    n = kind.option_count(query)
    k = max(options.order_consistency, int(query.payload.get("orderings", 1)))
    return [
        _ask(index, query, kind, order, backend, options)
        for order in orderings(query, n, k, options.sample_seed)
    ]


def confidence_threshold(query: Query, options: LLMOptions) -> float | None:
    """The query's own ``min_confidence`` (a method's filter), else the provider option."""
    wanted = query.payload.get("min_confidence")
    return float(wanted) if wanted is not None else options.confidence_threshold


def _ask(
    index: int,
    query: Query,
    kind: kinds.QueryKind,
    order: tuple[int, ...] | None,
    backend: Backend,
    options: LLMOptions,
) -> Ask:
    mode = prompts.PLAIN
    if kind.answer == kinds.CHOICE:
        if options.choose_by_logprobs and backend.supports_logprobs:
            mode = prompts.NUMBER
        elif confidence_threshold(query, options) is not None:
            mode = prompts.CONFIDENCE
    rendered = prompts.render(query, layout=options.layout, answer_mode=mode, order=order)
    n = len(order) if order is not None else 0
    choices: tuple[str, ...] | None = None
    schema: dict[str, Any] | None = None
    labels: tuple[str, ...] | None = None
    if kind.answer == kinds.CHOICE:
        numbers = tuple(str(i + 1) for i in range(n))
        if mode == prompts.NUMBER:
            labels = numbers
            choices = numbers if options.constrained and backend.supports_choices else None
        elif mode == prompts.PLAIN and options.constrained and backend.supports_choices:
            if kind.name == "classify-into-labels":
                shown = [query.payload["labels"][j] for j in order or ()]
                choices = tuple(dict.fromkeys(shown)) if len(set(shown)) == n else None
            else:
                choices = tuple(f"Choice {i}" for i in numbers)
        elif mode == prompts.CONFIDENCE and options.constrained and backend.supports_json_schema:
            schema = _choice_schema(n)
    elif options.constrained and backend.supports_json_schema:
        schema = _NAME_SCHEMA if kind.answer == kinds.NAME_DESCRIPTION else _LABELS_SCHEMA
    request = ChatRequest(
        messages=rendered.messages,
        max_tokens=5 if mode == prompts.NUMBER else _MAX_TOKENS[kind.answer],
        temperature=options.temperature,
        seed=options.sample_seed,
        choices=choices,
        json_schema=schema,
        option_labels=labels,
    )
    return Ask(
        index, query, kind, order, rendered.template.id, rendered.template.sha256, request, mode
    )


def _choice_schema(n: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "choice": {"type": "integer", "minimum": 1, "maximum": n},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["choice", "confidence"],
    }


_NAME_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
    "required": ["name", "description"],
}
_LABELS_SCHEMA = {
    "type": "object",
    "properties": {"labels": {"type": "array", "items": {"type": "string"}}},
    "required": ["labels"],
}


def decode(
    ask: Ask, text: str, option_logprobs: Mapping[str, float] | None
) -> tuple[parsing.Parsed, bool]:
    """The reply's value in *shown* positions (for choices), and whether logprobs were asked
    for but missing (a fallback to parsing the text)."""
    if ask.kind.answer == kinds.NAME_DESCRIPTION:
        return parsing.parse_name_description(text), False
    if ask.kind.answer == kinds.LABELS:
        return parsing.parse_labels(text), False
    n = len(ask.order or ())
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
            return parsing.Parsed(labels.index(best), math.exp(scores[best]) / total), False
    shown_labels: Sequence[str] | None = None
    if ask.kind.name == "classify-into-labels":
        shown_labels = [ask.query.payload["labels"][j] for j in ask.order or ()]
    return parsing.parse_choice(text, n, shown_labels), bool(labels)
