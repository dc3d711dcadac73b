"""User-facing errors.

Every problem a user can fix (bad input, missing data, unknown names) is raised as a
:class:`GcdbenchError` whose message is one line that names the problem and the fix.
The CLI prints that line and exits with code 2; nothing else is written.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GcdbenchError(Exception):
    """A problem the user can fix; the message is the whole story."""

    exit_code = 2


class UnknownNameError(GcdbenchError, KeyError):
    """A name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(known) if known else "none registered"
        super().__init__(f"unknown {kind} {name!r}.{hint} Available: {available}.")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class DataError(GcdbenchError):
    """Data files that are missing, malformed or fail their checksum."""


def check_lengths(owner: str, expected: int, lengths: dict[str, int], fix: str) -> None:
    """One clear error when any of ``lengths`` differs from ``expected``."""
    wrong = {name: n for name, n in lengths.items() if n != expected}
    if wrong:
        raise GcdbenchError(f"{owner} has {expected} rows but {wrong}; {fix}")
