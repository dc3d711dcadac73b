"""Tolerant parsers for model replies: a choice, a name with a description, a list of labels.

Each returns a :class:`Parsed` with status "ok" or "parse-failure". A reply that cannot be
read is a parse failure with ``value=None`` — never option 1 (GLEAN's silent fallback biases
every method towards its top-ranked candidate, docs/methods/glean.md §11.16).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gcdbench.api.feedback import OK, PARSE_FAILURE


@dataclass(frozen=True)
class Parsed:
    value: Any
    confidence: float | None = None
    status: str = OK


FAILED = Parsed(None, None, PARSE_FAILURE)

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_CHOICE_WORD = re.compile(
    r"\b(?:choice|option|answer|candidate|category|label|utterance|sentence)\s*(?:#|no\.?|number)?"
    r"\s*[:=]?\s*\(?(\d+)\)?",
    re.I,
)
_CONFIDENCE = re.compile(r"confidence\s*(?:level|score)?\s*[:=]?\s*(\d*\.?\d+)\s*(%?)", re.I)
_LEADING_NUMBER = re.compile(r"^\s*[\[(]?(\d+)[\])]?(?=$|[\s.,:;)\-])(?!\.\d)")
_LEADING_LETTER = re.compile(r"^\s*\(([A-Za-z])\)|^\s*([A-Za-z])\s*[.):]?\s*$|^\s*([A-Z])[.)]\s")


def strip_fences(text: str) -> str:
    match = _FENCE.search(text)
    return (match.group(1) if match else text).strip()


def find_json(text: str) -> Any:
    """The first JSON object or array in ``text`` (code fences and prose around it allowed)."""
    text = strip_fences(text)
    decoder = json.JSONDecoder()
    for i, char in enumerate(text):
        if char in "{[":
            try:
                return decoder.raw_decode(text[i:])[0]
            except json.JSONDecodeError:
                continue
    return None


def parse_confidence(text: str) -> float | None:
    match = _CONFIDENCE.search(text)
    if not match:
        return None
    value = float(match.group(1))
    if match.group(2) == "%" or 1.0 < value <= 100.0:
        value /= 100.0
    return value if 0.0 <= value <= 1.0 else None


def parse_choice(text: str, n_options: int, labels: Sequence[str] | None = None) -> Parsed:
    """A 0-based option index from "Choice 3, Confidence: 0.9", "3", "(c)", JSON
    ``{"choice": 3, "confidence": 0.9}``, or (with ``labels``) the label's own text."""
    if not text or not text.strip():
        return FAILED
    number, confidence = _json_choice(text)
    if confidence is None:
        confidence = parse_confidence(text)
    body = strip_fences(text)
    if number is None:
        match = _CHOICE_WORD.search(body)
        number = int(match.group(1)) if match else None
    if number is None:
        match = _LEADING_NUMBER.match(body)
        number = int(match.group(1)) if match else None
    if number is None:
        match = _LEADING_LETTER.match(body)
        if match:
            letter = next(g for g in match.groups() if g)
            index = ord(letter.lower()) - ord("a")
            if index < n_options:
                return Parsed(index, confidence)
    if number is None and labels is not None:
        named = match_label(body, labels)
        return Parsed(named, confidence) if named is not None else FAILED
    if number is None or not 1 <= number <= n_options:
        return FAILED
    return Parsed(number - 1, confidence)


def _json_choice(text: str) -> tuple[int | None, float | None]:
    data = find_json(text)
    if not isinstance(data, dict):
        return None, None
    lowered = {str(k).lower(): v for k, v in data.items()}
    confidence = lowered.get("confidence")
    confidence = float(confidence) if isinstance(confidence, int | float) else None
    for key in ("choice", "answer", "option", "index", "label"):
        value = lowered.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value, confidence
        if isinstance(value, str):
            match = re.search(r"\d+", value)
            if match:
                return int(match.group()), confidence
    return None, confidence


def label_key(label: str) -> str:
    """A label as labels are compared: case, and runs of spaces, ``_`` and ``-``, ignored
    (``Card_Arrival`` and ``card arrival`` are one label)."""
    return re.sub(r"[\s_\-]+", " ", str(label).strip().lower()).strip()


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.strip().strip("\"'`.*").lower()).strip()


def match_label(text: str, labels: Sequence[str]) -> int | None:
    """The label the reply names: an exact match (case, spaces and underscores ignored), else
    the single longest label the reply contains."""
    reply = _norm(text.splitlines()[0] if text.strip() else text)
    reply = re.sub(r"^(label|answer|category)\s*:\s*", "", reply)
    normed = [_norm(label) for label in labels]
    if reply in normed:
        return normed.index(reply)
    whole = _norm(text)
    found = [
        i for i, lab in enumerate(normed) if lab and re.search(rf"\b{re.escape(lab)}\b", whole)
    ]
    if not found:
        return None
    longest = max(len(normed[i]) for i in found)
    best = [i for i in found if len(normed[i]) == longest]
    return best[0] if len(best) == 1 else None


_NAME_DESC = re.compile(
    r"(?:category\s*)?name\s*[:=]\s*(?P<name>.+?)\s*(?:[,;|\n]|\s-\s)\s*"
    r"(?:category\s*)?description\s*[:=]\s*(?P<desc>.+)",
    re.I | re.S,
)
_NAME_ONLY = re.compile(r"(?:category\s*)?name\s*[:=]\s*(?P<name>[^\n,;]+)", re.I)


def parse_name_description(text: str) -> Parsed:
    """``{"name", "description"}`` from "(Category Name: X, Description: Y)" (round or square
    brackets or none), "Name: X\\nDescription: Y", JSON, "X: Y", or a short bare phrase."""
    if not text or not text.strip():
        return FAILED
    data = find_json(text)
    if isinstance(data, dict):
        lowered = {re.sub(r"[\s_]", "", str(k).lower()): v for k, v in data.items()}
        name = lowered.get("name") or lowered.get("categoryname") or lowered.get("category")
        if isinstance(name, str) and name.strip():
            desc = lowered.get("description", "")
            return Parsed({"name": _clean(name), "description": _clean(str(desc or ""))})
    body = strip_fences(text)
    match = _NAME_DESC.search(body)
    if match:
        return Parsed({"name": _clean(match["name"]), "description": _clean(match["desc"])})
    match = _NAME_ONLY.search(body)
    if match:
        return Parsed({"name": _clean(match["name"]), "description": ""})
    first = _clean(body.splitlines()[0])
    head, sep, tail = first.partition(":")
    if sep and 0 < len(head.split()) <= 6 and tail.strip():
        return Parsed({"name": _clean(head), "description": _clean(tail)})
    if 0 < len(first.split()) <= 8:
        return Parsed({"name": first, "description": ""})
    return FAILED


def _clean(text: str) -> str:
    text = text.strip()
    for _ in range(2):
        text = text.strip().strip("()[]{}").strip().strip("\"'`*").strip()
    return text.rstrip(".").strip()


_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.+?)\s*$")


def parse_labels(text: str) -> Parsed:
    """A list of distinct labels from JSON (a list, or ``{"labels": [...]}``), bullet or
    numbered lines, or one comma-separated line."""
    if not text or not text.strip():
        return FAILED
    data = find_json(text)
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if isinstance(data, list):
        labels = [str(x.get("name", "") if isinstance(x, dict) else x) for x in data]
    else:
        body = strip_fences(text)
        lines = [m.group(1) for line in body.splitlines() if (m := _LIST_LINE.match(line))]
        if lines:
            labels = lines
        else:
            first = body.splitlines()[0] if body.splitlines() else ""
            labels = first.split(",") if "," in first else ([first] if first.strip() else [])
    out: list[str] = []
    seen: set[str] = set()
    for label in labels:
        label = _clean(label)
        if label and label.lower() not in seen:
            seen.add(label.lower())
            out.append(label)
    return Parsed(out) if out else FAILED
