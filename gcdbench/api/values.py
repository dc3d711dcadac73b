"""Text to typed values: the one converter behind ``--param``, ``--llm-option`` and every
other ``key=value`` string gcdbench reads, so "yes", "1" and "on" mean the same everywhere."""

from __future__ import annotations

from typing import Any

#: the spellings of yes and no a flag accepts (compared lower-case)
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
#: the spellings of "no value" an optional parameter accepts (compared lower-case)
NONE_WORDS = frozenset({"none", "null"})

#: what each type is called in an error message
_NOUNS: dict[Any, str] = {
    bool: "a yes/no value",
    int: "an integer",
    float: "a number",
    str: "a string",
    None: "none",
    type(None): "none",
}


def parse_value(text: str, kind: type | None) -> Any:
    """``text`` (surrounding white space ignored) as ``kind``: ``bool`` (true/false, yes/no,
    on/off, 1/0), ``int``, ``float``, ``str`` (as is, stripped) or ``None`` (``none`` or
    ``null``). Raises :class:`ValueError` with a one-line reason when it is not one; callers
    add where the text came from and how to fix it."""
    stripped = text.strip()
    low = stripped.lower()
    if kind is None or kind is type(None):
        if low in NONE_WORDS:
            return None
    elif kind is bool:
        if low in TRUE_WORDS:
            return True
        if low in FALSE_WORDS:
            return False
    elif kind is str:
        return stripped
    elif kind is int or kind is float:
        try:
            return kind(stripped)
        except ValueError:
            pass
    else:
        raise TypeError(f"parse_value converts to bool, int, float, str or None, not {kind!r}")
    raise ValueError(f"{text!r} is not {_NOUNS[kind]}")


def noun(kind: type | None) -> str:
    """How an error message names ``kind``: "an integer", "a yes/no value", ..."""
    return _NOUNS.get(kind, getattr(kind, "__name__", str(kind)))


__all__ = ["FALSE_WORDS", "NONE_WORDS", "TRUE_WORDS", "noun", "parse_value"]
