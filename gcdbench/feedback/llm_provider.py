"""The LLM feedback provider: render → ledger lookup → one batched backend call → parse.

Per batch of queries: every query is rendered (k prompts in k option orders, or one yes/no
prompt per option), the ledger answers what it already holds, and the misses go to the backend
in one ``chat`` call (in slices when a dollar budget has to be checked between them). Each
reply goes into the ledger, in its own transaction, as soon as the backend hands it over, so a
run killed mid-batch loses no answer it was sent. Each query's prompts are then combined into
one answer as its asking policy says. Answers that are not usable say why in
``Answer.status``; the run's record counts each status per kind.

A question whose request failed every retry has status "error"; it is counted, never stored,
and asked again next time. With a failure budget (``--llm-option max_failures=N``) the run
stops with one line once more than N questions have ended so, after the batch that crossed
it: an endpoint that is down does not turn a run into a record of errors.
"""

from __future__ import annotations

import contextvars
import dataclasses
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gcdbench.api.feedback import (
    AVERAGE,
    BUDGET_EXHAUSTED,
    ERROR,
    INCONSISTENT,
    LOW_CONFIDENCE,
    OK,
    PARSE_FAILURE,
    YES_NO,
    Answer,
    FeedbackProvider,
    Query,
)
from gcdbench.api.progress import report_answers
from gcdbench.api.prompts import CONFIDENCE
from gcdbench.api.query_kind import ChoiceKind
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.accounting import Budget, FeedbackStats
from gcdbench.feedback.asking import (
    Ask,
    LLMOptions,
    build_asks,
    decode,
    needs_retry,
    retry_ask,
    shown_scores,
    softmax,
    yes_no_log_odds,
)
from gcdbench.feedback.ledger import Entry, Ledger, ledger_key
from gcdbench.llm.api import Backend, ChatRequest, ChatResult
from gcdbench.llm.pricing import cost

_SECRET_WORDS = ("key", "token", "secret", "password")
_DOLLAR_SLICE = 16  # requests per backend call while a dollar budget is being watched


class LLMFeedbackProvider(FeedbackProvider):
    name = "llm"
    description = "answers queries with an LLM backend, through the feedback ledger"
    simulated = False

    def __init__(
        self,
        backend: Backend,
        ledger: Ledger | None,
        options: LLMOptions | None = None,
        *,
        budget: Budget | None = None,
        offline: bool = False,
        run_hash: str = "",
        spec: str = "",
        max_failures: int | None = None,
    ) -> None:
        if offline and ledger is None:
            raise GcdbenchError("--llm-offline replays the ledger, so it needs one; drop it.")
        self.backend = backend
        self.ledger = ledger
        self.options = options or LLMOptions()
        self.offline = offline
        self.run_hash = run_hash
        self.spec = spec
        self.stats = FeedbackStats(budget=budget)
        self.max_failures = max_failures  # None: record every error and go on
        self.failed_questions = 0
        self.templates: dict[str, str] = {}
        # What answers, without anything secret, as ledger keys and records hold it.
        self.identity = {
            "backend": backend.name,
            **{
                k: str(v)
                for k, v in backend.identity.items()
                if not any(word in k.lower() for word in _SECRET_WORDS)
            },
        }

    # -- the batch path ---------------------------------------------------------------------

    def render(self, query: Query) -> list[Ask]:
        return build_asks(0, query, self.backend, self.options)

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        asks = [
            a for i, q in enumerate(queries) for a in build_asks(i, q, self.backend, self.options)
        ]
        replies = self._fetch(asks, len(queries), report=True)
        # A reply nothing constrained that does not parse is asked once more, with the reply
        # and a reminder of the format (a constrained reply always parses). The retry is a
        # request like any other: in the ledger, replayed offline, counted.
        retries = [
            (i, retry_ask(ask, result.text))
            for i, (ask, (source, result)) in enumerate(zip(asks, replies, strict=True))
            if result is not None and result.ok and needs_retry(ask, result)
        ]
        if retries:
            again = self._fetch([ask for _, ask in retries], len(queries), report=False)
            for (i, ask), reply in zip(retries, again, strict=True):
                self.stats.kind(ask.kind.name).parse_retries += 1
                asks[i], replies[i] = ask, reply
        per_query: dict[int, list[tuple[Ask, str, Any]]] = {}
        for ask, (source, result) in zip(asks, replies, strict=True):
            per_query.setdefault(ask.query_index, []).append((ask, source, result))
        answers = []
        for i, query in enumerate(queries):
            answer = self._combine(query, per_query[i])
            stats = self.stats.kind(query.kind)
            stats.queries += 1
            stats.statuses[answer.status] += 1
            answers.append(answer)
        self._spend_failure_budget(answers)
        return answers

    def _spend_failure_budget(self, answers: Sequence[Answer]) -> None:
        """Stop the run once more questions than the budget allows have ended in error.
        Checked after the batch, when every reply it got is already in the ledger."""
        errors = [a for a in answers if a.status == ERROR]
        self.failed_questions += len(errors)
        if self.max_failures is None or self.failed_questions <= self.max_failures:
            return
        where = self.identity.get("host") or self.identity.get("model") or self.backend.name
        last = " ".join(errors[-1].raw.split())[:200] if errors else "in an earlier batch"
        raise GcdbenchError(
            f"{self.failed_questions} questions to {where} ended in error after every retry, "
            f"more than the failure budget --llm-option max_failures={self.max_failures} "
            f"(last error: {last}); answers already received are kept in the ledger and are "
            "not asked again: fix the endpoint and run the same command, or raise the budget, "
            f"e.g. --llm-option max_failures={2 * self.failed_questions}."
        )

    def _fetch(
        self, asks: list[Ask], n_queries: int, *, report: bool
    ) -> list[tuple[str, ChatResult | None]]:
        """Each ask's reply and where it came from ("ledger", "backend", or "refused" with
        None): the ledger first, the misses in one backend call."""
        for ask in asks:
            self.templates[ask.template_id] = ask.template_sha256
        keys = [
            ledger_key(self.identity, a.template_id, a.template_sha256, a.request) for a in asks
        ]
        stored = self.ledger.get_many(keys) if self.ledger is not None else {}
        missing = list(dict.fromkeys(k for k in keys if k not in stored))
        if missing and self.offline:
            self._offline_miss(asks, keys, stored, n_queries)
        arrivals = _Arrivals(asks, keys, stored, report=report)
        fresh, refused = self._ask_backend(asks, keys, missing, arrivals)

        out: list[tuple[str, ChatResult | None]] = []
        seen_hit: set[str] = set()
        for ask, key in zip(asks, keys, strict=True):
            stats = self.stats.kind(ask.kind.name)
            stats.requests += 1
            if key in stored:
                if key not in seen_hit:
                    stats.ledger_hits += 1
                    seen_hit.add(key)
                entry = stored[key]
                result = ChatResult(
                    text=entry.raw_text,
                    prompt_tokens=entry.prompt_tokens,
                    completion_tokens=entry.completion_tokens,
                    option_logprobs=dict(entry.option_logprobs) if entry.option_logprobs else None,
                )
                out.append(("ledger", result))
            elif key in refused:
                out.append(("refused", None))
            else:
                out.append(("backend", fresh[key]))
        return out

    def _ask_backend(
        self, asks: list[Ask], keys: list[str], missing: list[str], arrivals: _Arrivals
    ) -> tuple[dict[str, ChatResult], set[str]]:
        first_ask: dict[str, Ask] = {}
        for ask, key in zip(asks, keys, strict=True):
            first_ask.setdefault(key, ask)
        fresh: dict[str, ChatResult] = {}
        refused: set[str] = set()
        keeper = _Keeper(self, first_ask, arrivals)
        pending = list(missing)
        while pending:
            spent = self.stats.backend_requests
            mean_cost = self.stats.cost_usd / spent if spent else 0.0
            batch = pending[: self._slice_size(len(pending), mean_cost)]
            pending = pending[len(batch) :]
            while batch and not self.stats.allows(len(batch), mean_cost):
                refused.add(batch.pop())
            if not batch:
                refused.update(pending)
                self.stats.budget_exhausted = True
                break
            if refused:
                self.stats.budget_exhausted = True
            results = _chat(self.backend, [first_ask[k].request for k in batch], keeper.on(batch))
            self.stats.backend_batches += 1
            for key, result in zip(batch, results, strict=True):
                fresh[key] = result
                # Accounted here, in request order, so the record's sums do not depend on
                # the order the replies came back in.
                self._account(first_ask[key], result)
            keeper.keep_rest(zip(batch, results, strict=True))
            if refused:
                refused.update(pending)
                break
        return fresh, refused

    def _slice_size(self, pending: int, mean_cost: float) -> int:
        """All misses in one call, unless a dollar budget has to be watched: then one request
        to learn the price, and slices that fit the money left."""
        budget = self.stats.budget
        if budget is None or budget.usd is None:
            return pending
        if not self.stats.backend_requests:
            return 1
        if mean_cost <= 0:
            return min(pending, _DOLLAR_SLICE)
        left = int((budget.usd - self.stats.cost_usd) / mean_cost)
        return max(1, min(pending, _DOLLAR_SLICE, left))

    def _account(self, ask: Ask, result: ChatResult) -> None:
        stats = self.stats.kind(ask.kind.name)
        stats.backend_requests += 1
        stats.prompt_tokens += result.prompt_tokens
        stats.completion_tokens += result.completion_tokens
        stats.latency_s += result.latency_s
        cost = _price(self.identity, result)
        if cost is None:
            stats.cost_unknown_requests += 1
        else:
            stats.cost_usd += cost

    def entry(self, ask: Ask, key: str, result: ChatResult) -> Entry | None:
        """The ledger row for a reply; None for a failed request (asked again next time,
        never stored)."""
        if not result.ok:
            return None
        parsed, _ = decode(ask, result.text, result.option_logprobs)
        return Entry(
            key=key,
            kind=ask.kind.name,
            identity=self.identity,
            template_id=ask.template_id,
            template_sha256=ask.template_sha256,
            raw_text=result.text,
            value=parsed.value,
            status=parsed.status,
            confidence=parsed.confidence,
            option_logprobs=result.option_logprobs,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            latency_s=result.latency_s,
            cost_usd=_price(self.identity, result),
            run_hash=self.run_hash,
        )

    # -- turning k replies into one answer ----------------------------------------------------

    def _combine(self, query: Query, replies: list[tuple[Ask, str, Any]]) -> Answer:
        stats = self.stats.kind(query.kind)
        cached = all(source == "ledger" for _, source, _ in replies)
        raws = [r.text if r is not None else "" for _, _, r in replies]
        raw = " || ".join(raws)
        if any(source == "refused" for _, source, _ in replies):
            return Answer(None, BUDGET_EXHAUSTED, raw, cached=False)
        errors = [r.error for _, _, r in replies if r is not None and not r.ok]
        if errors:
            return Answer(None, ERROR, errors[0] or "", cached=cached)
        kind = replies[0][0].kind
        if isinstance(kind, ChoiceKind):
            return self._choose(query, kind, replies, raw, cached)
        values: list[Any] = []
        confidences: list[float | None] = []
        for ask, _, result in replies:
            parsed, fell_back = decode(ask, result.text, result.option_logprobs)
            stats.logprob_fallbacks += int(fell_back)
            if parsed.status != OK:
                return Answer(None, PARSE_FAILURE, raw, cached=cached)
            values.append(parsed.value)
            confidences.append(parsed.confidence)
        if any(v != values[0] for v in values[1:]):
            return Answer(None, INCONSISTENT, raw, cached=cached)
        return _thresholded(query, values[0], _least(confidences), raw, cached)

    def _choose(
        self,
        query: Query,
        kind: ChoiceKind,
        replies: list[tuple[Ask, str, Any]],
        raw: str,
        cached: bool,
    ) -> Answer:
        """A choice from its prompts: one per option order (or one yes/no prompt per option),
        each decoded and mapped back to the query's own option order, then combined as the
        asking policy says."""
        stats = self.stats.kind(query.kind)
        n = len(kind.options(query))
        if query.policy.scoring == YES_NO:
            odds = [0.0] * n
            for ask, _, result in replies:
                log_odds = yes_no_log_odds(ask, result.option_logprobs)
                if log_odds is None or ask.option is None:  # neither Yes nor No came back
                    stats.logprob_fallbacks += int(log_odds is None)
                    return Answer(None, PARSE_FAILURE, raw, cached=cached)
                odds[ask.option] = log_odds
            # One prompt per option, asked independently: P(option) ∝ exp(log-odds of Yes).
            scores = softmax(odds)
            best = _argmax(scores)
            return _thresholded(query, kind.value(best), scores[best], raw, cached, scores)
        values: list[int] = []
        confidences: list[float | None] = []
        distributions: list[list[float] | None] = []
        for ask, _, result in replies:
            parsed, fell_back = decode(ask, result.text, result.option_logprobs)
            stats.logprob_fallbacks += int(fell_back)
            if parsed.status != OK or ask.order is None:
                return Answer(None, PARSE_FAILURE, raw, cached=cached)
            stats.positions[parsed.value + 1] += 1
            values.append(ask.order[parsed.value])  # back to the query's own order
            confidences.append(parsed.confidence)
            shown = shown_scores(ask, result.option_logprobs)
            if shown is None and query.policy.combine == AVERAGE:
                stated = parsed.confidence if ask.answer_mode == CONFIDENCE else None
                shown = _one_hot(parsed.value, n, stated)
            distributions.append(_in_query_order(shown, ask.order) if shown else None)
        averaged = _mean(distributions)
        if query.policy.combine == AVERAGE and averaged is not None:
            best = _argmax(averaged)
            return _thresholded(query, kind.value(best), averaged[best], raw, cached, averaged)
        kept = tuple(averaged) if averaged is not None else None
        if any(v != values[0] for v in values[1:]):
            return Answer(None, INCONSISTENT, raw, cached=cached, scores=kept)
        return _thresholded(query, kind.value(values[0]), _least(confidences), raw, cached, kept)

    def _offline_miss(
        self, asks: list[Ask], keys: list[str], stored: Mapping[str, Entry], n_queries: int
    ) -> None:
        kinds_missing = Counter(
            a.kind.name for a, k in zip(asks, keys, strict=True) if k not in stored
        )
        missing_queries = len(
            {a.query_index for a, k in zip(asks, keys, strict=True) if k not in stored}
        )
        where = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds_missing.items()))
        raise GcdbenchError(
            f"--llm-offline: {missing_queries} of {n_queries} questions are not in the ledger "
            f"{self.ledger.path if self.ledger else '-'} (missing prompts: {where}); run once "
            "without --llm-offline to ask them, or point --ledger at the ledger that has them."
        )

    def describe(self) -> dict[str, Any]:
        return {
            "provider": self.name,
            "spec": self.spec,
            "simulated": self.simulated,
            "backend": self.identity,
            "templates": dict(sorted(self.templates.items())),
            "options": dataclasses.asdict(self.options),
            "ledger": str(self.ledger.path) if self.ledger is not None else None,
            "offline": self.offline,
            "stats": self.stats.to_dict(),
        }

    def checkpoint_state(self) -> dict[str, Any]:
        # The request and dollar budgets are spent from the stats, the failure budget from
        # failed_questions: restored, both count the questions asked before a resume.
        return {
            "stats": self.stats,
            "templates": self.templates,
            "failed_questions": self.failed_questions,
        }

    def restore_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.stats = state["stats"]
        self.templates = dict(state["templates"])
        self.failed_questions = int(state["failed_questions"])

    def close(self) -> None:
        self.backend.close()
        if self.ledger is not None:
            self.ledger.close()


class _Arrivals:
    """Progress only: which questions of a batch are answered as their prompts come back.
    A question is done when its last prompt is in; one answered wholly from the ledger is
    done, and a ledger hit, before anything is sent."""

    def __init__(
        self,
        asks: Sequence[Ask],
        keys: Sequence[str],
        stored: Mapping[str, Entry],
        *,
        report: bool = True,
    ) -> None:
        self.report = report  # retries of a batch already reported: counted once, not twice
        self.pending: dict[int, set[str]] = defaultdict(set)
        for ask, key in zip(asks, keys, strict=True):
            pending = self.pending[ask.query_index]  # every query gets an entry
            if key not in stored:
                pending.add(key)
        self.waiting_on: dict[str, list[int]] = defaultdict(list)
        for query, pending in self.pending.items():
            for key in pending:
                self.waiting_on[key].append(query)
        cached = sum(not pending for pending in self.pending.values())
        if report:
            report_answers(cached, cached)

    def arrived(self, key: str) -> None:
        done = 0
        for query in self.waiting_on.pop(key, ()):
            pending = self.pending[query]
            pending.discard(key)
            done += not pending
        if self.report:
            report_answers(done)


class _Keeper:
    """Stores each reply in the ledger the moment the backend hands it over (one short
    transaction per answer), and at the end of a backend call those it did not hand over one
    by one. A backend may report from its own thread (an event loop's): one lock serialises
    the callbacks, and progress is reported in the asking thread's context."""

    def __init__(
        self, provider: LLMFeedbackProvider, first_ask: Mapping[str, Ask], arrivals: _Arrivals
    ) -> None:
        self.provider = provider
        self.first_ask = first_ask
        self.arrivals = arrivals
        self.kept: set[str] = set()
        self.lock = threading.Lock()
        # report_answers reads a context variable the asker set; a backend's own thread
        # would not see it, so callbacks run in a copy of the asking thread's context.
        self.context = contextvars.copy_context()

    def on(self, batch: Sequence[str]) -> Callable[..., None]:
        """The callback for one backend call over ``batch`` (keys in request order)."""

        def arrived(index: int, result: ChatResult | None = None) -> None:
            with self.lock:
                self.context.run(self._arrived, batch[index], result)

        return arrived

    def _arrived(self, key: str, result: ChatResult | None) -> None:
        if result is not None:
            self._keep(key, result)
        self.arrivals.arrived(key)

    def keep_rest(self, replies: Iterable[tuple[str, ChatResult]]) -> None:
        """After the call: every reply the backend returned without handing it over first
        (a backend that answers a batch at once), in one transaction."""
        ledger = self.provider.ledger
        if ledger is None:
            return
        entries = []
        with self.lock:
            for key, result in replies:
                if key not in self.kept:
                    self.kept.add(key)
                    entry = self.provider.entry(self.first_ask[key], key, result)
                    entries += [entry] if entry is not None else []
        ledger.put_many(entries)

    def _keep(self, key: str, result: ChatResult) -> None:
        ledger = self.provider.ledger
        if ledger is None or key in self.kept:
            return
        self.kept.add(key)
        entry = self.provider.entry(self.first_ask[key], key, result)
        if entry is not None:
            ledger.put(entry)


def _thresholded(
    query: Query,
    value: Any,
    confidence: float | None,
    raw: str,
    cached: bool,
    scores: Sequence[float] | None = None,
) -> Answer:
    """The answer, "low-confidence" when the policy sets a threshold it does not reach."""
    kept = tuple(scores) if scores is not None else None
    threshold = query.policy.min_confidence
    if threshold is not None and (confidence is None or confidence < threshold):
        return Answer(value, LOW_CONFIDENCE, raw, confidence, cached, kept)
    return Answer(value, OK, raw, confidence, cached, kept)


def _least(confidences: Sequence[float | None]) -> float | None:
    """The lowest of the prompts' confidences; None unless every prompt gave one."""
    known = [c for c in confidences if c is not None]
    return min(known) if known and len(known) == len(confidences) else None


def _argmax(scores: Sequence[float]) -> int:
    """The most probable option; ties go to the lowest index."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def _one_hot(chosen: int, n: int, confidence: float | None) -> list[float]:
    """A generated choice as a distribution over shown positions: all mass on it, or its
    stated confidence on it and the rest shared by the other options."""
    if confidence is None or n == 1:
        return [1.0 if i == chosen else 0.0 for i in range(n)]
    rest = (1.0 - confidence) / (n - 1)
    return [confidence if i == chosen else rest for i in range(n)]


def _in_query_order(shown: Sequence[float], order: Sequence[int]) -> list[float]:
    out = [0.0] * len(order)
    for position, option in enumerate(order):
        out[option] = shown[position]
    return out


def _mean(distributions: Sequence[Sequence[float] | None]) -> list[float] | None:
    """The per-option mean over the orders; None unless every order gave a distribution."""
    if not distributions or any(d is None for d in distributions):
        return None
    rows = [d for d in distributions if d is not None]
    return [sum(column) / len(rows) for column in zip(*rows, strict=True)]


def _chat(
    backend: Backend, requests: Sequence[ChatRequest], on_result: Callable[..., None]
) -> list[ChatResult]:
    """``backend.chat(requests)``, calling ``on_result(i)`` as request i's result is in (one
    by one where the backend can say so), or ``on_result(i, result)`` where the backend hands
    the result over too (the provider then stores it at once). The results are the same."""
    return list(backend.chat_reporting(requests, on_result))


def _price(identity: Mapping[str, str], result: ChatResult) -> float | None:
    return cost(identity, result.prompt_tokens, result.completion_tokens)


__all__ = ["LLMFeedbackProvider", "LLMOptions"]
