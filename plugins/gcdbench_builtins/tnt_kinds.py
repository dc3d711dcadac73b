"""The questions TnT-LLM asks (Wan et al., KDD 2024, arXiv 2403.12173; docs/methods/tnt-llm.md
§4), registered by the ``tnt-llm`` method's plugin.

======================  ==================================================  ====================
kind                    payload                                             value
======================  ==================================================  ====================
summarize-for-taxonomy  text, task, summary_words?                          {summary,
                                                                            explanation}
taxonomy-generate       texts[str], taxonomy[pair], max_labels, task,       [{name,
                        name_words?, description_words?                     description}]
taxonomy-update         as taxonomy-generate, critique_words?               as generate
taxonomy-review         as taxonomy-update                                  as generate
assign-to-taxonomy      text, labels[str], descriptions[str]?, task         label index (0-based)
======================  ==================================================  ====================

``taxonomy`` is the current taxonomy as ``[name, description]`` pairs (empty descriptions
allowed; for generate it holds the seed categories, possibly none). ``description_words`` 0
asks for names only; ``critique_words`` 0 asks for no critique. ``meta``:
summarize-for-taxonomy and assign-to-taxonomy ``{id: pool id}``, the taxonomy kinds ``{ids:
[pool id]}`` (ids in the test split when ``meta["part"] == "test"``).

The paper's prompts ask for XML; these ask for JSON (a documented departure, §6), which a
backend with a JSON-schema grammar can enforce, and the decoders below read JSON, truncated
JSON, the paper's XML tags or bullet lines alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gcdbench.api import GcdbenchError
from gcdbench.api.feedback import Answer, Query
from gcdbench.api.parsing import FAILED, Parsed, find_json, label_key, strip_fences
from gcdbench.api.prompts import PromptTemplate
from gcdbench.api.query_kind import TASK, Field, GoldView, QueryKind, exact
from gcdbench_builtins.clustering_kinds import ClassifyIntoLabels

TEMPLATES = Path(__file__).parent / "templates"
FAMILY = "tnt-v1"

SUMMARIZE = "summarize-for-taxonomy"
GENERATE = "taxonomy-generate"
UPDATE = "taxonomy-update"
REVIEW = "taxonomy-review"
ASSIGN = "assign-to-taxonomy"

#: Reference (LangGraph re-implementation) lengths: names ≤ 10 words, descriptions ≤ 30,
#: critiques ("suggestions") ≤ 30, summaries ≤ 20.
NAME_WORDS, DESCRIPTION_WORDS, CRITIQUE_WORDS, SUMMARY_WORDS = 10, 30, 30, 20
#: Characters allowed per word asked for, in a constrained reply (English words average ~6).
_CHARS_PER_WORD = 12
#: A name longer than this many words is not a category name (a sentence the model wrote).
_MAX_NAME_WORDS = 16


# -- parsing ----------------------------------------------------------------------------------

_XML_ITEM = re.compile(
    r"<name>\s*(?P<name>.*?)\s*</name>\s*(?:<description>\s*(?P<desc>.*?)\s*</description>)?",
    re.S | re.I,
)
# Complete "name" (and "description") members of a JSON reply cut off by the token limit.
_JSON_ITEM = re.compile(
    r'"name"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)"'
    r'(?:\s*,\s*"description"\s*:\s*"(?P<desc>(?:[^"\\]|\\.)*)")?',
    re.S,
)
_NUMBERED = re.compile(r"^\s*\d+\s*[.)]\s+")
_PLACEHOLDER = re.compile(r"<[^<>]*>")
_LINE_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(?P<body>.+?)\s*$")
_NAME_KEYS = ("name", "category", "label", "categoryname", "title")
_DESC_KEYS = ("description", "desc", "definition", "explanation")
_LIST_KEYS = ("categories", "taxonomy", "clusters", "labels", "classes")


def _clean(text: str) -> str:
    text = str(text).replace('\\"', '"').strip()
    for _ in range(2):
        text = text.strip().strip("()[]{}").strip().strip("\"'`*").strip()
    return re.sub(r"\s+", " ", text).rstrip(".").strip()


def _entry(name: Any, description: Any = "") -> dict[str, str] | None:
    # "3. Alarm" from a model that numbered its list; "<category name>" copied from the
    # format; "1.1.1.1" (SmolLM2) names nothing: a name needs a letter
    clean = _clean(_NUMBERED.sub("", str(name or "")))
    if (
        not re.search(r"[^\W\d_]", clean)
        or len(clean.split()) > _MAX_NAME_WORDS
        or _PLACEHOLDER.fullmatch(clean)
    ):
        return None
    return {"name": clean, "description": _clean(str(description or ""))}


def _from_item(item: Any) -> dict[str, str] | None:
    if isinstance(item, Mapping):
        keys = {re.sub(r"[\s_]", "", str(k).lower()): v for k, v in item.items()}
        name = next((keys[k] for k in _NAME_KEYS if isinstance(keys.get(k), str)), None)
        desc = next((keys[k] for k in _DESC_KEYS if isinstance(keys.get(k), str)), "")
        return _entry(name, desc) if name else None
    if isinstance(item, str):
        head, sep, tail = item.partition(":")
        if sep and 0 < len(head.split()) <= _MAX_NAME_WORDS and tail.strip():
            return _entry(head, tail)
        return _entry(item)
    if isinstance(item, list | tuple) and item and isinstance(item[0], str):
        return _entry(item[0], item[1] if len(item) > 1 else "")
    return None


def _json_list(data: Any) -> list[Any] | None:
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):
        lowered = {str(k).lower(): v for k, v in data.items()}
        for key in _LIST_KEYS:
            if isinstance(lowered.get(key), list):
                return list(lowered[key])
        return next((list(v) for v in data.values() if isinstance(v, list)), None)
    return None


def parse_taxonomy(text: str) -> Parsed:
    """A list of distinct ``{"name", "description"}`` categories from a JSON reply (an object
    holding a list, or a bare list of objects, ``[name, description]`` pairs or names), the
    complete items of a JSON reply cut off by the token limit, the paper's XML tags
    (``<name>…</name><description>…</description>``) or bullet / numbered lines
    ("- Name: description"). Names are deduplicated case-, space- and underscore-blind;
    nothing found is a parse failure, never an empty taxonomy."""
    if not text or not text.strip():
        return FAILED
    raw: list[dict[str, str] | None] = []
    items = _json_list(find_json(text))
    if items is not None:
        raw = [_from_item(item) for item in items]
    if not any(raw):
        raw = [_entry(m["name"], m["desc"] or "") for m in _JSON_ITEM.finditer(text)]
    if not any(raw):
        raw = [_entry(m["name"], m["desc"] or "") for m in _XML_ITEM.finditer(text)]
    if not any(raw):
        lines = strip_fences(text).splitlines()
        raw = [_from_item(m["body"]) for line in lines if (m := _LINE_ITEM.match(line))]
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for entry in raw:
        if entry is not None and label_key(entry["name"]) not in seen:
            seen.add(label_key(entry["name"]))
            out.append(entry)
    return Parsed(out) if out else FAILED


_SUMMARY_LINE = re.compile(
    r"summary\s*[:=]\s*(?P<summary>.+?)\s*(?:\n\s*explanation\s*[:=]\s*(?P<expl>.+))?$",
    re.I | re.S,
)
_SUMMARY_XML = re.compile(r"<summary>\s*(?P<summary>.*?)\s*</summary>", re.S | re.I)
_EXPLANATION_XML = re.compile(r"<explanation>\s*(?P<expl>.*?)\s*</explanation>", re.S | re.I)


def parse_summary(text: str) -> Parsed:
    """``{"summary", "explanation"}`` from JSON, the paper's XML tags, "Summary: …" lines, or
    a reply's first line."""
    if not text or not text.strip():
        return FAILED
    data = find_json(text)
    if isinstance(data, Mapping):
        lowered = {str(k).lower(): v for k, v in data.items()}
        summary = lowered.get("summary")
        if isinstance(summary, str) and summary.strip():
            expl = lowered.get("explanation", "")
            return Parsed({"summary": _clean(summary), "explanation": _clean(str(expl or ""))})
    xml = _SUMMARY_XML.search(text)
    if xml and xml["summary"].strip():
        expl = _EXPLANATION_XML.search(text)
        return Parsed(
            {"summary": _clean(xml["summary"]), "explanation": _clean(expl["expl"]) if expl else ""}
        )
    body = strip_fences(text)
    match = _SUMMARY_LINE.search(body)
    if match and match["summary"].strip():
        summary = match["summary"].splitlines()[0]
        return Parsed({"summary": _clean(summary), "explanation": _clean(match["expl"] or "")})
    first = next((line for line in body.splitlines() if line.strip()), "")
    return Parsed({"summary": _clean(first), "explanation": ""}) if first.strip() else FAILED


# -- the taxonomy kinds -----------------------------------------------------------------------


def _int(payload: Mapping[str, Any], key: str, default: int) -> int:
    return int(payload.get(key, default))


class _TaxonomyKind(QueryKind):
    """A taxonomy step: a batch of texts and the current taxonomy in, a taxonomy out.

    Rendered as instructions, rules, the current (or seed) taxonomy, the texts, then the
    answer format last, so a small model reads the format right before it answers."""

    payload = (
        Field("texts", "list[str]"),
        Field("taxonomy", "list[pair]"),
        Field("max_labels", "int"),
        TASK,
        Field("name_words", "int", False),
        Field("description_words", "int", False),
        Field("critique_words", "int", False),
    )
    meta = (Field("ids", "list[int]", False),)
    template_dir = TEMPLATES
    default_template = FAMILY
    # 150 categories with 30-word descriptions run to ~8k tokens; a JSON grammar stops the
    # reply when the object closes, and llama.cpp trims the limit to its context.
    max_tokens = 8192
    #: whether the step asks for a critique before the taxonomy (update and review)
    critiques = True
    #: the template section introducing the taxonomy in the prompt
    taxonomy_section = "taxonomy_header"

    def check(self, query: Query) -> None:
        p = query.payload
        if int(p["max_labels"]) < 1:
            raise GcdbenchError(f"{self.name} query needs max_labels >= 1, got {p['max_labels']}.")
        if not p["texts"]:
            raise GcdbenchError(f"{self.name} query has no texts; give the batch.")
        for key in ("name_words", "description_words", "critique_words"):
            if int(p.get(key, 0)) < 0:
                raise GcdbenchError(f"{self.name} query needs {key} >= 0, got {p[key]}.")

    @staticmethod
    def described(payload: Mapping[str, Any]) -> bool:
        return _int(payload, "description_words", DESCRIPTION_WORDS) > 0

    def critique_words(self, payload: Mapping[str, Any]) -> int:
        return _int(payload, "critique_words", CRITIQUE_WORDS) if self.critiques else 0

    def render(
        self,
        query: Query,
        template: PromptTemplate,
        *,
        layout: str,
        answer_mode: str,
        order: Sequence[int] | None,
    ) -> tuple[Any, ...]:
        p = query.payload
        values = self._values(p)
        rules = template.fill("rules", **values)
        if self.described(p):
            rules = "\n".join([rules, template.fill("description_rule", **values)])
        blocks = [template.fill("instructions", **values), rules]
        if p["taxonomy"]:
            lines = [
                template.fill(
                    "taxonomy_line_described" if desc else "taxonomy_line",
                    name=name,
                    description=desc,
                )
                for name, desc in p["taxonomy"]
            ]
            blocks.append("\n".join([template.fill(self.taxonomy_section, **values), *lines]))
        texts = [template.fill("subject_line", n=i + 1, text=t) for i, t in enumerate(p["texts"])]
        blocks.append("\n".join([template.fill("texts_header", **values), *texts]))
        blocks.append(template.fill("answer", format=self._format(p, template), **values))
        return self.messages(template, blocks)

    def _values(self, p: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "task": p.get("task", "intent"),
            "max_labels": p["max_labels"],
            "name_words": _int(p, "name_words", NAME_WORDS),
            "description_words": _int(p, "description_words", DESCRIPTION_WORDS),
            "critique_words": self.critique_words(p),
        }

    def _format(self, p: Mapping[str, Any], template: PromptTemplate) -> str:
        """The reply's JSON shape, as the template words each part."""
        values = self._values(p)
        item = template.fill(
            "format_item_described" if self.described(p) else "format_item", **values
        )
        critique = template.fill("format_critique", **values) if values["critique_words"] else ""
        return "{" + critique + '"categories": [' + item + ", ...]}"

    def json_schema(self, query: Query) -> dict[str, Any]:
        """The reply's shape, bounded: at most ``max_labels`` categories and about 12
        characters per word asked for, so a model that repeats itself (SmolLM2 listed one
        date until its token limit) is stopped by the grammar, not by the context."""
        p = query.payload
        values = self._values(p)
        name = {"type": "string", "maxLength": _CHARS_PER_WORD * values["name_words"]}
        if self.described(p):
            desc = {"type": "string", "maxLength": _CHARS_PER_WORD * values["description_words"]}
            item: dict[str, Any] = {
                "type": "object",
                "properties": {"name": name, "description": desc},
                "required": ["name", "description"],
            }
        else:
            item = name
        properties: dict[str, Any] = {}
        if values["critique_words"]:
            critique = {"type": "string", "maxLength": _CHARS_PER_WORD * values["critique_words"]}
            properties["critique"] = critique
        properties["categories"] = {
            "type": "array",
            "items": item,
            "minItems": 1,
            "maxItems": p["max_labels"],
        }
        return {"type": "object", "properties": properties, "required": list(properties)}

    def decode(self, query: Query, text: str, order: Any = None) -> Parsed:
        return parse_taxonomy(text)

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """The given taxonomy, then the gold class names of the batch's texts not yet in it
        (in order of appearance, empty descriptions), cut at ``max_labels``: an upper bound
        on what any model could propose from this batch."""
        taxonomy = [{"name": n, "description": d} for n, d in query.payload["taxonomy"]]
        seen = {label_key(c["name"]) for c in taxonomy}
        for y in gold.labels(query, gold.meta(query, "ids")):
            name = gold.name(int(y))
            if label_key(name) not in seen:
                seen.add(label_key(name))
                taxonomy.append({"name": name, "description": ""})
        return exact(taxonomy[: int(query.payload["max_labels"])])


class TaxonomyGenerate(_TaxonomyKind):
    name = GENERATE
    description = "propose a taxonomy (names, descriptions) from a first batch (TnT-LLM Phase 1)"
    critiques = False
    taxonomy_section = "seed_header"


class TaxonomyUpdate(_TaxonomyKind):
    name = UPDATE
    description = "critique the taxonomy on a new batch and revise it (TnT-LLM Phase 1)"


class TaxonomyReview(_TaxonomyKind):
    name = REVIEW
    description = "review the final taxonomy on a fresh batch and correct it (TnT-LLM Phase 1)"


# -- summaries --------------------------------------------------------------------------------


class SummarizeText(QueryKind):
    name = SUMMARIZE
    description = "a short summary of one text, for the taxonomy prompts (TnT-LLM Phase 1)"
    payload = (Field("text", "str"), TASK, Field("summary_words", "int", False))
    meta = (Field("id", "int", False),)
    template_dir = TEMPLATES
    default_template = FAMILY
    max_tokens = 120

    def render(
        self,
        query: Query,
        template: PromptTemplate,
        *,
        layout: str,
        answer_mode: str,
        order: Sequence[int] | None,
    ) -> tuple[Any, ...]:
        p = query.payload
        values = {
            "task": p.get("task", "intent"),
            "summary_words": _int(p, "summary_words", SUMMARY_WORDS),
        }
        return self.messages(
            template,
            [
                template.fill("instructions", **values),
                template.fill("subject", text=p["text"]),
                template.fill("answer", **values),
            ],
        )

    def json_schema(self, query: Query) -> dict[str, Any]:
        words = _int(query.payload, "summary_words", SUMMARY_WORDS)
        return {
            "type": "object",
            "properties": {
                "summary": {"type": "string", "maxLength": _CHARS_PER_WORD * words},
                "explanation": {"type": "string", "maxLength": _CHARS_PER_WORD * 30},
            },
            "required": ["summary", "explanation"],
        }

    def decode(self, query: Query, text: str, order: Any = None) -> Parsed:
        return parse_summary(text)

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """The text itself, cut to ``summary_words`` words: gold labels define no better
        summary, and naming the class here would hand the taxonomy steps the answer twice."""
        words = str(query.payload["text"]).split()
        limit = _int(query.payload, "summary_words", SUMMARY_WORDS)
        return exact({"summary": " ".join(words[:limit]), "explanation": ""})


# -- Phase 2: the primary label ---------------------------------------------------------------


class AssignToTaxonomy(ClassifyIntoLabels):
    """``classify-into-labels`` (same gold reading, grammar and label replies) with each
    label's description shown beside it."""

    name = ASSIGN
    description = "which taxonomy category (name and description shown) fits the text (TnT-LLM)"
    payload = (
        Field("text", "str"),
        Field("labels", "list[str]"),
        Field("descriptions", "list[str]", False),
        TASK,
    )
    meta = (Field("id", "int", False),)
    options_field = "labels"
    template_dir = TEMPLATES
    default_template = FAMILY

    def check(self, query: Query) -> None:
        super().check(query)
        descriptions = query.payload.get("descriptions")
        if descriptions is not None and len(descriptions) != len(query.payload["labels"]):
            raise GcdbenchError(
                f"{self.name} query has {len(query.payload['labels'])} labels but "
                f"{len(descriptions)} descriptions; give one per label (empty allowed)."
            )

    def render(
        self,
        query: Query,
        template: PromptTemplate,
        *,
        layout: str,
        answer_mode: str,
        order: Sequence[int] | None,
    ) -> tuple[Any, ...]:
        """As :meth:`ChoiceKind.render`, with each label's description beside it."""
        p = query.payload
        labels = self.options(query)
        descriptions = list(p.get("descriptions") or [""] * len(labels))
        order = list(order) if order is not None else list(range(len(labels)))
        lines = [
            template.fill(
                "option_line_described" if descriptions[j] else "option_line",
                n=i + 1,
                text=labels[j],
                description=descriptions[j],
            )
            for i, j in enumerate(order)
        ]
        options_block = "\n".join([template.sections.get("options_header", ""), *lines]).strip()
        subject = template.fill("subject", **self.subject(p))
        head = self.head(query, template, answer_mode)
        if layout == "official":
            return self.messages(template, [head, subject, options_block])
        return self.messages(template, [head, options_block, subject])


KINDS: tuple[QueryKind, ...] = (
    SummarizeText(),
    TaxonomyGenerate(),
    TaxonomyUpdate(),
    TaxonomyReview(),
    AssignToTaxonomy(),
)
