"""The questions GLEAN asks (docs/methods/glean.md §5), registered with the ``glean`` method;
Loop asks two of them with its own templates (``loop-v1``).

=========================  ==========================================  =======================
kind                       payload                                     value
=========================  ==========================================  =======================
select-similar-instance    query, options[str], task, demonstrations?  option index (0-based)
select-category            query, options[description], task, demos?   option index (0-based)
characterize-cluster       texts[str], known_names[str]?, task         {name, description}
=========================  ==========================================  =======================

``meta``: select-similar-instance ``{anchor: id, options: [id]}``; select-category ``{anchor:
id, option_members: [[id]]}`` (members or representatives of each offered cluster);
characterize-cluster ``{ids: [id]}``. Ids are positions in the training pool, or in the test
split when ``meta["part"] == "test"``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from gcdbench.api.feedback import Answer, Query
from gcdbench.api.parsing import Parsed, parse_name_description
from gcdbench.api.query_kind import (
    DEMONSTRATIONS,
    TASK,
    ChoiceKind,
    Field,
    GoldView,
    QueryKind,
    exact,
)

TEMPLATES = Path(__file__).parent / "templates"
_CHOICE_PAYLOAD = (Field("query", "str"), Field("options", "list[str]"), TASK, DEMONSTRATIONS)


class SelectSimilarInstance(ChoiceKind):
    name = "select-similar-instance"
    description = "which option text has the same category as the query (GLEAN §5.1, Loop)"
    payload = _CHOICE_PAYLOAD
    meta = (Field("anchor", "int", False), Field("options", "list[int]", False))
    option_meta = "options"
    template_dir = TEMPLATES
    default_template = "glean-v1"

    def correct_options(self, query: Query, gold: GoldView) -> list[int]:
        anchor = gold.labels(query, [gold.meta(query, "anchor")])[0]
        options = gold.labels(query, gold.meta(query, "options"))
        return [i for i, y in enumerate(options) if y == anchor]


class SelectCategory(ChoiceKind):
    name = "select-category"
    description = "which category description fits the query (GLEAN §5.3)"
    payload = _CHOICE_PAYLOAD
    meta = (Field("anchor", "int", False), Field("option_members", "list[list[int]]", False))
    option_meta = "option_members"
    template_dir = TEMPLATES
    default_template = "glean-v1"

    def correct_options(self, query: Query, gold: GoldView) -> list[int]:
        """Options whose members' majority gold class is the anchor's."""
        anchor = gold.labels(query, [gold.meta(query, "anchor")])[0]
        majorities = [
            Counter(gold.labels(query, members).tolist()).most_common(1)[0][0]
            if len(members)
            else -1
            for members in gold.meta(query, "option_members")
        ]
        return [i for i, y in enumerate(majorities) if y == anchor]


class CharacterizeCluster(QueryKind):
    name = "characterize-cluster"
    description = "a name and a description for a group of texts (GLEAN §5.2, Loop naming)"
    payload = (Field("texts", "list[str]"), Field("known_names", "list[str]", False), TASK)
    meta = (Field("ids", "list[int]", False),)
    template_dir = TEMPLATES
    default_template = "glean-v1"

    def json_schema(self, query: Query) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
            "required": ["name", "description"],
        }

    def decode(self, query: Query, text: str, order: Any = None) -> Parsed:
        return parse_name_description(text)

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """The group's majority class name, and how many of its texts have it."""
        names = [gold.name(y) for y in gold.labels(query, gold.meta(query, "ids"))]
        name, count = Counter(names).most_common(1)[0]
        description = f"{count} of these {len(names)} texts are {name.replace('_', ' ')}"
        return exact({"name": name, "description": description})


KINDS = (SelectSimilarInstance(), SelectCategory(), CharacterizeCluster())
