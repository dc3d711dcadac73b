"""Versioned prompt templates and how a query is rendered into chat messages.

A template is one text file per kind and version, ``templates/<kind>.<family>-v<N>.txt``,
cut into named sections by ``== name ==`` lines (placeholders are ``$task``, ``$text``, …).
Its id (``<kind>/<family>-v<N>``) and the sha256 of its text go into every ledger key and
the run record, so editing a template can never return answers given to the old wording:
change the text, bump the version.

Two layouts put the same sections in different orders:

* ``cache-friendly`` (default): instructions, answer format, demonstrations, options, then the
  query last, so consecutive questions share the longest possible prefix and llama.cpp
  reuses its prefix cache;
* ``official``: GLEAN's order (demonstrations, query, then the options).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from gcdbench.api.feedback import Query
from gcdbench.errors import GcdbenchError, UnknownNameError
from gcdbench.feedback.kinds import get_kind
from gcdbench.llm.api import ChatMessage

TEMPLATE_DIR = Path(__file__).parent / "templates"
LAYOUTS = ("cache-friendly", "official")
PLAIN, CONFIDENCE, NUMBER = "plain", "confidence", "number"  # answer modes

DEFAULT_TEMPLATES = {
    "select-similar-instance": "glean-v1",
    "select-category": "glean-v1",
    "characterize-cluster": "glean-v1",
    "label-generation": "llm-cluster-v1",
    "label-merging": "llm-cluster-v1",
    "classify-into-labels": "llm-cluster-v1",
}


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    sha256: str
    sections: dict[str, str]

    def has(self, section: str) -> bool:
        return section in self.sections

    def fill(self, section: str, **values: object) -> str:
        return Template(self.sections[section]).safe_substitute(
            {k: str(v) for k, v in values.items()}
        )


@dataclass(frozen=True)
class RenderedPrompt:
    template: PromptTemplate
    messages: tuple[ChatMessage, ...]


def available(kind: str) -> list[str]:
    return sorted(p.name[len(kind) + 1 : -4] for p in TEMPLATE_DIR.glob(f"{kind}.*.txt"))


@cache
def load_template(kind: str, version: str | None = None) -> PromptTemplate:
    version = version or DEFAULT_TEMPLATES[kind]
    path = TEMPLATE_DIR / f"{kind}.{version}.txt"
    if not path.is_file():
        raise UnknownNameError(f"prompt template of {kind}", version, available(kind))
    sections = _sections(path.read_text(encoding="utf-8"), path)
    # The hash covers what reaches the model (the sections), not the leading comment lines:
    # editing a comment must not turn every ledger entry of the template into a miss.
    digest = hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()
    return PromptTemplate(f"{kind}/{version}", digest, sections)


def _sections(text: str, path: Path) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("== ") and line.endswith(" =="):
            current = sections.setdefault(line[3:-3].strip(), [])
        elif current is not None:
            current.append(line)
        elif line.strip() and not line.startswith("#"):
            raise GcdbenchError(f"{path}: text before the first '== section ==' line; fix it.")
    return {name: "\n".join(lines).strip("\n") for name, lines in sections.items()}


def render(
    query: Query,
    *,
    layout: str = "cache-friendly",
    answer_mode: str = PLAIN,
    order: Sequence[int] | None = None,
) -> RenderedPrompt:
    """Chat messages for ``query``; ``order`` lists option indices in the order shown."""
    if layout not in LAYOUTS:
        raise UnknownNameError("prompt layout", layout, LAYOUTS)
    template = load_template(query.kind, query.payload.get("template"))
    p = query.payload
    task = p.get("task", "intent")
    instructions = [template.fill("instructions", task=task)]
    if query.kind == "label-merging" and "target_count" in p:
        instructions.append(template.fill("target", count=p["target_count"]))
    answer_section = {PLAIN: "answer", CONFIDENCE: "answer_confidence", NUMBER: "answer_number"}[
        answer_mode
    ]
    if not template.has(answer_section):
        raise GcdbenchError(
            f"template {template.id} has no {answer_section!r} section, so it cannot ask for "
            f"a {answer_mode} answer; pick another template or drop the option."
        )
    instructions.append(template.fill(answer_section, task=task))
    head = "\n".join(instructions)

    context = _context_block(template, p)
    options_field = get_kind(query.kind).options_field
    if options_field is not None:
        options = list(p[options_field])
        order = list(order) if order is not None else list(range(len(options)))
        lines = [
            template.fill("option_line", n=i + 1, text=options[j]) for i, j in enumerate(order)
        ]
        header = template.sections.get("options_header", "")
        options_block = "\n".join([header, *lines] if header else lines)
        subject = template.fill("subject", query=p.get("query", p.get("text", "")))
        if layout == "official":
            body = [head, context, subject, options_block]
        else:
            body = [head, context, options_block, subject]
    else:
        items = p["texts"] if "texts" in p else p["labels"]
        subject = "\n".join(
            template.fill("subject_line", n=i + 1, text=t) for i, t in enumerate(items)
        )
        body = [head, context, subject]
    user = "\n\n".join(part for part in body if part)
    messages = (
        ChatMessage("system", template.sections.get("system", "")),
        ChatMessage("user", user),
    )
    return RenderedPrompt(template, messages)


def _context_block(template: PromptTemplate, p: Mapping[str, Any]) -> str:
    names = p.get("known_names") or p.get("known_labels")
    demos = p.get("demonstrations")
    if names and template.has("context_names"):
        body = template.fill("context_names", names=repr(list(names)))
    elif demos and template.has("context_line"):
        body = "\n".join(template.fill("context_line", text=t, label=lab) for t, lab in demos)
    else:
        return ""
    header = template.sections.get("context_header", "")
    return f"{header}\n{body}" if header else body
