"""How one query becomes chat requests, and how a reply becomes a value.

Split from :mod:`gcdbench.feedback.llm_provider` so the rendering and decoding rules can be
read (and tested) without the ledger and batching around them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from gcdbench.api.feedback import AVERAGE, GENERATE, LOGPROBS, OK, YES_NO, Query
from gcdbench.api.parsing import FAILED, Parsed
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
    "choose_by_logprobs": "the method's answer_scoring parameter (-p answer_scoring=logprobs)",
}


@dataclass(frozen=True)
class LLMOptions:
    """The provider's ``--llm-option`` keys: what the backend does with a prompt. Each one
    changes answers, so all are recorded in the run's spec. Other keys go to the backend.
    How a question is asked (option orders, confidences, layout) is the method's
    :class:`~gcdbench.api.feedback.AskingPolicy`, not an option here (reading choices from
    log-probabilities included: the policy's ``scoring``)."""

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
    """One rendered prompt of a query: ``order[i]`` is the option shown at position i; a
    yes/no prompt shows option ``option`` alone (``order`` None)."""

    query_index: int
    query: Query
    kind: QueryKind
    order: tuple[int, ...] | None
    template_id: str
    template_sha256: str
    request: ChatRequest
    answer_mode: str
    retry: bool = False  # asked again after a reply that could not be read
    option: int | None = None  # the one option a yes/no prompt asks about


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


def rotations(n_options: int, k: int) -> list[tuple[int, ...]]:
    """The first k cyclic rotations (at most n): rotation r shows option (i + r) mod n at
    position i, so over n rotations every option sits at every position once — what
    averaging over orders needs to cancel a position bias. Deterministic, no draws."""
    return [tuple((i + r) % n_options for i in range(n_options)) for r in range(min(k, n_options))]


def choice_orders(query: Query, n_options: int, seed: int) -> list[tuple[int, ...]]:
    """The option orders a choice is asked in: cyclic rotations when the orders' answers
    are averaged, else :func:`orderings` (seeded, each with another option first)."""
    if query.policy.combine == AVERAGE:
        return rotations(n_options, query.policy.orderings)
    return orderings(query, n_options, query.policy.orderings, seed)


def build_asks(index: int, query: Query, backend: Backend, options: LLMOptions) -> list[Ask]:
    kind = kinds.validate(query)
    if not isinstance(kind, ChoiceKind):
        return [_ask(index, query, kind, None, backend, options)]
    scoring = query.policy.scoring
    if scoring != GENERATE and not backend.supports_logprobs:
        raise GcdbenchError(
            f"answer scoring {scoring} reads log-probabilities, which the {backend.name} "
            "backend does not return; use -p answer_scoring=generate or another backend."
        )
    n = len(kind.options(query))
    if scoring == YES_NO:
        return [_yes_no_ask(index, query, kind, j, backend, options) for j in range(n)]
    return [
        _ask(index, query, kind, order, backend, options)
        for order in choice_orders(query, n, options.sample_seed)
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
        if query.policy.scoring == LOGPROBS:
            # The confidence is the chosen label's probability: nothing to ask for.
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


def _yes_no_ask(
    index: int, query: Query, kind: ChoiceKind, option: int, backend: Backend, options: LLMOptions
) -> Ask:
    """Whether option ``option`` alone answers the query, read from the log-probabilities
    of the kind's yes/no labels at the first answer token."""
    labels = tuple(kind.yes_no_labels)
    rendered = prompts.render(query, answer_mode=prompts.YES_NO, option=option)
    request = ChatRequest(
        messages=rendered.messages,
        max_tokens=3,
        temperature=options.temperature,
        seed=options.sample_seed,
        choices=labels if options.constrained and backend.supports_choices else None,
        option_labels=labels,
    )
    template = rendered.template
    mode = prompts.YES_NO
    return Ask(index, query, kind, None, template.id, template.sha256, request, mode, option=option)


#: The probability a yes/no label missing from the top alternatives is given at least, so
#: its log-odds stay finite (the label had less than the mass the top list leaves).
_FLOOR = 1e-12


def label_distribution(
    labels: Sequence[str], option_logprobs: Mapping[str, float] | None
) -> list[float] | None:
    """Softmax over the labels' log-probabilities, per label in order; a label missing from
    the top alternatives gets 0 (log-probability -inf). None when none came back."""
    found = {
        lab: option_logprobs[lab] for lab in labels if option_logprobs and lab in option_logprobs
    }
    if not found:
        return None
    top = max(found.values())
    weights = [math.exp(found[lab] - top) if lab in found else 0.0 for lab in labels]
    total = sum(weights)
    return [w / total for w in weights]


def yes_no_log_odds(ask: Ask, option_logprobs: Mapping[str, float] | None) -> float | None:
    """log P(yes) - log P(no) at the first answer token of a yes/no prompt; a label missing
    from the top alternatives gets the probability mass they leave (an upper bound, so the
    log-odds are not overstated). None when neither label came back."""
    yes, no = ask.request.option_labels or ("Yes", "No")
    found = {
        lab: option_logprobs[lab] for lab in (yes, no) if option_logprobs and lab in option_logprobs
    }
    if not found:
        return None
    rest = math.log(max(1.0 - sum(math.exp(v) for v in found.values()), _FLOOR))
    return found.get(yes, rest) - found.get(no, rest)


def softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


def decode(ask: Ask, text: str, option_logprobs: Mapping[str, float] | None) -> tuple[Parsed, bool]:
    """The reply's value in *shown* positions (for choices; True/False for a yes/no prompt,
    with P(yes) as confidence), and whether logprobs were asked for but missing (a fallback
    to parsing the text)."""
    if ask.answer_mode == prompts.YES_NO:
        odds = yes_no_log_odds(ask, option_logprobs)
        if odds is not None:
            return Parsed(odds >= 0, 1.0 / (1.0 + math.exp(-odds))), False
        return _yes_no_text(ask, text), True
    labels = ask.request.option_labels
    if labels:
        shown = label_distribution(labels, option_logprobs)
        if shown is not None:
            best = max(range(len(shown)), key=lambda i: shown[i])  # ties: the first
            return Parsed(best, shown[best]), False
    return ask.kind.decode(ask.query, text, ask.order), bool(labels)


def _yes_no_text(ask: Ask, text: str) -> Parsed:
    """A yes/no reply read from its text (no log-probabilities came back)."""
    yes, no = ask.request.option_labels or ("Yes", "No")
    word = text.strip().lower()
    if word.startswith(yes.lower()):
        return Parsed(True)
    if word.startswith(no.lower()):
        return Parsed(False)
    return FAILED


def shown_scores(ask: Ask, option_logprobs: Mapping[str, float] | None) -> list[float] | None:
    """Per shown position, the probability of each option label (``logprobs`` scoring);
    None when the prompt did not ask for labels or none came back."""
    labels = ask.request.option_labels
    if not labels or ask.answer_mode == prompts.YES_NO:
        return None
    return label_distribution(labels, option_logprobs)


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
