"""Parsers for the benchmark file formats.

Every parser is strict: a malformed row raises :class:`~gcdbench.errors.DataError` with one
line naming the file, the line and the fix, because silently dropping rows (as the official
GLEAN reader does) changes the data a split is drawn from.

Labels are lower-cased: the official GLEAN reader does so, and BANKING spells one class
``Refund_not_showing_up`` in the files but ``refund_not_showing_up`` everywhere else
(golden known-class lists, published results). Texts are returned exactly as stored.

Control characters stop the read: none in a label (NumPy drops a trailing NUL from strings,
so such a label would not match its own class), none but tab, newline and carriage return
in a text (a NUL or an escape byte there means a binary or mis-encoded file).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from gcdbench.errors import DataError

TSV_HEADER = ["text", "label"]
LABEL_NAMES_HEADER = ["label", "name"]


def _fix(path: Path, dataset: str | None) -> str:
    name = dataset or path.parent.name
    return f"fix the row or re-download with `gcdbench data download {name}`"


def decode(data: bytes, path: Path, dataset: str | None = None) -> str:
    """UTF-8 text of a data file; a tolerated BOM is dropped."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line}: not valid UTF-8 (byte {data[exc.start]:#04x}); "
            f"{_fix(path, dataset)}"
        ) from None


# The Unicode "Cc" category: C0 controls, DEL and C1 controls.
_LABEL_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _control_names(value: str, pattern: re.Pattern[str]) -> str:
    found = sorted(set(pattern.findall(value)))
    return ", ".join(f"U+{ord(c):04X}" + (" (NUL)" if c == "\0" else "") for c in found)


def check_row(text: str, label: str, where: str, fix: str) -> None:
    """Reject control characters in a label, and in a text all but tab, CR and LF."""
    if _LABEL_CONTROL.search(label):
        raise DataError(
            f"{where}: the label {label!r} contains the control character "
            f"{_control_names(label, _LABEL_CONTROL)}, which no label may hold; {fix}"
        )
    if _TEXT_CONTROL.search(text):
        raise DataError(
            f"{where}: the text contains the control character "
            f"{_control_names(text, _TEXT_CONTROL)} (only tab, CR and LF may appear); {fix}"
        )


def read_bytes(path: Path, dataset: str | None) -> bytes:
    """The bytes of a data file; a missing or unreadable one is a :class:`DataError`."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        name = dataset or Path(path).parent.name
        raise DataError(
            f"{path} not found; run `gcdbench data download {name}` or point --data-dir / "
            f"GCDBENCH_DATA at a folder containing {name}/{Path(path).name}"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}); check its permissions") from None


def _tsv_records(text: str, path: Path, header: list[str], dataset: str | None):
    """Yield (first line number, fields) of each data row, after checking the header.

    A quoted field may span lines (BANKING has such texts), so a row's line number is the
    line it starts on, which is one past where the previous row ended.
    """
    # newline="" keeps newlines inside quoted fields, as the csv module requires.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", strict=True)
    fix = _fix(path, dataset)
    want = "\t".join(header)
    start = 1
    try:
        first = next(reader, None)
        if first != header:
            got = "an empty file" if first is None else repr("\t".join(first))
            raise DataError(f"{path} line 1: expected the header {want!r}, got {got}; {fix}")
        start = reader.line_num + 1
        for fields in reader:
            yield start, fields
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path} line {start}: cannot parse the row ({exc}); {fix}") from None


def parse_gcd_tsv(
    data: bytes, path: Path, dataset: str | None = None
) -> tuple[list[str], list[str]]:
    """:func:`read_gcd_tsv` on bytes already read (so callers hash what they parse)."""
    texts: list[str] = []
    labels: list[str] = []
    fix = _fix(path, dataset)
    for line, fields in _tsv_records(decode(data, path, dataset), path, TSV_HEADER, dataset):
        if len(fields) != 2:
            raise DataError(
                f"{path} line {line}: expected 2 tab-separated fields (text, label), "
                f"got {len(fields)}; {fix}"
            )
        text, label = fields
        if not label.strip():
            raise DataError(f"{path} line {line}: empty label; {fix}")
        check_row(text, label, f"{path} line {line}", fix)
        texts.append(text)
        labels.append(label.lower())
    return texts, labels


def read_gcd_tsv(path: str | Path, dataset: str | None = None) -> tuple[list[str], list[str]]:
    """Texts and lower-cased labels of a GLEAN/Loop ``text<TAB>label`` file.

    Fields follow CSV quoting (a quoted text may contain tabs and newlines).
    """
    path = Path(path)
    return parse_gcd_tsv(read_bytes(path, dataset), path, dataset)


def parse_jsonl(data: bytes, path: Path, dataset: str | None = None) -> tuple[list[str], list[str]]:
    """:func:`read_jsonl` on bytes already read."""
    texts: list[str] = []
    labels: list[str] = []
    fix = _fix(path, dataset)
    # split("\n") rather than splitlines(): texts may hold U+2028 and friends, which
    # splitlines() would treat as line breaks.
    lines = decode(data, path, dataset).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last row; it does not start a new one
    for number, raw in enumerate(lines, start=1):
        where = f"{path} line {number}"
        if not raw.strip():
            raise DataError(f"{where}: empty line; remove it or {fix}")
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg}); {fix}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}; {fix}")
        missing = [key for key in ("input", "label") if key not in obj]
        if missing:
            raise DataError(f"{where}: missing key {', '.join(map(repr, missing))}; {fix}")
        text, label = obj["input"], obj["label"]
        if not isinstance(text, str):
            raise DataError(f"{where}: 'input' must be a string, got {type(text).__name__}; {fix}")
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"{where}: 'label' must be a non-empty string, got {label!r}; {fix}")
        check_row(text, label, where, fix)
        texts.append(text)
        labels.append(label.lower())
    return texts, labels


def read_jsonl(path: str | Path, dataset: str | None = None) -> tuple[list[str], list[str]]:
    """Texts and lower-cased labels of a ClusterLLM-style JSON-lines file.

    One object a line, ``{"task": ..., "input": <text>, "label": <name>}``; ``task`` is
    not used. Row ``i`` of the result is line ``i + 1`` of the file.
    """
    path = Path(path)
    return parse_jsonl(read_bytes(path, dataset), path, dataset)


def read_label_names(path: str | Path, dataset: str | None = None) -> dict[str, str]:
    """Label key (lower-cased, like the labels) -> display name, from ``label<TAB>name``."""
    path = Path(path)
    return parse_label_names(read_bytes(path, dataset), path, dataset)


def parse_label_names(data: bytes, path: Path, dataset: str | None = None) -> dict[str, str]:
    """:func:`read_label_names` on bytes already read."""
    text = decode(data, path, dataset)
    fix = _fix(path, dataset)
    names: dict[str, str] = {}
    for line, fields in _tsv_records(text, path, LABEL_NAMES_HEADER, dataset):
        if len(fields) != 2:
            raise DataError(
                f"{path} line {line}: expected 2 tab-separated fields (label, name), "
                f"got {len(fields)}; {fix}"
            )
        key, name = fields[0].lower(), fields[1]
        if not key.strip() or not name.strip():
            raise DataError(f"{path} line {line}: empty label or name; {fix}")
        for value in (key, name):  # names go into prompts and tables: one clean line each
            check_row("", value, f"{path} line {line}", fix)
        if key in names:
            raise DataError(f"{path} line {line}: label {key!r} is listed twice; {fix}")
        names[key] = name
    return names
