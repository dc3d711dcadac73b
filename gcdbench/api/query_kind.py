"""Query kinds: the questions a method asks an LLM (or an oracle), as plugins.

A kind is registered through the ``register_query_kinds`` hook by the plugin that asks it,
and owns everything about its question, so a new question needs no change to gcdbench:

* its **fields**: what a method puts in ``Query.payload`` (what the answerer sees) and
  ``Query.meta`` (pool ids only oracles and the quality report read); :meth:`QueryKind.check`
  adds rules that span fields;
* its **prompt templates**: files ``<name>.<family>-v<N>.txt`` in the plugin's own
  ``template_dir`` (see :mod:`gcdbench.api.prompts`), versioned and hashed into every ledger
  key, and how a question **renders** into chat messages;
* its **answer**: the JSON schema a backend that honours one constrains the reply to, the
  strings a backend with a grammar restricts it to (choices), and how a reply **decodes**
  (a tolerant, validated parse everywhere else);
* how the **oracle** answers it from gold labels (:meth:`QueryKind.oracle_answer`, or for a
  :class:`ChoiceKind` the right options), and how the **quality report** judges an answer
  against gold (:meth:`QueryKind.judge`; None where it cannot).

Most questions are choices among options (which text is similar, which label fits, same
or not): subclass :class:`ChoiceKind`; the LLM layer then asks in several option orders,
with confidences or by log-probabilities, as the method's :class:`AskingPolicy` says.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gcdbench.api.feedback import OK, Answer, Query
from gcdbench.api.parsing import Parsed, parse_choice
from gcdbench.api.prompts import (
    CONFIDENCE,
    NUMBER,
    PLAIN,
    YES_NO_SECTIONS,
    PromptTemplate,
    available_templates,
    context_block,
    load_template,
)
from gcdbench.api.task import Gold
from gcdbench.errors import GcdbenchError
from gcdbench.llm.api import ChatMessage

ANSWER_SECTIONS = {PLAIN: "answer", CONFIDENCE: "answer_confidence", NUMBER: "answer_number"}


@dataclass(frozen=True)
class Field:
    """One payload or meta entry: ``type`` is "str", "int", "float", "list[str]",
    "list[int]", "list[pair]" (``[text, label]``) or "list[list[int]]"."""

    name: str
    type: str
    required: bool = True


#: Fields many kinds share: what a category is ("intent", "topic"), and demonstrations.
TASK = Field("task", "str", required=False)
DEMONSTRATIONS = Field("demonstrations", "list[pair]", required=False)


class GoldView:
    """Gold labels as an oracle or the quality report reads them; methods never get one."""

    def __init__(self, gold: Gold) -> None:
        self.gold = gold

    def labels(self, query: Query, ids: Sequence[int]) -> np.ndarray:
        """The gold class ids of pool ids ``ids`` (test ids when ``meta["part"] == "test"``)."""
        part = query.meta.get("part", "train")
        gold_y = self.gold.test_y if part == "test" else self.gold.train_y
        index = np.asarray(list(ids), dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(gold_y)):
            raise GcdbenchError(
                f"{query.kind} query names ids outside the {part} pool (0..{len(gold_y) - 1}); "
                "fix the method's meta."
            )
        return gold_y[index]

    def meta(self, query: Query, key: str) -> Any:
        if key not in query.meta:
            raise GcdbenchError(
                f"the oracle answers {query.kind} from meta[{key!r}] (pool ids), which this "
                "query lacks; the method must pass it."
            )
        return query.meta[key]

    def name(self, y: int) -> str:
        """The readable name of gold class ``y``."""
        key = self.gold.classes[int(y)]
        return str(self.gold.class_names.get(key, key))

    def class_key(self, y: int) -> str:
        return str(self.gold.classes[int(y)])

    def names(self) -> list[str]:
        return [self.name(y) for y in range(len(self.gold.classes))]


class QueryKind(ABC):
    """A question: its fields, templates, rendering, answer decoding and gold reading.

    Subclasses set the class attributes and implement :meth:`decode`; the rest has
    defaults. ``template_dir`` is the folder of the plugin's template files (usually
    ``Path(__file__).parent / "templates"``) and ``default_template`` the version used when
    the asking policy names none (e.g. ``"glean-v1"``).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    payload: ClassVar[tuple[Field, ...]] = ()
    meta: ClassVar[tuple[Field, ...]] = ()
    template_dir: ClassVar[Path]
    default_template: ClassVar[str]
    #: the most tokens a reply may take
    max_tokens: ClassVar[int] = 100

    # -- questions ------------------------------------------------------------------------

    def validate(self, query: Query) -> None:
        """One clear error for a malformed query: unknown or missing fields, wrong types,
        then :meth:`check`."""
        check_fields(self.name, "payload", query.payload, self.payload)
        check_fields(self.name, "meta", query.meta, self.meta)
        self.check(query)

    def check(self, query: Query) -> None:  # noqa: B027 - optional: most kinds need no more
        """Rules spanning several fields; raise :class:`GcdbenchError`."""

    # -- prompts --------------------------------------------------------------------------

    def templates(self) -> list[str]:
        return available_templates(self.template_dir, self.name)

    def template(self, version: str | None = None) -> PromptTemplate:
        return load_template(self.template_dir, self.name, version or self.default_template)

    def render(
        self,
        query: Query,
        template: PromptTemplate,
        *,
        layout: str,
        answer_mode: str,
        order: Sequence[int] | None,
    ) -> tuple[ChatMessage, ...]:
        """System and user messages: the instructions and answer format, the context
        (known names or demonstrations), then one ``subject_line`` per item."""
        p = query.payload
        subject = "\n".join(
            template.fill("subject_line", n=i + 1, text=t) for i, t in enumerate(self.items(p))
        )
        head = self.head(query, template, answer_mode)
        return self.messages(template, [head, *self.body(p, template), subject])

    def items(self, payload: Mapping[str, Any]) -> Sequence[str]:
        """What the default rendering lists one per line: the payload's ``texts``."""
        return list(payload.get("texts", ()))

    def head(self, query: Query, template: PromptTemplate, answer_mode: str) -> str:
        """Instructions, then the answer section for ``answer_mode``."""
        task = query.payload.get("task", "intent")
        section = ANSWER_SECTIONS[answer_mode]
        if not template.has(section):
            raise GcdbenchError(
                f"template {template.id} has no {section!r} section, so it cannot ask for "
                f"a {answer_mode} answer; pick another template or change the asking policy."
            )
        instructions = template.fill("instructions", task=task)
        extra = self.extra_instructions(query, template)
        return "\n".join([instructions, *extra, template.fill(section, task=task)])

    def extra_instructions(self, query: Query, template: PromptTemplate) -> list[str]:
        """Lines after the instructions that depend on the payload (e.g. a target count)."""
        return []

    def body(self, payload: Mapping[str, Any], template: PromptTemplate) -> list[str]:
        """Blocks between the instructions and the subject: known names or demonstrations."""
        return [context_block(template, payload)]

    @staticmethod
    def messages(template: PromptTemplate, blocks: Sequence[str]) -> tuple[ChatMessage, ...]:
        user = "\n\n".join(block for block in blocks if block)
        return (
            ChatMessage("system", template.sections.get("system", "")),
            ChatMessage("user", user),
        )

    # -- answers --------------------------------------------------------------------------

    def json_schema(self, query: Query) -> dict[str, Any] | None:
        """The reply's JSON schema for backends that constrain output to one; None: free text."""
        return None

    @abstractmethod
    def decode(self, query: Query, text: str, order: Sequence[int] | None = None) -> Parsed:
        """The reply's value (status "ok") or a parse failure; never a guess. ``order`` is
        the option order shown, for choices."""

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """The answer a perfect annotator gives, from gold labels."""
        raise GcdbenchError(
            f"query kind {self.name!r} declares no oracle answer; ask it with an LLM, or give "
            "the kind an oracle_answer."
        )

    def judge(self, query: Query, value: Any, gold: GoldView) -> bool | None:
        """Whether ``value`` is right by gold, for the quality report; None: cannot say."""
        return None


class ChoiceKind(QueryKind):
    """A choice among options, answered with the 0-based index of the chosen option (or
    what :meth:`value` maps it to). The LLM layer shows the options numbered, in the orders
    the asking policy asks for, and maps replies back to the query's own order."""

    #: the payload list holding the options, or None when :meth:`options` supplies them
    options_field: ClassVar[str | None] = "options"
    #: a meta list with one entry per option (e.g. each option's pool id), checked for length
    option_meta: ClassVar[str | None] = None
    max_tokens = 50
    #: the answers of a yes/no question about one option (first-token log-probabilities)
    yes_no_labels: ClassVar[tuple[str, str]] = ("Yes", "No")

    def options(self, query: Query) -> list[str]:
        if self.options_field is None:
            raise NotImplementedError(f"{self.name}: override options() or set options_field")
        return [str(o) for o in query.payload[self.options_field]]

    def check(self, query: Query) -> None:
        options = self.options(query)
        if not options:
            raise GcdbenchError(
                f"{self.name} query has no {self.options_field}; give at least one option."
            )
        if self.option_meta is not None and self.option_meta in query.meta:
            per_option = query.meta[self.option_meta]
            if len(per_option) != len(options):
                raise GcdbenchError(
                    f"{self.name} query has {len(options)} options but {len(per_option)} "
                    f"entries in meta.{self.option_meta}; give one per option."
                )

    def shown(self, query: Query, order: Sequence[int]) -> list[str]:
        """The option texts in the order shown."""
        options = self.options(query)
        return [options[j] for j in order]

    @abstractmethod
    def correct_options(self, query: Query, gold: GoldView) -> list[int]:
        """The positions of the options that are right by gold (possibly none)."""

    def value(self, index: int) -> Any:
        """``Answer.value`` for the chosen position; the position itself by default."""
        return index

    def index(self, value: Any) -> int:
        """The inverse of :meth:`value`."""
        return int(value)

    def reply_choices(self, query: Query, order: Sequence[int]) -> tuple[str, ...] | None:
        """The exact replies a backend with a grammar may restrict the answer to, one per
        shown position; None to leave the reply free."""
        return tuple(f"Choice {i + 1}" for i in range(len(order)))

    def shown_labels(self, query: Query, order: Sequence[int]) -> list[str] | None:
        """Option texts a reply may name instead of a number (shown order), or None."""
        return None

    def render(
        self,
        query: Query,
        template: PromptTemplate,
        *,
        layout: str,
        answer_mode: str,
        order: Sequence[int] | None,
    ) -> tuple[ChatMessage, ...]:
        """Instructions, context, the numbered options and the subject; ``official`` puts
        the subject before the options (GLEAN's order), ``cache-friendly`` last, so
        consecutive questions share the longest prefix."""
        p = query.payload
        options = self.options(query)
        order = list(order) if order is not None else list(range(len(options)))
        lines = [
            template.fill("option_line", n=i + 1, text=options[j]) for i, j in enumerate(order)
        ]
        header = template.sections.get("options_header", "")
        options_block = "\n".join([header, *lines] if header else lines)
        subject = template.fill("subject", **self.subject(p))
        head = self.head(query, template, answer_mode)
        context = self.body(p, template)
        if layout == "official":
            return self.messages(template, [head, *context, subject, options_block])
        return self.messages(template, [head, *context, options_block, subject])

    def render_yes_no(
        self, query: Query, template: PromptTemplate, option_index: int
    ) -> tuple[ChatMessage, ...]:
        """A yes/no question about option ``option_index`` alone: instructions and answer
        format (``yes_no_instructions``, ``yes_no_answer``), context and subject first, the
        one option (``yes_no_option``) last, so the questions about a query's options share
        every token before it (llama.cpp's prefix cache) and no option has a position."""
        self.require_yes_no(template)
        p = query.payload
        task = p.get("task", "intent")
        head = "\n".join(
            [
                template.fill("yes_no_instructions", task=task),
                *self.extra_instructions(query, template),
                template.fill("yes_no_answer", task=task),
            ]
        )
        subject = template.fill("subject", **self.subject(p))
        option = template.fill("yes_no_option", text=self.options(query)[option_index], task=task)
        return self.messages(template, [head, *self.body(p, template), subject, option])

    def require_yes_no(self, template: PromptTemplate) -> None:
        """One clear error when ``template`` cannot ask yes/no questions, naming the
        versions of this kind's templates that can."""
        missing = [s for s in YES_NO_SECTIONS if not template.has(s)]
        if not missing:
            return
        able = [
            v for v in self.templates() if all(self.template(v).has(s) for s in YES_NO_SECTIONS)
        ]
        fix = (
            "use " + " or ".join(f"-p prompt_template={v}" for v in able)
            if able
            else f"add a {self.name} template version with {', '.join(YES_NO_SECTIONS)} sections"
        )
        raise GcdbenchError(f"template {template.id} has no {missing[0]!r} section; {fix}.")

    def subject(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Placeholders of the ``subject`` section: ``$query`` by default."""
        return {"query": payload.get("query", payload.get("text", ""))}

    def decode(self, query: Query, text: str, order: Sequence[int] | None = None) -> Parsed:
        """A 0-based *shown* position from "Choice 3", "3", "(c)", JSON or an option's text."""
        n = len(order) if order is not None else len(self.options(query))
        labels = self.shown_labels(query, order or range(n))
        return parse_choice(text, n, labels)

    def choice_schema(self, n: int) -> dict[str, Any]:
        """The JSON reply of a choice asked with a confidence."""
        return {
            "type": "object",
            "properties": {
                "choice": {"type": "integer", "minimum": 1, "maximum": n},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["choice", "confidence"],
        }

    def judge(self, query: Query, value: Any, gold: GoldView) -> bool | None:
        return self.index(value) in self.correct_options(query, gold)


def exact(value: Any) -> Answer:
    """An oracle's answer: certain, status ok."""
    return Answer(value, OK, confidence=1.0)


# -- field checking ---------------------------------------------------------------------------


def check_fields(kind: str, where: str, values: Mapping[str, Any], fields: Sequence[Field]) -> None:
    """Unknown, missing and mistyped fields of a payload or meta, as one clear error."""
    if not isinstance(values, Mapping):
        raise GcdbenchError(f"{kind} query {where} must be a mapping, got {values!r}.")
    known = {f.name: f for f in fields}
    for key in values:
        if key not in known and not (where == "meta" and key == "part"):
            expected = ", ".join(known) or "nothing"
            raise GcdbenchError(
                f"{kind} query {where} has unknown field {key!r}; expected {expected}."
            )
    for f in fields:
        if f.name not in values:
            if f.required:
                raise GcdbenchError(f"{kind} query {where} lacks {f.name!r} ({f.type}); add it.")
            continue
        if not has_type(values[f.name], f.type):
            raise GcdbenchError(
                f"{kind} query {where}.{f.name} must be {f.type}, got "
                f"{_short(values[f.name])}; fix the query."
            )


def has_type(value: Any, type_: str) -> bool:
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
    return all(has_type(v, inner) for v in value)


def _is_np_int(value: Any) -> bool:
    return type(value).__module__ == "numpy" and "int" in type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
