"""Typed access to ``--llm-option key=value`` strings, with one clear error per mistake."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gcdbench.api.values import FALSE_WORDS, TRUE_WORDS, parse_value
from gcdbench.errors import GcdbenchError, UnknownNameError

# FALSE_WORDS and TRUE_WORDS stay importable from here for older callers.
__all__ = ["FALSE_WORDS", "TRUE_WORDS", "BackendOptions"]


class BackendOptions:
    """The options one backend accepts; an unknown key fails with a did-you-mean."""

    def __init__(self, backend: str, options: Mapping[str, str], known: Iterable[str]) -> None:
        self.backend = backend
        self.values = {str(k): str(v) for k, v in options.items()}
        known = set(known)
        for key in self.values:
            if key not in known:
                raise UnknownNameError(f"option of the {backend} backend", key, known)

    def text(self, key: str, default: str | None = None) -> str | None:
        return self.values.get(key, default)

    def choice(self, key: str, default: str, allowed: Iterable[str]) -> str:
        allowed = list(allowed)
        value = self.values.get(key, default)
        if value not in allowed:
            raise GcdbenchError(
                f"{self.backend} option {key}={value!r} is not one of {', '.join(allowed)}; "
                f"pass --llm-option {key}=<one of them>."
            )
        return value

    def integer(self, key: str, default: int, minimum: int | None = None) -> int:
        return self._number(key, default, minimum, int)

    def number(self, key: str, default: float, minimum: float | None = None) -> float:
        return self._number(key, default, minimum, float)

    def _number(self, key: str, default: Any, minimum: Any, kind: type) -> Any:
        raw = self.values.get(key)
        if raw is None:
            return default
        try:
            value = parse_value(raw, kind)
        except ValueError as exc:
            raise GcdbenchError(
                f"{self.backend} option {key}={exc}; pass e.g. {key}={default}."
            ) from None
        if minimum is not None and value < minimum:
            raise GcdbenchError(
                f"{self.backend} option {key}={value} is below {minimum}; pass a larger value."
            )
        return value

    def flag(self, key: str, default: bool) -> bool:
        raw = self.values.get(key)
        if raw is None:
            return default
        try:
            return bool(parse_value(raw, bool))
        except ValueError as exc:
            raise GcdbenchError(
                f"{self.backend} option {key}={exc}; pass {key}=true or false."
            ) from None
