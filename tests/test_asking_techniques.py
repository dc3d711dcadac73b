"""Asking techniques for small local models (issue 15): the choice read from the option
labels' log-probabilities, position debiasing by averaging over cyclic option orders, one
yes/no question per option, ``Answer.scores``, and the GLEAN / Loop parameters that set them.

The logic tests use ``WordOverlapTestDouble`` (a TEST DOUBLE for a model, from
test_feedback_provider.py) with log-probabilities computed here: a "true" preference for the
option sharing the query's topic, plus, for the position-bias test, a bonus for whatever
option is shown last — the bias measured on the 1.5B model. One test goes through the real
tiny ``llamacpp:smollm2-135m`` to check the path (labels, ledger), not the model.
"""

from __future__ import annotations

import math
import re

import pytest

from gcdbench.api.feedback import AskingPolicy, Query
from gcdbench.api.spec import RunSpec
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.asking import LLMOptions, build_asks, rotations
from gcdbench.feedback.ledger import Ledger
from gcdbench.feedback.llm_provider import LLMFeedbackProvider
from gcdbench.llm.api import ChatRequest
from gcdbench.runner.context import RunContext
from gcdbench.runner.identity import run_identity
from gcdbench.runner.run import resolve_spec
from gcdbench.testing import tiny_task
from gcdbench_builtins.glean import Glean, GleanRounds
from gcdbench_builtins.loop import Loop, LoopRounds
from tests.test_feedback_provider import QUERIES, WordOverlapTestDouble, asked

N = 4  # options per question of QUERIES; question i's right option is i % 4
TRUE_BONUS = 1.5  # the logit of the right option over the others
LAST_BONUS = 2.0  # the position bias: the logit added to the option shown last


def _line(prefix: str, text: str) -> str:
    """What follows ``prefix`` on its line of a rendered prompt."""
    match = re.search(rf"^{prefix}: (.*)$", text, re.M)
    assert match is not None, text
    return match.group(1)


def _query_words(text: str) -> set[str]:
    return set(_line("Query", text).lower().split())


def _overlap(query: set[str], option: str) -> int:
    return len(query & set(option.lower().split()) - {"about"})


def _log_softmax(logits: dict[str, float]) -> dict[str, float]:
    top = max(logits.values())
    norm = top + math.log(sum(math.exp(v - top) for v in logits.values()))
    return {k: v - norm for k, v in logits.items()}


def biased_label_logprobs(request: ChatRequest) -> dict[str, float]:
    """First-token log-probabilities of the labels "1".."n": the right option gets
    TRUE_BONUS, the last shown one LAST_BONUS (both when the right one is last)."""
    text = request.messages[-1].content
    query = _query_words(text)
    shown = re.findall(r"^Choice (\d+): (.*)$", text, re.M)
    best = max(_overlap(query, t) for _, t in shown)
    logits = {
        label: TRUE_BONUS * (_overlap(query, t) == best) + LAST_BONUS * (int(label) == len(shown))
        for label, t in shown
    }
    return _log_softmax(logits)


def yes_no_logprobs(request: ChatRequest) -> dict[str, float]:
    """P(Yes) grows with the candidate's overlap with the query (first token only)."""
    text = request.messages[-1].content
    option = _line("Candidate", text)
    p_yes = 0.15 + 0.2 * _overlap(_query_words(text), option)
    return {"Yes": math.log(p_yes), "No": math.log(1 - p_yes)}


def biased_reply(request: ChatRequest) -> str:
    labels = biased_label_logprobs(request)
    return max(labels, key=lambda label: labels[label])


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


def _provider(backend, ledger, **options) -> LLMFeedbackProvider:
    return LLMFeedbackProvider(backend, ledger, LLMOptions(**options))


def _positions(provider: LLMFeedbackProvider) -> dict[str, int]:
    return provider.describe()["stats"]["per_kind"]["select-similar-instance"]["chosen_positions"]


# -- position debiasing -----------------------------------------------------------------------


def test_rotations_are_cyclic_and_capped_at_n():
    assert rotations(3, 2) == [(0, 1, 2), (1, 2, 0)]
    assert rotations(3, 5) == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    assert rotations(2, 1) == [(0, 1)]


def test_averaging_cyclic_orders_recovers_the_preference_a_single_order_hides(ledger):
    right = [i % N for i in range(len(QUERIES))]
    once = WordOverlapTestDouble(biased_reply, logprobs=biased_label_logprobs)
    p = _provider(once, ledger)
    single = p.answer(asked(QUERIES, scoring="logprobs"))
    # One order: the bias wins, every question gets the last option.
    assert [a.value for a in single] == [N - 1] * len(QUERIES)
    assert sum(a.value == r for a, r in zip(single, right, strict=True)) == 2
    assert _positions(p) == {str(N): len(QUERIES)}

    debiased = WordOverlapTestDouble(biased_reply, logprobs=biased_label_logprobs)
    p = _provider(debiased, ledger, sample_seed=1)
    averaged = p.answer(asked(QUERIES, scoring="logprobs", combine="average", orderings=N))
    assert [a.value for a in averaged] == right and all(a.ok for a in averaged)
    assert len(debiased.requests) == N * len(QUERIES)
    for answer in averaged:
        assert len(answer.scores) == N and sum(answer.scores) == pytest.approx(1.0)
        assert answer.confidence == pytest.approx(max(answer.scores))
        assert answer.scores.index(max(answer.scores)) == answer.value
    # The orders of the first question are its cyclic rotations, options kept whole.
    shown = [
        re.findall(r"^Choice \d+: (.*)$", r.messages[-1].content, re.M)
        for r in debiased.requests[:N]
    ]
    options = QUERIES[0].payload["options"]
    assert shown == [[options[(i + r) % N] for i in range(N)] for r in range(N)]
    # Each order's choice still counts at its shown position (the bias stays visible).
    assert sum(_positions(p).values()) == N * len(QUERIES)


def test_averaging_generated_choices_votes_and_keeps_the_threshold(ledger):
    backend = WordOverlapTestDouble()  # always right: "Choice k, Confidence: 0.9"
    answers = _provider(backend, ledger).answer(asked(QUERIES[:3], combine="average", orderings=3))
    assert [a.value for a in answers] == [0, 1, 2]
    assert [a.scores[a.value] for a in answers] == [1.0, 1.0, 1.0]  # one-hot votes
    # With a stated confidence each vote is softened: 0.9 on the choice, the rest shared.
    strict = asked(QUERIES[:3], combine="average", orderings=3, min_confidence=0.95)
    flagged = _provider(WordOverlapTestDouble(), ledger).answer(strict)
    assert [(a.value, a.status) for a in flagged] == [(i, "low-confidence") for i in range(3)]
    assert flagged[0].scores == pytest.approx((0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3))
    assert flagged[0].confidence == pytest.approx(0.9)


def test_agree_keeps_marking_disagreeing_orders_and_gives_scores_with_logprobs(ledger):
    backend = WordOverlapTestDouble(biased_reply, logprobs=biased_label_logprobs)
    answers = _provider(backend, ledger).answer(asked(QUERIES[:2], scoring="logprobs", orderings=2))
    assert [a.status for a in answers] == ["inconsistent"] * 2
    assert all(a.value is None and sum(a.scores) == pytest.approx(1.0) for a in answers)
    plain = _provider(WordOverlapTestDouble(), ledger).answer(QUERIES[:2])
    assert all(a.ok and a.scores is None for a in plain)  # generated, agreeing: no scores


# -- yes / no per option ----------------------------------------------------------------------


def _yes_no(queries, **policy):
    return asked(queries, scoring="yes-no", template="glean-v2", **policy)


def test_yes_no_asks_each_option_alone_after_a_shared_prefix(ledger):
    backend = WordOverlapTestDouble(lambda r: "Yes", choices=True, logprobs=yes_no_logprobs)
    p = _provider(backend, ledger)
    answers = p.answer(_yes_no(QUERIES[:4]))
    assert len(backend.requests) == N * 4  # n requests per question, however many orders
    for q, query in enumerate(QUERIES[:4]):
        requests = backend.requests[q * N : (q + 1) * N]
        assert all(r.option_labels == ("Yes", "No") == r.choices for r in requests)
        assert len({r.messages[0] for r in requests}) == 1  # the system message
        users = [r.messages[-1].content.rsplit("\n", 1) for r in requests]
        assert len({head for head, _ in users}) == 1  # everything before the option line
        assert [last for _, last in users] == [f"Candidate: {o}" for o in query.payload["options"]]
        assert users[0][0].startswith("Read the Query and the Candidate")
        assert f"Query: {query.payload['query']}" in users[0][0]
    for i, answer in enumerate(answers):
        assert answer.ok and answer.value == i % N
        assert sum(answer.scores) == pytest.approx(1.0)
        assert answer.confidence == pytest.approx(answer.scores[answer.value])
    # Softmax of the log-odds: p_yes 0.75 (three topic words shared) vs 0.15 (none).
    odds = [math.log(0.75 / 0.25)] + [math.log(0.15 / 0.85)] * 3
    expected = [math.exp(o) / sum(math.exp(x) for x in odds) for o in odds]
    assert answers[0].scores == pytest.approx(expected)
    assert _positions(p) == {}  # no positions, none counted


def test_yes_no_ignores_orders_and_fails_clearly_without_its_template_or_labels(ledger):
    backend = WordOverlapTestDouble(lambda r: "Yes", logprobs=yes_no_logprobs)
    answers = _provider(backend, ledger).answer(_yes_no(QUERIES[:1], orderings=3))
    assert len(backend.requests) == N and answers[0].value == 0

    with pytest.raises(GcdbenchError) as info:
        _provider(backend, ledger).answer(asked(QUERIES[:1], scoring="yes-no"))
    message = str(info.value)
    assert "\n" not in message
    assert "template select-similar-instance/glean-v1 has no 'yes_no_instructions'" in message
    assert "-p prompt_template=glean-v2" in message

    # Another sample seed for each: the prompts above are in the ledger.
    nothing = WordOverlapTestDouble(lambda r: "Maybe", logprobs=lambda r: {})
    p = _provider(nothing, ledger, sample_seed=1)
    assert p.answer(_yes_no(QUERIES[:1]))[0].status == "parse-failure"
    half = WordOverlapTestDouble(lambda r: "Yes", logprobs=lambda r: {"Yes": -0.1})
    [answer] = _provider(half, ledger, sample_seed=2).answer(_yes_no(QUERIES[:1]))
    assert answer.ok and all(math.isfinite(s) for s in answer.scores)


# -- the ledger ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        {"scoring": "logprobs", "combine": "average", "orderings": 3},
        {"scoring": "yes-no", "template": "glean-v2"},
    ],
    ids=["logprobs-average", "yes-no"],
)
def test_a_second_run_is_all_ledger_hits_with_identical_answers_and_scores(ledger, policy):
    logprobs = yes_no_logprobs if policy["scoring"] == "yes-no" else biased_label_logprobs
    reply = (lambda r: "Yes") if policy["scoring"] == "yes-no" else biased_reply
    queries = asked(QUERIES, **policy)
    first = _provider(WordOverlapTestDouble(reply, logprobs=logprobs), ledger).answer(queries)
    again = WordOverlapTestDouble(reply, logprobs=logprobs)
    p = _provider(again, ledger)
    replay = p.answer(queries)
    assert again.calls == 0 and all(a.cached for a in replay)
    assert p.describe()["stats"]["total"]["backend_requests"] == 0
    assert [(a.value, a.status, a.confidence, a.scores) for a in replay] == [
        (a.value, a.status, a.confidence, a.scores) for a in first
    ]
    assert all(a.scores is not None for a in first)


# -- policy values, moved options, method parameters, run ids ---------------------------------


@pytest.mark.parametrize(
    ("field", "bad", "choices"),
    [("scoring", "best", "generate, logprobs, yes-no"), ("combine", "vote", "agree, average")],
)
def test_bad_policy_values_are_one_line_errors(field, bad, choices):
    with pytest.raises(GcdbenchError) as info:
        AskingPolicy(**{field: bad})
    assert "\n" not in str(info.value)
    assert repr(bad) in str(info.value) and choices in str(info.value)


def test_choose_by_logprobs_moved_to_the_methods_answer_scoring():
    with pytest.raises(GcdbenchError, match="answer_scoring") as info:
        LLMOptions.split({"choose_by_logprobs": "true"})
    assert "\n" not in str(info.value)
    assert "choose_by_logprobs" not in {f for f in LLMOptions.__dataclass_fields__}


def test_a_backend_without_logprobs_cannot_score_by_them():
    query = asked(QUERIES[:1], scoring="logprobs")[0]
    with pytest.raises(GcdbenchError, match="answer_scoring=generate"):
        build_asks(0, query, WordOverlapTestDouble(), LLMOptions())


def test_glean_and_loop_parameters_are_checked_before_anything_runs():
    with pytest.raises(GcdbenchError, match="answer_scoring"):
        Glean.resolve_params(None, {"answer_scoring": "bogus"})
    with pytest.raises(GcdbenchError, match=r"no 'yes_no_instructions'.*glean-v2"):
        Glean.resolve_params(None, {"answer_scoring": "yes-no"})
    with pytest.raises(GcdbenchError, match="prompt template"):
        Glean.resolve_params(None, {"prompt_template": "glean-v9"})
    with pytest.raises(GcdbenchError, match=r"loop-v1 has no 'yes_no_instructions'"):
        Loop.resolve_params(None, {"answer_scoring": "yes-no"})


def test_glean_and_loop_pass_their_parameters_into_the_asking_policy(tmp_path):
    task, _, _ = tiny_task()
    ctx = RunContext(RunSpec("glean", "tiny", 0.5, 0, 0.5), {}, lambda: None, tmp_path)
    default = GleanRounds(task, ctx, Glean.resolve_params("smoke", {}), Glean(None))
    assert (default.policy.scoring, default.policy.combine, default.policy.template) == (
        "generate",
        "agree",
        None,
    )
    assert default.policy == AskingPolicy(orderings=2, min_confidence=0.8)
    chosen = {"answer_scoring": "yes-no", "order_combine": "average", "prompt_template": "glean-v2"}
    params = Glean.resolve_params("smoke", chosen)
    rounds = GleanRounds(task, ctx, params, Glean(params))
    assert (rounds.policy.scoring, rounds.policy.combine, rounds.policy.template) == (
        "yes-no",
        "average",
        "glean-v2",
    )
    assert rounds.instance_style.policy == rounds.category_style.policy == rounds.policy
    assert {k: rounds.describe()[k] for k in chosen} == chosen
    assert default.describe()["prompt_template"] == "glean-v1"

    loop = LoopRounds(task, ctx, Loop.resolve_params("smoke", {}))
    assert loop.choice_policy == loop.policy == AskingPolicy(template="loop-v1")
    averaged = LoopRounds(
        task, ctx, Loop.resolve_params("smoke", {"order_combine": "average", "options": "3"})
    )
    # Averaging in Loop asks every cyclic order of its |q| candidates; naming is unchanged.
    assert (averaged.choice_policy.orderings, averaged.choice_policy.combine) == (3, "average")
    assert averaged.policy == AskingPolicy(template="loop-v1")


def _run_id(**overrides: str) -> str:
    spec = resolve_spec("glean", "banking", 0.25, 0, llm="oracle", overrides=overrides)
    return run_identity(spec, "split-hash", {"train.tsv": "0" * 64}).run_id


def test_the_asking_parameters_are_part_of_the_run_id():
    default = _run_id()
    assert _run_id(answer_scoring="generate") == default  # the default, spelled out
    assert _run_id(answer_scoring="logprobs") != default
    assert _run_id(order_combine="average") != default
    assert _run_id(prompt_template="glean-v2") != default
    assert _run_id(fusion="true") != default
    assert _run_id(fusion="false") == default


# -- through a real tiny model ---------------------------------------------------------------


def test_logprobs_and_yes_no_through_smollm2(tmp_path):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (the llm or test extra)")
    from gcdbench.llm.resolve import open_backend

    backend = open_backend(
        "llamacpp:smollm2-135m", {"n_ctx": "512", "n_threads": "1", "logprobs": "on"}
    )
    ledger = Ledger(tmp_path / "ledger.sqlite")
    questions = [
        Query(
            "select-similar-instance",
            {
                "query": "when will my new card arrive",
                "options": ["how do I change my PIN", "my card has still not been delivered"],
                "task": "intent",
            },
        ),
        Query(
            "select-category",
            {
                "query": "what rate do you use for euros",
                "options": ["card_arrival: cards not delivered", "exchange_rate: currency rates"],
                "task": "intent",
            },
        ),
    ]
    # One question per scoring (1 + 2 prompts): on a busy 2-core machine each SmolLM2 prompt
    # with logits_all takes seconds (measured), and the path is what is checked here.
    logprobs, yes_no = questions[0], questions[1]
    policies = [
        asked([logprobs], scoring="logprobs")[0],
        asked([yes_no], scoring="yes-no", template="glean-v2")[0],
    ]
    try:
        provider = LLMFeedbackProvider(backend, ledger)
        answers = provider.answer(policies)
        for answer in answers:
            assert answer.status == "ok", answer
            assert len(answer.scores) == 2 and sum(answer.scores) == pytest.approx(1.0)
            assert answer.confidence == pytest.approx(max(answer.scores))
        stats = provider.describe()["stats"]["total"]
        assert stats["backend_requests"] == 1 + 2 and stats["logprob_fallbacks"] == 0
        replay = LLMFeedbackProvider(backend, ledger).answer(policies)
        assert [a.scores for a in replay] == [a.scores for a in answers]
        assert all(a.cached for a in replay)
    finally:
        backend.close()
        ledger.close()
