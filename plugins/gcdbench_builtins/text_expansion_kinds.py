"""The questions of the two text-expansion methods, and the pieces both methods share.

``keyphrase`` (Viswanathan et al., TACL 2024, arXiv 2307.00524; docs/methods/keyphrase.md) and
``idas`` (De Raedt et al., NLP4ConvAI 2023, arXiv 2305.19783; docs/methods/idas.md) both ask an
LLM to rewrite each text into something shorter that keeps only its category (keyphrases, a
short label), embed that with the run's encoder and cluster the text and its rewrite together.

=================  ==================================================  ====================
kind               payload                                             value
=================  ==================================================  ====================
keyphrases         text, task, demonstrations? ([text, JSON list])     [keyphrase, ...]
summarize-intent   text, task, demonstrations? ([text, label])         label (str)
=================  ==================================================  ====================

``meta``: ``{id: position in the test split, part: "test"}`` (what the oracle reads).

Each kind is registered by the one plugin that asks it (``keyphrase.py`` registers
``keyphrases``, ``idas.py`` registers ``summarize-intent``): a kind registered twice is an error.
Neither kind has a gold judgement: a keyphrase list or a free label is a description, not a
verdict, so the quality report leaves them unscored and the oracle-vs-LLM clustering metrics
are the measure (keyphrase.md §4, idas.md §4).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcdbench.api import ClusterInfo, GcdbenchError
from gcdbench.api.feedback import OK, Answer, Query
from gcdbench.api.parsing import FAILED, Parsed, find_json, parse_labels, strip_fences
from gcdbench.api.prompts import PromptTemplate
from gcdbench.api.query_kind import (
    ANSWER_SECTIONS,
    DEMONSTRATIONS,
    TASK,
    Field,
    GoldView,
    QueryKind,
    exact,
)
from gcdbench.api.toolkit import KMeansFit, fit_kmeans, l2_normalise

TEMPLATES = Path(__file__).parent / "templates"
_META = (Field("id", "int", required=False),)
_PAYLOAD = (Field("text", "str"), TASK, DEMONSTRATIONS)
_PLACEHOLDER = re.compile(r"<[^<>]*>")
#: Labels longer than this are not labels: the model ignored the format (a retry follows).
MAX_LABEL_WORDS = 12


def readable(name: str) -> str:
    """A class key as words: ``card_arrival`` -> ``card arrival`` (what an encoder reads best)."""
    return re.sub(r"[\s_]+", " ", str(name)).strip()


class _OneText(QueryKind):
    """A question about one text: instructions, demonstrations, then the text."""

    payload = _PAYLOAD
    meta = _META
    template_dir = TEMPLATES

    def items(self, payload: Mapping[str, Any]) -> Sequence[str]:
        return [str(payload["text"])]

    def check(self, query: Query) -> None:
        if not str(query.payload["text"]).strip():
            raise GcdbenchError(f"{self.name} query has an empty text; ask about a real one.")


class Keyphrases(_OneText):
    name = "keyphrases"
    description = "keyphrases that describe a text's category (keyphrase expansion clustering)"
    default_template = "keyphrase-v1"
    # Room for max_items short phrases in JSON; replies usually take a third of it.
    max_tokens = 128
    #: The most keyphrases a constrained reply may hold (llama.cpp grammar, response_format).
    max_items = 8

    def json_schema(self, query: Query) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "keyphrases": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": self.max_items,
                }
            },
            "required": ["keyphrases"],
        }

    def decode(self, query: Query, text: str, order: Any = None) -> Parsed:
        """A JSON list (bare or under any key), bullet lines, or one comma-separated line. A
        reply that starts as JSON but does not parse (cut off at the token limit) is a parse
        failure, not a comma-split of its fragments; the template's ``<keyphrase>``
        placeholder echoed back is no keyphrase."""
        body = strip_fences(text)
        if body.startswith(("{", "[")) and find_json(body) is None:
            return FAILED
        parsed = parse_labels(text)
        if parsed.status != OK:
            return parsed
        kept = [k for k in parsed.value if not _PLACEHOLDER.fullmatch(k)]
        return Parsed(kept) if kept else FAILED

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """The gold class name as the single keyphrase: an upper bound no LLM reaches, since
        every text of a class then gets the same keyphrase embedding."""
        y = int(gold.labels(query, [gold.meta(query, "id")])[0])
        return exact([readable(gold.name(y))])


class SummarizeIntent(_OneText):
    name = "summarize-intent"
    description = "a short label summarising a text's intent, demonstrations optional (IDAS)"
    default_template = "idas-v1"
    max_tokens = 24

    def head(self, query: Query, template: PromptTemplate, answer_mode: str) -> str:
        """IDAS asks prototypes zero-shot ("summarise") and every other text with labelled
        neighbours as demonstrations ("label like these"): two instructions, one kind."""
        task = query.payload.get("task", "intent")
        demos = bool(query.payload.get("demonstrations"))
        section = "instructions_demos" if demos and template.has("instructions_demos") else None
        instructions = template.fill(section or "instructions", task=task)
        answer = template.fill(ANSWER_SECTIONS[answer_mode], task=task)
        return "\n".join([instructions, answer])

    def decode(self, query: Query, text: str, order: Any = None) -> Parsed:
        return parse_short_label(text)

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """The gold class name: the label a perfect summariser would write."""
        y = int(gold.labels(query, [gold.meta(query, "id")])[0])
        return exact(readable(gold.name(y)))


def parse_short_label(text: str) -> Parsed:
    """A short label from ``Label: X``, ``"X"``, ``{"label": "X"}`` or a bare first line; a
    parse failure for an empty reply or one longer than :data:`MAX_LABEL_WORDS` words."""
    if not text or not text.strip():
        return FAILED
    data = find_json(text)
    label = ""
    if isinstance(data, dict):
        lowered = {str(k).lower(): v for k, v in data.items()}
        value = lowered.get("label", lowered.get("intent"))
        label = value if isinstance(value, str) else ""
    if not label:
        lines = [line for line in strip_fences(text).splitlines() if line.strip()]
        label = lines[0] if lines else ""
    label = re.sub(r"^\s*(?:label|intent|answer)\s*:\s*", "", label, flags=re.I)
    for _ in range(3):
        label = label.strip().strip("\"'`*[](){}").rstrip(".").strip()
    if not label or len(label.split()) > MAX_LABEL_WORDS:
        return FAILED
    return Parsed(label)


KEYPHRASES = Keyphrases()
SUMMARIZE_INTENT = SummarizeIntent()


# -- pieces both methods share -----------------------------------------------------------------


def keyphrase_demo(keyphrases: Sequence[str]) -> str:
    """How a demonstration's keyphrases appear in the prompt: the JSON the reply should be."""
    return json.dumps({"keyphrases": list(keyphrases)})


def margins(features: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Distance to the second-nearest centre minus distance to the nearest: small for texts
    the encoder alone cannot place (those the LLM is asked about first)."""
    distances = np.sqrt(
        np.maximum(
            (features**2).sum(1)[:, None] - 2 * features @ centers.T + (centers**2).sum(1)[None],
            0.0,
        )
    )
    two = np.sort(distances, axis=1)[:, :2]
    return two[:, 1] - two[:, 0] if two.shape[1] > 1 else np.zeros(len(features))


def pick_texts(
    candidates: np.ndarray,
    limit: int | None,
    how: str,
    margin: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Which of ``candidates`` (test ids) the LLM is asked about: all when ``limit`` is None or
    covers them, else the ``limit`` with the smallest K-means margin (``margin``) or a uniform
    random sample (``random``). Returned in ascending id order."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if limit is None or limit >= len(candidates):
        return np.sort(candidates)
    if how == "margin":
        if margin is None:
            raise GcdbenchError("margin selection needs the K-means margins; pass them.")
        order = np.argsort(margin[candidates], kind="stable")
        chosen = candidates[order[:limit]]
    else:
        chosen = rng.choice(candidates, size=limit, replace=False)
    return np.sort(chosen)


def labeled_exemplars(
    labeled: np.ndarray, labeled_y: np.ndarray, classes: Sequence[int]
) -> dict[int, int]:
    """For each known class in ``classes``, the labeled text nearest its class mean (the most
    typical one): class id -> row in ``labeled``. Classes without labeled texts are skipped."""
    out: dict[int, int] = {}
    unit = l2_normalise(labeled)
    for c in classes:
        rows = np.flatnonzero(labeled_y == c)
        if not len(rows):
            continue
        mean = unit[rows].mean(axis=0)
        out[int(c)] = int(rows[int(np.argmax(unit[rows] @ mean))])
    return out


def kmeans(features: np.ndarray, k: int, seed: int, n_init: int) -> KMeansFit:
    """:func:`fit_kmeans` on float64 rows: scikit-learn computes float32 distances in upcast
    chunks, which made k-means++ on 3,080 BANKING texts 10x slower (measured: 5 s vs 0.5 s
    per initialisation on 1,024-d features)."""
    return fit_kmeans(np.asarray(features, dtype=np.float64), k, seed, n_init=n_init)


def status_counts(answers: Sequence[Answer]) -> dict[str, int]:
    return dict(sorted(Counter(a.status for a in answers).items()))


def name_clusters(
    assignments: np.ndarray, names: Sequence[Sequence[str]], what: str
) -> dict[int, ClusterInfo]:
    """Each cluster named by the most common of its members' ``names`` (a list per text,
    possibly empty), with how many members carry it; clusters whose members have none stay
    unnamed. Ties go to the name seen first, so the naming is deterministic."""
    by_cluster: dict[int, Counter[str]] = {}
    sizes = Counter(int(c) for c in assignments)
    for cluster, own in zip(assignments, names, strict=True):
        counts = by_cluster.setdefault(int(cluster), Counter())
        for name in dict.fromkeys(n.strip().lower() for n in own if n.strip()):
            counts[name] += 1
    out = {}
    for cluster, counts in sorted(by_cluster.items()):
        if not counts:
            continue
        name, count = counts.most_common(1)[0]
        out[cluster] = ClusterInfo(
            name, f"{count} of {sizes[cluster]} members have this {what} (the most common)"
        )
    return out


__all__ = [
    "KEYPHRASES",
    "SUMMARIZE_INTENT",
    "Keyphrases",
    "SummarizeIntent",
    "keyphrase_demo",
    "kmeans",
    "labeled_exemplars",
    "margins",
    "name_clusters",
    "parse_short_label",
    "pick_texts",
    "readable",
    "status_counts",
]
