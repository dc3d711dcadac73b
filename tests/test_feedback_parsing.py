"""The tolerant parsers on replies shaped like the ones real models give."""

from __future__ import annotations

import pytest

from gcdbench.api.parsing import parse_choice, parse_labels, parse_name_description

CHOICES = [
    ("Choice 3, Confidence: 0.9", 5, 2, 0.9),
    ("Choice 2", 5, 1, None),
    ("choice 5, confidence: 1", 5, 4, 1.0),
    ("3", 5, 2, None),
    ("3.", 5, 2, None),
    (" 4) ", 5, 3, None),
    ("(c)", 5, 2, None),
    ("C", 5, 2, None),
    ("B. because it is about cards", 5, 1, None),
    ('{"choice": 2, "confidence": 0.75}', 5, 1, 0.75),
    ('```json\n{"choice": "Choice 4", "confidence": 0.6}\n```', 5, 3, 0.6),
    ('{"answer": "Choice 1"}', 2, 0, None),
    ("The answer is Choice 2. Confidence: 85%", 5, 1, 0.85),
    ("Option 1, Confidence: 0.95", 5, 0, 0.95),
    ("Choice: 2, Confidence: .7", 5, 1, 0.7),
    ("**Choice 4**, Confidence: 0.8", 5, 3, 0.8),
    ("[2]", 5, 1, None),
]


@pytest.mark.parametrize(("text", "n", "value", "confidence"), CHOICES)
def test_choice_replies(text, n, value, confidence):
    parsed = parse_choice(text, n)
    assert (parsed.status, parsed.value) == ("ok", value)
    assert parsed.confidence == (pytest.approx(confidence) if confidence is not None else None)


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("", 5),
        ("   ", 5),
        ("I am not sure which one fits.", 5),
        ("Choice 7, Confidence: 0.9", 5),  # out of range is a failure, never a clamp
        ("0", 5),
        ("0.9", 5),
        ("(z)", 5),
        ("Neither of them", 2),
    ],
)
def test_unreadable_choices_fail_and_never_default_to_the_first(text, n):
    parsed = parse_choice(text, n)
    assert parsed.status == "parse-failure" and parsed.value is None


@pytest.mark.parametrize(
    ("text", "labels", "value"),
    [
        ("card_arrival", ["lost_card", "card_arrival"], 1),
        ("Card arrival", ["lost_card", "card_arrival"], 1),
        ("Label: exchange rate", ["exchange_rate", "refund"], 0),
        ("The text is about a refund request.", ["exchange_rate", "refund"], 1),
        ("2", ["exchange_rate", "refund"], 1),
    ],
)
def test_classification_replies_name_the_label(text, labels, value):
    assert parse_choice(text, len(labels), labels).value == value


def test_a_reply_naming_two_labels_equally_is_ambiguous():
    assert parse_choice("refund or top up", 2, ["refund", "top up"]).status == "parse-failure"


NAMES = [
    (
        "(Category Name: pending_transfer, Description: Inquiries about transfers that are "
        "still pending)",
        "pending_transfer",
        "Inquiries about transfers that are still pending",
    ),
    (
        "[Category Name: card arrival, Description: When will my card come?]",
        "card arrival",
        "When will my card come?",
    ),
    (
        "Category Name: Refunds\nDescription: Asking for money back.",
        "Refunds",
        "Asking for money back",
    ),
    ("Name: Lost card - Description: reporting a lost card", "Lost card", "reporting a lost card"),
    (
        '{"name": "top_up_failed", "description": "Top-ups that did not go through"}',
        "top_up_failed",
        "Top-ups that did not go through",
    ),
    (
        "Card Status Inquiry: This category involves asking about the status of a card.",
        "Card Status Inquiry",
        "This category involves asking about the status of a card",
    ),
    ("Exchange rates", "Exchange rates", ""),
    ("Category Name: Cash withdrawal", "Cash withdrawal", ""),
]


@pytest.mark.parametrize(("text", "name", "description"), NAMES)
def test_name_and_description_replies(text, name, description):
    parsed = parse_name_description(text)
    assert parsed.status == "ok"
    assert parsed.value == {"name": name, "description": description}


def test_a_long_unstructured_reply_is_not_a_name():
    text = "I think these utterances are all about various things that customers want to do"
    assert parse_name_description(text).status == "parse-failure"


LABELS = [
    ('{"labels": ["card arrival", "lost card"]}', ["card arrival", "lost card"]),
    ('["refund", "Refund", "exchange rate"]', ["refund", "exchange rate"]),
    ('Here you go:\n```json\n["a", "b"]\n```', ["a", "b"]),
    ("- card arrival\n- lost card\n- pin change", ["card arrival", "lost card", "pin change"]),
    ("1. refund\n2) top up failed", ["refund", "top up failed"]),
    ("refund, top up, exchange rate", ["refund", "top up", "exchange rate"]),
    ('[{"name": "a"}, {"name": "b"}]', ["a", "b"]),
]


@pytest.mark.parametrize(("text", "labels"), LABELS)
def test_label_lists(text, labels):
    parsed = parse_labels(text)
    assert parsed.status == "ok" and parsed.value == labels


@pytest.mark.parametrize("text", ["", '{"labels": []}', "[]"])
def test_empty_label_lists_fail(text):
    assert parse_labels(text).status == "parse-failure"
