"""Versioned prompt templates, shipped by the plugin that registers a query kind.

A template is one text file per kind and version, ``<kind>.<family>-v<N>.txt`` in the
kind's ``template_dir``, cut into named sections by ``== name ==`` lines (placeholders are
``$task``, ``$text``, …; ``#`` lines before the first section are comments). Its id
(``<kind>/<family>-v<N>``) and the sha256 of its sections go into every ledger key and the
run record, so editing a template can never return answers given to the old wording:
change the text, bump the version.

Two layouts put a choice question's sections in different orders: ``cache-friendly``
(default: instructions, answer format, demonstrations, options, then the query last, so
consecutive questions share the longest prefix and llama.cpp reuses its prefix cache) and
``official`` (GLEAN's order: demonstrations, query, then the options). A yes/no question
about one option (answer mode ``yes-no``) puts the instructions, answer format,
demonstrations and query first and the one option last, whatever the layout, so the n
questions about a query's n options share everything but their last line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from gcdbench.api.feedback import LAYOUTS
from gcdbench.errors import GcdbenchError, UnknownNameError

__all__ = [
    "CONFIDENCE",
    "LAYOUTS",
    "NUMBER",
    "PLAIN",
    "YES_NO",
    "YES_NO_SECTIONS",
    "PromptTemplate",
    "load_template",
]

#: How a choice is asked to be answered: the option's label, with a confidence, or a bare
#: number (read from log-probabilities). Each is a template section (see query_kind).
#: ``yes-no`` asks about one option at a time (``yes_no_*`` sections).
PLAIN, CONFIDENCE, NUMBER, YES_NO = "plain", "confidence", "number", "yes-no"
#: The sections a template needs to ask yes/no questions about single options.
YES_NO_SECTIONS = ("yes_no_instructions", "yes_no_answer", "yes_no_option")


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


def available_templates(template_dir: Path, kind: str) -> list[str]:
    return sorted(p.name[len(kind) + 1 : -4] for p in template_dir.glob(f"{kind}.*.txt"))


@cache
def load_template(template_dir: Path, kind: str, version: str) -> PromptTemplate:
    path = template_dir / f"{kind}.{version}.txt"
    if not _is_file(path):
        raise UnknownNameError(
            f"prompt template of {kind}", version, available_templates(template_dir, kind)
        )
    sections = _sections(path.read_text(encoding="utf-8"), path)
    # The hash covers what reaches the model (the sections), not the leading comment lines:
    # editing a comment must not turn every ledger entry of the template into a miss.
    digest = hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()
    return PromptTemplate(f"{kind}/{version}", digest, sections)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, but False where the name cannot even be looked up (longer than a
    file name may be): such a version names no template either."""
    try:
        return path.is_file()
    except OSError:
        return False


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


def context_block(template: PromptTemplate, payload: Mapping[str, Any]) -> str:
    """Known category names (``context_names``) or demonstrations (``context_line`` per
    ``[text, label]`` pair) under an optional ``context_header``; empty when neither."""
    names = payload.get("known_names") or payload.get("known_labels")
    demos = payload.get("demonstrations")
    if names and template.has("context_names"):
        body = template.fill("context_names", names=repr(list(names)))
    elif demos and template.has("context_line"):
        body = "\n".join(template.fill("context_line", text=t, label=lab) for t, lab in demos)
    else:
        return ""
    header = template.sections.get("context_header", "")
    return f"{header}\n{body}" if header else body
