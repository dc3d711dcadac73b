"""The LLM feedback provider's logic: ledger reuse, offline replay, order consistency,
confidence, log-probabilities, budgets and failure statuses.

``WordOverlapTestDouble`` is a TEST DOUBLE: it stands in for a model in these logic tests
only (it picks the option sharing most words with the query). The end-to-end path through a
real model is in test_feedback_e2e.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import pytest

from gcdbench.api.feedback import AskingPolicy, Query
from gcdbench.errors import GcdbenchError
from gcdbench.feedback import llm_provider
from gcdbench.feedback.accounting import Budget
from gcdbench.feedback.asking import LLMOptions
from gcdbench.feedback.ledger import Ledger
from gcdbench.feedback.llm_provider import LLMFeedbackProvider
from gcdbench.feedback.prompts import render
from gcdbench.llm.api import Backend, ChatRequest, ChatResult


def overlap_reply(request: ChatRequest) -> str:
    text = request.messages[-1].content
    query = re.search(r"^(?:Query|Text): (.*)$", text, re.M).group(1)
    options = re.findall(r"^Choice (\d+): (.*)$", text, re.M)
    words = set(query.lower().split())
    best = max(options, key=lambda o: (len(words & set(o[1].lower().split())), -int(o[0])))
    return f"Choice {best[0]}, Confidence: 0.9"


class WordOverlapTestDouble(Backend):
    """Test double for a model (see the module docstring); counts every call."""

    name = "test-double"

    def __init__(
        self,
        reply: Callable[[ChatRequest], str] = overlap_reply,
        *,
        choices: bool = False,
        schema: bool = False,
        logprobs: Callable[[ChatRequest], dict[str, float] | None] | None = None,
        error: str | None = None,
    ) -> None:
        self.reply = reply
        self.supports_choices = choices
        self.supports_json_schema = schema
        self.supports_logprobs = logprobs is not None
        self.logprobs = logprobs
        self.error = error
        self.calls = 0
        self.requests: list[ChatRequest] = []

    @property
    def identity(self) -> Mapping[str, str]:
        return {"model": "word-overlap", "revision": "1", "api_key": "sk-must-not-be-stored"}

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.calls += 1
        self.requests.extend(requests)
        if self.error:
            return [ChatResult(error=self.error) for _ in requests]
        return [
            ChatResult(
                text=self.reply(r),
                prompt_tokens=len(r.messages[-1].content) // 4,
                completion_tokens=4,
                latency_s=0.01,
                option_logprobs=self.logprobs(r) if self.logprobs else None,
            )
            for r in requests
        ]


def instance_query(i: int) -> Query:
    topics = ["card arrive post", "exchange rate euro", "refund merchant money", "pin change code"]
    anchor = topics[i % 4]
    return Query(
        "select-similar-instance",
        {"query": f"when does my {anchor} {i}", "options": [f"about {t}" for t in topics]},
    )


QUERIES = [instance_query(i) for i in range(8)]


def asked(queries: Sequence[Query], **policy) -> list[Query]:
    """The same questions under another asking policy (as a method's parameters set it)."""
    return [Query(q.kind, q.payload, q.meta, AskingPolicy(**policy)) for q in queries]


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


def provider(backend, ledger, **options) -> LLMFeedbackProvider:
    budget = options.pop("budget", None)
    offline = options.pop("offline", False)
    return LLMFeedbackProvider(
        backend, ledger, LLMOptions(**options), budget=budget, offline=offline
    )


def test_answers_are_right_for_the_double_and_a_rerun_makes_no_backend_call(ledger):
    first = WordOverlapTestDouble()
    answers = provider(first, ledger).answer(QUERIES)
    assert [a.value for a in answers] == [i % 4 for i in range(8)]
    assert first.calls == 1 and len(first.requests) == 8 and not any(a.cached for a in answers)

    second = WordOverlapTestDouble()
    again = provider(second, ledger)
    replay = again.answer(QUERIES)
    assert second.calls == 0
    assert [a.value for a in replay] == [a.value for a in answers] and all(a.cached for a in replay)
    stats = again.describe()["stats"]["total"]
    assert stats["ledger_hits"] == 8 and stats["backend_requests"] == 0
    assert "sk-must-not-be-stored" not in str(again.describe())
    stored = ledger.stats()
    assert stored and all("sk-must-not-be-stored" not in row["identity"] for row in stored)


def test_another_template_or_decoding_is_a_miss(ledger):
    provider(WordOverlapTestDouble(), ledger).answer(QUERIES)
    backend = WordOverlapTestDouble()
    provider(backend, ledger).answer(asked(QUERIES, template="loop-v1"))
    assert len(backend.requests) == 8
    backend = WordOverlapTestDouble()
    provider(backend, ledger, temperature=0.5).answer(QUERIES)
    assert len(backend.requests) == 8
    backend = WordOverlapTestDouble()
    provider(backend, ledger).answer(asked(QUERIES, layout="official"))
    assert len(backend.requests) == 8


def test_offline_replays_and_a_miss_is_one_clear_error(ledger):
    with pytest.raises(GcdbenchError, match=r"8 of 8 questions.*select-similar-instance 8"):
        provider(WordOverlapTestDouble(), ledger, offline=True).answer(QUERIES)
    provider(WordOverlapTestDouble(), ledger).answer(QUERIES[:4])
    backend = WordOverlapTestDouble()
    with pytest.raises(GcdbenchError, match="4 of 8 questions") as info:
        provider(backend, ledger, offline=True).answer(QUERIES)
    assert "\n" not in str(info.value) and backend.calls == 0
    assert len(provider(backend, ledger, offline=True).answer(QUERIES[:4])) == 4


def test_order_consistency_drops_an_always_first_model(ledger):
    always_first = WordOverlapTestDouble(lambda r: "Choice 1")
    p = provider(always_first, ledger)
    answers = p.answer(asked(QUERIES, orderings=2))
    assert all(a.status == "inconsistent" and a.value is None for a in answers)
    kind = p.describe()["stats"]["per_kind"]["select-similar-instance"]
    assert kind["requests"] == 16 and kind["chosen_positions"] == {"1": 16}
    assert kind["statuses"] == {"inconsistent": 8}


def test_order_consistency_keeps_agreeing_answers_in_the_query_order(ledger):
    backend = WordOverlapTestDouble()
    answers = provider(backend, ledger).answer(asked(QUERIES, orderings=3))
    assert [a.value for a in answers] == [i % 4 for i in range(8)]
    assert all(a.ok for a in answers) and len(backend.requests) == 24
    shown = {
        tuple(re.findall(r"^Choice \d+: (.*)$", r.messages[-1].content, re.M))
        for r in backend.requests[:3]
    }
    assert len(shown) == 3  # three different option orders of the same question


def test_parse_failures_are_counted_stored_and_never_option_one(ledger):
    backend = WordOverlapTestDouble(lambda r: "I cannot tell.")
    p = provider(backend, ledger)
    answers = p.answer(QUERIES[:3])
    assert all(a.status == "parse-failure" and a.value is None for a in answers)
    assert p.describe()["stats"]["per_kind"]["select-similar-instance"]["statuses"] == {
        "parse-failure": 3
    }
    again = WordOverlapTestDouble()
    assert [a.status for a in provider(again, ledger).answer(QUERIES[:3])] == ["parse-failure"] * 3
    assert again.calls == 0  # the model's answer is the answer


def test_backend_errors_are_not_stored(ledger):
    p = provider(WordOverlapTestDouble(error="HTTP 503 after 6 retries"), ledger)
    answers = p.answer(QUERIES[:2])
    assert [a.status for a in answers] == ["error", "error"] and answers[0].raw.startswith("HTTP")
    backend = WordOverlapTestDouble()
    assert all(a.ok for a in provider(backend, ledger).answer(QUERIES[:2]))
    assert len(backend.requests) == 2


def test_request_budget_stops_asking_and_says_so(ledger):
    backend = WordOverlapTestDouble()
    p = provider(backend, ledger, budget=Budget(requests=3))
    answers = p.answer(QUERIES)
    assert [a.status for a in answers] == ["ok"] * 3 + ["budget-exhausted"] * 5
    assert len(backend.requests) == 3
    stats = p.describe()["stats"]
    assert stats["budget_exhausted"] and stats["budget"] == "3"
    # Ledger hits are free: the next run with the same budget gets 3 more answers.
    p2 = provider(WordOverlapTestDouble(), ledger, budget=Budget(requests=3))
    assert [a.status for a in p2.answer(QUERIES)].count("ok") == 6


def test_dollar_budget(ledger, monkeypatch):
    monkeypatch.setattr(llm_provider, "_price", lambda identity, result: 0.01)
    backend = WordOverlapTestDouble()
    p = provider(backend, ledger, budget=Budget(usd=0.05))
    answers = p.answer([instance_query(i) for i in range(40)])
    asked = len(backend.requests)
    assert 1 <= asked <= 5 and sum(a.ok for a in answers) == asked
    assert p.describe()["stats"]["total"]["cost_usd"] == pytest.approx(0.01 * asked)


def test_confidence_threshold_flags_but_keeps_the_value(ledger):
    unsure = WordOverlapTestDouble(lambda r: overlap_reply(r).replace("0.9", "0.5"))
    answers = provider(unsure, ledger).answer(asked(QUERIES[:2], min_confidence=0.8))
    assert [(a.status, a.value, a.confidence) for a in answers] == [
        ("low-confidence", 0, 0.5),
        ("low-confidence", 1, 0.5),
    ]
    assert "Confidence: <probability>" in unsure.requests[0].messages[-1].content
    # Another sample seed: the unsure answers above are in the ledger under the same prompts.
    sure = provider(WordOverlapTestDouble(), ledger, sample_seed=1)
    assert all(a.ok for a in sure.answer(asked(QUERIES[:2], min_confidence=0.8)))


def test_logprob_scoring_and_the_fallback_when_none_come_back(ledger):
    backend = WordOverlapTestDouble(lambda r: "4", logprobs=lambda r: {"1": -3.0, "3": -0.2})
    p = provider(backend, ledger)
    [answer] = p.answer(asked(QUERIES[:1], scoring="logprobs"))
    assert answer.value == 2 and answer.confidence == pytest.approx(0.9427, abs=1e-3)
    # Labels missing from the top alternatives get probability 0; the rest sum to 1.
    assert answer.scores == pytest.approx((0.0573, 0.0, 0.9427, 0.0), abs=1e-3)
    assert backend.requests[0].option_labels == ("1", "2", "3", "4")
    assert "number of the choice only" in backend.requests[0].messages[-1].content
    no_logprobs = WordOverlapTestDouble(lambda r: "4", logprobs=lambda r: None)
    p = provider(no_logprobs, ledger, sample_seed=1)
    fallback = p.answer(asked(QUERIES[:1], scoring="logprobs"))[0]
    assert fallback.value == 3 and fallback.scores is None
    assert p.describe()["stats"]["total"]["logprob_fallbacks"] == 1


def test_constraints_go_to_backends_that_support_them(ledger):
    backend = WordOverlapTestDouble(choices=True, schema=True)
    provider(backend, ledger).answer(QUERIES[:1])
    assert backend.requests[-1].choices == ("Choice 1", "Choice 2", "Choice 3", "Choice 4")
    provider(backend, ledger).answer(asked(QUERIES[:1], min_confidence=0.8))
    assert backend.requests[-1].json_schema["required"] == ["choice", "confidence"]
    provider(backend, ledger, constrained=False, sample_seed=3).answer(QUERIES[:1])
    assert backend.requests[-1].choices is None


def test_generative_kinds(ledger):
    queries = [
        Query(
            "characterize-cluster",
            {"texts": ["where is my card", "card not here"], "known_names": ["lost_card"]},
        ),
        Query("label-generation", {"texts": ["refund please", "rate for euro"]}),
        Query(
            "label-merging", {"labels": ["Refund", "refunds", "exchange rate"], "target_count": 2}
        ),
        Query("classify-into-labels", {"text": "my refund", "labels": ["exchange", "refund"]}),
    ]
    replies = {
        "utterances": "(Category Name: card_arrival, Description: Cards that have not arrived)",
        "Propose": '{"labels": ["refund", "exchange rate"]}',
        "Merge": '```json\n{"labels": ["refund", "exchange rate"]}\n```',
        "Classify": "refund",
    }

    def reply(request: ChatRequest) -> str:
        text = request.messages[-1].content
        return next(v for k, v in replies.items() if k in text)

    answers = provider(WordOverlapTestDouble(reply), ledger).answer(queries)
    assert [a.status for a in answers] == ["ok"] * 4
    assert answers[0].value == {
        "name": "card_arrival",
        "description": "Cards that have not arrived",
    }
    assert answers[1].value == answers[2].value == ["refund", "exchange rate"]
    assert answers[3].value == 1


def test_malformed_queries_fail_with_one_line(ledger):
    p = provider(WordOverlapTestDouble(), ledger)
    bad = [
        (Query("select-similar-instance", {"query": "x"}), "lacks 'options'"),
        (Query("select-similar-instance", {"query": "x", "options": "ab"}), "must be list[str]"),
        (Query("select-similar-instance", {"query": "x", "options": []}), "at least one option"),
        (Query("select-simlar-instance", {}), "Did you mean 'select-similar-instance'"),
        (Query("label-merging", {"labels": ["a"], "colour": 1}), "unknown field 'colour'"),
    ]
    for query, needle in bad:
        with pytest.raises(GcdbenchError, match=re.escape(needle)) as info:
            p.answer([query])
        assert "\n" not in str(info.value)


def _common_prefix(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def test_cache_friendly_layout_puts_the_varying_query_last():
    options = ["about card arrival", "about exchange rates", "about refunds"]
    q1 = Query("select-category", {"query": "where is my card", "options": options})
    q2 = Query("select-category", {"query": "what rate do you use", "options": options})
    prompts = {
        layout: [render(q).messages[-1].content for q in asked([q1, q2], layout=layout)]
        for layout in ("cache-friendly", "official")
    }
    shared = {layout: _common_prefix(*texts) for layout, texts in prompts.items()}
    assert shared["cache-friendly"] > shared["official"]
    assert prompts["cache-friendly"][0].rstrip().endswith("Query: where is my card")
    assert prompts["official"][0].rstrip().endswith("Choice 3: about refunds")


def test_asking_policy_options_are_not_backend_options():
    with pytest.raises(GcdbenchError, match=r"order_consistency.*-p order_consistency=2"):
        LLMOptions.split({"order_consistency": "2"})
    with pytest.raises(GcdbenchError, match="prompt_layout"):
        LLMOptions.split({"layout": "official"})
    with pytest.raises(GcdbenchError, match=r"answer_scoring=logprobs"):
        LLMOptions.split({"choose_by_logprobs": "true"})
    with pytest.raises(GcdbenchError, match="min_confidence must be in"):
        AskingPolicy(min_confidence=1.5)


def test_an_unconstrained_reply_that_does_not_parse_is_asked_once_more(ledger):
    def reply(request: ChatRequest) -> str:
        retried = request.messages[-1].content.startswith("Your reply could not be read")
        return overlap_reply(_first_turn(request)) if retried else "?"

    backend = WordOverlapTestDouble(reply)
    p = provider(backend, ledger)
    answers = p.answer(QUERIES[:3])
    assert [a.value for a in answers] == [0, 1, 2] and all(a.ok for a in answers)
    retried = backend.requests[3]
    assert [m.role for m in retried.messages[-2:]] == ["assistant", "user"]
    assert retried.messages[-2].content == "?"
    assert p.describe()["stats"]["per_kind"]["select-similar-instance"]["parse_retries"] == 3
    # Both turns are in the ledger: a re-run replays them without the backend.
    again = WordOverlapTestDouble(lambda r: "unused")
    assert [a.value for a in provider(again, ledger).answer(QUERIES[:3])] == [0, 1, 2]
    assert again.calls == 0
    # A constrained reply always parses, so a backend with choices is never asked twice.
    constrained = WordOverlapTestDouble(lambda r: "?", choices=True)
    provider(constrained, None, sample_seed=5).answer(QUERIES[:1])
    assert len(constrained.requests) == 1


def _first_turn(request: ChatRequest) -> ChatRequest:
    return ChatRequest(messages=request.messages[:2])
