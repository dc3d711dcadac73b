"""The query kinds every LLM-in-the-loop method asks, as a small registry of specs.

Each kind says what a method puts in ``Query.payload`` (what the answerer sees), what it may
put in ``Query.meta`` (pool ids that only oracles and diagnostics read) and what
``Answer.value`` holds. :func:`validate` turns a malformed query into one clear error.

=========================  ==========================================  =======================
kind                       payload                                     value
=========================  ==========================================  =======================
select-similar-instance    query, options[str], task, demonstrations?  option index (0-based)
select-category            query, options[description], task, demos?   option index (0-based)
characterize-cluster       texts[str], known_names[str], task          {name, description}
label-generation           texts[str], task, known_labels?             [label, ...]
label-merging              labels[str], task, target_count?            [label, ...]
classify-into-labels       text, labels[str], task                     label index (0-based)
=========================  ==========================================  =======================

``demonstrations`` are ``[text, label]`` pairs (GLEAN's "Task Context"); the two choice
kinds also take ``min_confidence`` and ``orderings`` (how to ask, see ``_ASKING``). ``meta``:
select-similar-instance ``{anchor: id, options: [id]}``; select-category ``{anchor: id,
option_members: [[id]]}`` (members or representatives of each offered cluster);
characterize-cluster and label-generation ``{ids: [id]}``; classify-into-labels ``{id: id}``.
Ids are positions in the training pool, or in the test split when ``meta["part"] == "test"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gcdbench.api.feedback import Query
from gcdbench.errors import GcdbenchError, UnknownNameError

CHOICE = "choice"
NAME_DESCRIPTION = "name-description"
LABELS = "labels"


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # "str", "int", "list[str]", "list[pair]", "list[int]", "list[list[int]]"
    required: bool = True


@dataclass(frozen=True)
class QueryKind:
    name: str
    description: str
    answer: str  # CHOICE, NAME_DESCRIPTION or LABELS
    payload: tuple[Field, ...]
    meta: tuple[Field, ...] = ()
    options_field: str | None = None  # the payload list a CHOICE answer indexes

    def option_count(self, query: Query) -> int:
        return len(query.payload[self.options_field]) if self.options_field else 0


_TASK = Field("task", "str", required=False)
_DEMOS = Field("demonstrations", "list[pair]", required=False)
# A template other than the kind's default, e.g. "loop-v1" (see gcdbench.feedback.prompts).
_TEMPLATE = Field("template", "str", required=False)
# How a method wants a choice asked (its quality filters), beside the provider's own
# --llm-option defaults: ask for a confidence and mark answers below it low-confidence; ask in
# this many option orders and keep only agreeing answers. Oracles ignore both.
_ASKING = (Field("min_confidence", "float", False), Field("orderings", "int", False))
_QUERY_OPTIONS = (
    Field("query", "str"),
    Field("options", "list[str]"),
    _TASK,
    _DEMOS,
    _TEMPLATE,
    *_ASKING,
)

KINDS: dict[str, QueryKind] = {
    k.name: k
    for k in (
        QueryKind(
            "select-similar-instance",
            "which option text has the same category as the query (GLEAN §5.1, Loop)",
            CHOICE,
            _QUERY_OPTIONS,
            (Field("anchor", "int", False), Field("options", "list[int]", False)),
            options_field="options",
        ),
        QueryKind(
            "select-category",
            "which category description fits the query (GLEAN §5.3)",
            CHOICE,
            _QUERY_OPTIONS,
            (Field("anchor", "int", False), Field("option_members", "list[list[int]]", False)),
            options_field="options",
        ),
        QueryKind(
            "characterize-cluster",
            "a name and a description for a group of texts (GLEAN §5.2, Loop naming)",
            NAME_DESCRIPTION,
            (
                Field("texts", "list[str]"),
                Field("known_names", "list[str]", False),
                _TASK,
                _TEMPLATE,
            ),
            (Field("ids", "list[int]", False),),
        ),
        QueryKind(
            "label-generation",
            "propose category labels for a batch of texts (LLM-only clustering)",
            LABELS,
            (
                Field("texts", "list[str]"),
                Field("known_labels", "list[str]", False),
                _TASK,
                _TEMPLATE,
            ),
            (Field("ids", "list[int]", False),),
        ),
        QueryKind(
            "label-merging",
            "merge near-duplicate labels into one list (LLM-only clustering)",
            LABELS,
            (Field("labels", "list[str]"), Field("target_count", "int", False), _TASK, _TEMPLATE),
        ),
        QueryKind(
            "classify-into-labels",
            "which label fits the text (LLM-only clustering)",
            CHOICE,
            (Field("text", "str"), Field("labels", "list[str]"), _TASK, _TEMPLATE),
            (Field("id", "int", False),),
            options_field="labels",
        ),
    )
}


def get_kind(name: str) -> QueryKind:
    if name not in KINDS:
        raise UnknownNameError("query kind", name, KINDS)
    return KINDS[name]


def validate(query: Query) -> QueryKind:
    """The query's kind, after checking its payload and meta; one clear error otherwise."""
    kind = get_kind(query.kind)
    _check_fields(kind, "payload", query.payload, kind.payload)
    _check_fields(kind, "meta", query.meta, kind.meta)
    if kind.answer == CHOICE and kind.option_count(query) < 1:
        raise GcdbenchError(
            f"{kind.name} query has no {kind.options_field}; give at least one option."
        )
    if kind.name == "select-similar-instance" and "options" in query.meta:
        _same_length(kind, query.meta["options"], query.payload["options"], "meta.options")
    if kind.name == "select-category" and "option_members" in query.meta:
        _same_length(kind, query.meta["option_members"], query.payload["options"], "option_members")
    return kind


def _same_length(kind: QueryKind, meta_list: Any, options: Any, what: str) -> None:
    if len(meta_list) != len(options):
        raise GcdbenchError(
            f"{kind.name} query has {len(options)} options but {len(meta_list)} entries in "
            f"{what}; give one per option."
        )


def _check_fields(
    kind: QueryKind, where: str, values: Mapping[str, Any], fields: tuple[Field, ...]
) -> None:
    if not isinstance(values, Mapping):
        raise GcdbenchError(f"{kind.name} query {where} must be a mapping, got {values!r}.")
    known = {f.name: f for f in fields}
    for key in values:
        if key not in known and not (where == "meta" and key == "part"):
            expected = ", ".join(known) or "nothing"
            raise GcdbenchError(
                f"{kind.name} query {where} has unknown field {key!r}; expected {expected}."
            )
    for f in fields:
        if f.name not in values:
            if f.required:
                raise GcdbenchError(
                    f"{kind.name} query {where} lacks {f.name!r} ({f.type}); add it."
                )
            continue
        if not _has_type(values[f.name], f.type):
            raise GcdbenchError(
                f"{kind.name} query {where}.{f.name} must be {f.type}, got "
                f"{_short(values[f.name])}; fix the query."
            )


def _has_type(value: Any, type_: str) -> bool:
    if type_ == "str":
        return isinstance(value, str)
    if type_ == "float":
        return (isinstance(value, int | float) and not isinstance(value, bool)) or _is_np_int(value)
    if type_ == "int":
        return (isinstance(value, int) and not isinstance(value, bool)) or _is_np_int(value)
    if not isinstance(value, list | tuple):
        return False
    inner = type_[len("list[") : -1]
    if inner == "pair":
        return all(
            isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, str) for x in v)
            for v in value
        )
    return all(_has_type(v, inner) for v in value)


def _is_np_int(value: Any) -> bool:
    return type(value).__module__ == "numpy" and "int" in type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
