"""The questions TLSA asks (docs/methods/tlsa.md §4), registered from ``tlsa.py``.

=====================  ================================================  ===================
kind                   payload                                           value
=====================  ================================================  ===================
tlsa-name-cluster      texts[str], known_names[str]?, task               one label name
tlsa-rename-groups     groups[[str]], known_names[str]?,                 exactly G names
                       local_examples[[text, label]]?, task
tlsa-verify-members    label, texts[str], other_labels[str]?, task       selected indices
=====================  ================================================  ===================

``meta``: name-cluster ``{ids: [id]}`` (the sampled texts); rename-groups ``{group_ids:
[[id]]}``; verify-members ``{ids: [id], members: [id]}`` (the shown texts, and the cluster's
members whose majority gold class is what "belongs" means). Ids are training-pool positions.

Gold readings (what the oracle answers and how the quality report judges):

* naming: the oracle names the gold class most of the sampled texts have. A model's name is
  judged only when it *is* a gold class name (case, spaces and ``_`` aside): right when it is
  the sample's majority class, wrong when it names another class (a known name given to a
  mostly-novel sample, say); any other name cannot be judged from gold (``None``).
* renaming: the oracle gives each group its majority gold class name; an answer is wrong when
  some name is a gold class name other than its group's majority, right when every name is
  its group's majority, else not judged.
* verification: gold selects the shown texts whose gold class is the majority gold class of
  the cluster's members; an answer is judged right when it agrees with gold on at least
  ``AGREEMENT`` of the shown texts (a whole-answer judgement of a multi-select; exact set
  equality is too strict for 8-36 texts to say anything about a model).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcdbench.api.feedback import Answer, Query
from gcdbench.api.parsing import FAILED, Parsed, find_json, label_key, parse_labels, strip_fences
from gcdbench.api.prompts import PromptTemplate
from gcdbench.api.query_kind import TASK, Field, GoldView, QueryKind, exact

TEMPLATES = Path(__file__).parent / "templates"
FAMILY = "tlsa-v1"
NAME, RENAME, VERIFY = "tlsa-name-cluster", "tlsa-rename-groups", "tlsa-verify-members"
#: The longest name a reply may hold: the prompt asks for at most five words.
MAX_NAME_CHARS = 60
MAX_NAME_WORDS = 8
#: Share of shown texts on which a verification answer must agree with gold to be judged right.
AGREEMENT = 0.8
#: Reply words small models copy back from the format line instead of answering.
_PLACEHOLDERS = {"label", "<label>", "name", "label name", "new label", "category"}


def snake_name(text: str) -> str | None:
    """A reply's label as the paper's names look (lowercase words joined by ``_``), or None
    when it is empty, a format placeholder or longer than a name can be."""
    words = re.findall(r"[a-z0-9]+", str(text).lower())
    name = "_".join(words)
    if not words or len(words) > MAX_NAME_WORDS or label_key(name) in _PLACEHOLDERS:
        return None
    return name


def _majority(ys: Sequence[int]) -> int:
    return int(Counter(int(y) for y in ys).most_common(1)[0][0])


def _gold_name_of(name: str, gold: GoldView) -> int | None:
    """The gold class a label names (by key or readable name), or None."""
    key = label_key(name)
    for y in range(len(gold.gold.classes)):
        if key in (label_key(gold.class_key(y)), label_key(gold.name(y))):
            return y
    return None


class NameCluster(QueryKind):
    name = NAME
    description = "one new label for texts sampled from a novel cluster (TLSA naming, P1)"
    payload = (Field("texts", "list[str]"), Field("known_names", "list[str]", False), TASK)
    meta = (Field("ids", "list[int]", False),)
    template_dir = TEMPLATES
    default_template = FAMILY
    max_tokens = 40

    def json_schema(self, query: Query) -> dict[str, Any]:
        label = {"type": "string", "maxLength": MAX_NAME_CHARS}
        return {"type": "object", "properties": {"label": label}, "required": ["label"]}

    def decode(self, query: Query, text: str, order: Any = None) -> Parsed:
        """``{"label": ...}``, or a bare short line; the name in snake_case."""
        if not text or not text.strip():
            return FAILED
        data = find_json(text)
        raw: Any = None
        if isinstance(data, dict):
            raw = data.get("label", data.get("name"))
        elif not isinstance(data, list):
            lines = strip_fences(text).splitlines()
            raw = re.sub(r"^\s*(label|name)\s*[:=]\s*", "", lines[0], flags=re.I) if lines else ""
        name = snake_name(raw) if isinstance(raw, str) else None
        return Parsed(name) if name else FAILED

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """The gold class name most of the sampled texts have."""
        ys = gold.labels(query, gold.meta(query, "ids"))
        return exact(gold.name(_majority(ys.tolist())))

    def judge(self, query: Query, value: Any, gold: GoldView) -> bool | None:
        named = _gold_name_of(str(value), gold)
        if named is None:
            return None
        return named == _majority(gold.labels(query, gold.meta(query, "ids")).tolist())


class RenameGroups(QueryKind):
    name = RENAME
    description = "exactly G distinct names for G confusable groups of texts (TLSA P2/P3)"
    payload = (
        Field("groups", "list[list[str]]"),
        Field("known_names", "list[str]", False),
        Field("local_examples", "list[pair]", False),
        TASK,
    )
    meta = (Field("group_ids", "list[list[int]]", False),)
    template_dir = TEMPLATES
    default_template = FAMILY
    max_tokens = 200

    def json_schema(self, query: Query) -> dict[str, Any]:
        g = len(query.payload["groups"])
        items = {"type": "string", "maxLength": MAX_NAME_CHARS}
        labels = {"type": "array", "items": items, "minItems": g, "maxItems": g}
        return {"type": "object", "properties": {"labels": labels}, "required": ["labels"]}

    def render(
        self,
        query: Query,
        template: PromptTemplate,
        *,
        layout: str,
        answer_mode: str,
        order: Sequence[int] | None,
    ) -> tuple[Any, ...]:
        """Instructions (with G), known names, the local known labels' examples (mixed
        groups), then each group as a numbered block of texts."""
        p = query.payload
        head = self.head(query, template, answer_mode)
        blocks = [head, *self.body(p, template)]
        examples = p.get("local_examples") or []
        if examples:
            lines = [template.fill("example_line", text=t, label=lab) for t, lab in examples]
            blocks.append("\n".join([template.sections.get("examples_header", ""), *lines]))
        for g, texts in enumerate(p["groups"]):
            lines = [template.fill("subject_line", n=i + 1, text=t) for i, t in enumerate(texts)]
            blocks.append("\n".join([template.fill("group_header", g=g + 1), *lines]))
        return self.messages(template, blocks)

    def extra_instructions(self, query: Query, template: PromptTemplate) -> list[str]:
        return [template.fill("count", count=len(query.payload["groups"]))]

    def decode(self, query: Query, text: str, order: Any = None) -> Parsed:
        """Exactly G distinct snake_case names, else a parse failure (the paper skips it)."""
        parsed = parse_labels(text)
        if parsed.value is None:
            return FAILED
        names = [snake_name(x) for x in parsed.value]
        if any(n is None for n in names) or len(names) != len(query.payload["groups"]):
            return FAILED
        if len({label_key(str(n)) for n in names}) != len(names):
            return FAILED
        return Parsed(names)

    def _majorities(self, query: Query, gold: GoldView) -> list[int]:
        return [
            _majority(gold.labels(query, ids).tolist()) for ids in gold.meta(query, "group_ids")
        ]

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """Each group's majority gold class name (two groups of one class get one name)."""
        return exact([gold.name(y) for y in self._majorities(query, gold)])

    def judge(self, query: Query, value: Any, gold: GoldView) -> bool | None:
        majorities = self._majorities(query, gold)
        named = [_gold_name_of(str(v), gold) for v in value]
        if any(n is not None and n != y for n, y in zip(named, majorities, strict=False)):
            return False
        return True if all(n is not None for n in named) else None


class VerifyMembers(QueryKind):
    name = VERIFY
    description = "which shown texts belong to the target label (TLSA verification, P4)"
    payload = (
        Field("label", "str"),
        Field("texts", "list[str]"),
        Field("other_labels", "list[str]", False),
        TASK,
    )
    meta = (Field("ids", "list[int]", False), Field("members", "list[int]", False))
    template_dir = TEMPLATES
    default_template = FAMILY
    max_tokens = 150

    def json_schema(self, query: Query) -> dict[str, Any]:
        n = len(query.payload["texts"])
        index = {"type": "integer", "minimum": 1, "maximum": max(n, 1)}
        selected = {"type": "array", "items": index, "maxItems": n}
        return {
            "type": "object",
            "properties": {"selected_indices": selected},
            "required": ["selected_indices"],
        }

    def body(self, payload: Mapping[str, Any], template: PromptTemplate) -> list[str]:
        target = template.fill("target", label=payload["label"])
        others = payload.get("other_labels") or []
        if not others:
            return [target]
        return [target, template.fill("others", names=", ".join(others))]

    def decode(self, query: Query, text: str, order: Any = None) -> Parsed:
        """0-based indices, sorted, from ``{"selected_indices": [1-based]}`` or a bare list;
        an index outside the shown texts is a parse failure, an empty list an answer."""
        if not text or not text.strip():
            return FAILED
        data = find_json(text)
        if isinstance(data, dict):
            data = data.get("selected_indices", data.get("indices"))
        if not isinstance(data, list):
            return FAILED
        n = len(query.payload["texts"])
        try:
            picked = {int(x) for x in data}
        except (TypeError, ValueError):
            return FAILED
        if any(i < 1 or i > n for i in picked):
            return FAILED
        return Parsed(sorted(i - 1 for i in picked))

    def _gold(self, query: Query, gold: GoldView) -> list[int]:
        target = _majority(gold.labels(query, gold.meta(query, "members")).tolist())
        shown = gold.labels(query, gold.meta(query, "ids"))
        return [i for i, y in enumerate(shown.tolist()) if y == target]

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """The shown texts of the members' majority gold class."""
        return exact(self._gold(query, gold))

    def judge(self, query: Query, value: Any, gold: GoldView) -> bool | None:
        n = len(query.payload["texts"])
        if not n:
            return None
        right = np.zeros(n, dtype=bool)
        right[self._gold(query, gold)] = True
        said = np.zeros(n, dtype=bool)
        said[[int(i) for i in value]] = True
        return bool((right == said).mean() >= AGREEMENT)


KINDS = (NameCluster(), RenameGroups(), VerifyMembers())
