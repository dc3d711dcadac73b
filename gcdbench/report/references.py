"""Paper-reported results that the leaderboard lists beside the reproduced ones.

The rows live in ``references.json`` next to this module so that adding a number is a data
change, reviewed against its cited source, not a code change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["OPTIONAL_METRIC_KEYS", "REFERENCE_KEYS", "load_references", "validate_reference"]

REFERENCE_KEYS = (
    "method",
    "dataset",
    "known_ratio",
    "labeled_ratio",
    "acc",
    "ari",
    "nmi",
    "source",
    "note",
)
#: Known- and novel-class ACC and their harmonic mean (H-score), which the DPN/TAN/SDC line of
#: papers reports instead of (or beside) ACC/ARI/NMI; a row may omit them.
OPTIONAL_METRIC_KEYS = ("known_acc", "novel_acc", "h_score")
_TEXT_KEYS = ("method", "dataset", "source")
_RATIO_KEYS = ("known_ratio", "labeled_ratio")
_METRIC_KEYS = ("acc", "ari", "nmi", *OPTIONAL_METRIC_KEYS)


def _is_number(value: Any) -> bool:
    # bool is an int subclass; a true/false in a metric slot is a typo, not a number.
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_reference(row: Mapping[str, Any], where: str = "reference row") -> dict[str, Any]:
    """Check one reference row and return it as a plain dict; raise ValueError if malformed.

    Metrics may be ``null`` when the paper does not report them (shown as an empty cell);
    the known/novel ACC and H-score keys may also be left out (read as ``null``).
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    missing = [k for k in REFERENCE_KEYS if k not in row]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    extra = sorted(set(row) - set(REFERENCE_KEYS) - set(OPTIONAL_METRIC_KEYS))
    if extra:  # most likely a misspelt key whose value would otherwise be dropped silently
        raise ValueError(f"{where}: unknown key(s) {', '.join(extra)}")
    for key in _TEXT_KEYS:
        if not isinstance(row[key], str) or not row[key].strip():
            raise ValueError(f"{where}: {key!r} must be a non-empty string")
    if not isinstance(row["note"], str):
        raise ValueError(f"{where}: 'note' must be a string (use \"\" for none)")
    for key in _RATIO_KEYS:
        if not _is_number(row[key]) or not 0 < row[key] <= 1:
            raise ValueError(f"{where}: {key!r} must be a number in (0, 1], got {row[key]!r}")
    for key in _METRIC_KEYS:
        value = row.get(key)
        if value is None:
            continue
        if not _is_number(value) or not math.isfinite(value) or not 0 <= value <= 100:
            raise ValueError(
                f"{where}: {key!r} must be a percentage in [0, 100] or null, got {value!r}"
            )
    return {
        **{k: row[k] for k in REFERENCE_KEYS},
        **{k: row.get(k) for k in OPTIONAL_METRIC_KEYS},
    }


def load_references(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The reference rows: from ``path``, else the ``references.json`` shipped with gcdbench.

    The file is an object with a ``rows`` list (or a bare list of rows); every row is
    validated, and a malformed one raises ValueError naming it.
    """
    if path is None:
        source = resources.files("gcdbench.report").joinpath("references.json")
        name = "gcdbench/report/references.json"
    else:
        source = Path(path)
        name = str(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: not valid JSON ({exc})") from exc
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ValueError(f"{name}: expected a list of rows (or an object with a 'rows' list)")
    return [validate_reference(row, f"{name}, row {i}") for i, row in enumerate(rows)]
