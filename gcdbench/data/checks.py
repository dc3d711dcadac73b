"""Checks on a loaded dataset: what in the data would make a GCD run mislead.

Loading already stops on what cannot be read (malformed rows, control characters, a class
count that does not match the definition). These checks look at data that loads but would
quietly bend the benchmark: classes too small to reach the test split, the same text under
two labels, empty texts, a known class that would get no labeled example. Each
:class:`DataIssue` says what the split does about the problem and how to fix it.

``gcdbench data check NAME`` prints them; a run warns with them and keeps them in its
record. Severity ``"error"`` means a run on this data measures nothing and is stopped
(:func:`stop_on_errors`); ``"warning"`` and ``"info"`` never stop anything.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import ceil, floor

from gcdbench.api.dataset import DatasetDefinition, DatasetParts, Part
from gcdbench.api.task import GCDSplit
from gcdbench.data.loading import DEV_FRACTION, LABEL_NAMES_FILE, TEST_FRACTION
from gcdbench.errors import DataError

SEVERITIES = ("error", "warning", "info")
EXAMPLES = 3  # named in a message; details keep up to MAX_DETAILS
MAX_DETAILS = 100


@dataclass(frozen=True)
class DataIssue:
    """One problem found in a dataset.

    ``message`` is one line: the problem, what the split does about it, and the fix.
    ``details`` holds JSON values (classes, rows) for the run record.
    """

    code: str
    severity: str  # "error", "warning" or "info"
    message: str
    details: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "details": dict(self.details),
        }


def check_dataset(
    parts: DatasetParts,
    definition: DatasetDefinition,
    *,
    known_ratio: float | None = None,
    labeled_ratio: float | None = None,
    split: GCDSplit | None = None,
) -> list[DataIssue]:
    """Every issue found, errors first.

    With ``known_ratio`` / ``labeled_ratio`` the checks also cover what those ratios do to
    this data; with a ``split`` (from :func:`gcdbench.data.split.make_split`) they name the
    exact known classes that get no labeled example.
    """
    if split is not None:
        known_ratio, labeled_ratio = split.known_ratio, split.labeled_ratio
    issues: list[DataIssue] = [
        *_unverified_files(parts, definition),
        *_identical_texts(parts),
        *_too_few_test_texts(parts),
        *_empty_texts(parts),
        *_conflicting_labels(parts),
        *_small_classes(parts),
        *_unused_label_names(parts, definition),
    ]
    if known_ratio is not None:
        issues += _known_ratio(parts, known_ratio)
    if split is not None:
        issues += _unlabeled_known_classes(parts, split)
    elif labeled_ratio is not None:
        issues += _unlabeled_if_known(parts, labeled_ratio)
    return sorted(issues, key=lambda issue: SEVERITIES.index(issue.severity))


def stop_on_errors(issues: Iterable[DataIssue]) -> None:
    """Raise :class:`DataError` with the first error's message, if any issue is an error."""
    errors = [issue for issue in issues if issue.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        raise DataError(errors[0].message + more)


# -- helpers ----------------------------------------------------------------------------------


def _parts(parts: DatasetParts) -> list[Part]:
    return [p for p in (parts.train, parts.dev, parts.test) if p is not None]


def _rows(parts: DatasetParts) -> list[tuple[str, str, str]]:
    """(text, label, where) for every row, where = a place a person can open."""
    out = []
    for part in _parts(parts):
        for text, label, row in zip(part.texts, part.labels, part.rows.tolist(), strict=True):
            out.append((text, label, _where(part, row)))
    return out


def _where(part: Part, row: int) -> str:
    # A JSON-lines row is one line; a TSV row may span lines (quoted newlines), so it is
    # counted as a data row, the header excluded.
    if part.file.name.endswith(".jsonl"):
        return f"{part.file.name} line {row + 1}"
    return f"{part.file.name} data row {row + 1}"


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:EXAMPLES])
    return shown + (f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else "")


def _rows_of(n: int, what: str = "rows") -> str:
    return f"{n} {what.removesuffix('s') if n == 1 else what}"


def _classes_have(n: int, of: int) -> str:
    return f"{n} of {of} classes " + ("has" if n == 1 else "have")


def _quote(text: str, width: int = 50) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _counts(part: Part | None) -> Counter[str]:
    return Counter(part.labels) if part is not None else Counter()


# -- the checks -------------------------------------------------------------------------------


def _unverified_files(parts: DatasetParts, definition: DatasetDefinition) -> list[DataIssue]:
    published = {f.name: f.sha256 for f in definition.files}
    read = [f for f in parts.files if f.name in published and not f.verified]
    differing = [f for f in read if published[f.name]]
    unpublished = [f for f in read if not published[f.name]]
    issues = []
    if differing:
        named = [f"{f.path} (sha256 {f.sha256[:12]}…)" for f in differing]
        verb = "differ from the published files"
        if len(named) == 1:
            verb = "differs from the published file"
        issues.append(
            DataIssue(
                "unverified-file",
                "warning",
                f"{_listing(named)} {verb}; runs use the data as it is and their records mark "
                "it unverified; use the published files, or update the plugin's sha256 if the "
                "data changed on purpose",
                {"files": {f.name: f.sha256 for f in differing}},
            )
        )
    if unpublished:
        named = [f"{f.name}: sha256={f.sha256!r}" for f in unpublished]
        issues.append(
            DataIssue(
                "no-published-sha256",
                "warning",
                f"the plugin publishes no sha256 for {', '.join(f.name for f in unpublished)}, "
                "so runs cannot tell this data from any other and their records mark it "
                f"unverified; add to its RemoteFile {'; '.join(named)}",
                {"files": {f.name: f.sha256 for f in unpublished}},
            )
        )
    return issues


def _identical_texts(parts: DatasetParts) -> list[DataIssue]:
    rows = _rows(parts)
    distinct = {text for text, _, _ in rows}
    if len(rows) > 1 and len(distinct) == 1:
        return [
            DataIssue(
                "identical-texts",
                "error",
                f"all {len(rows)} rows of {parts.name!r} have the same text "
                f"{_quote(next(iter(distinct)))}, so there is nothing to cluster and a run "
                "would measure nothing; check which field the file's texts are read from",
                {"rows": len(rows)},
            )
        ]
    by_class: dict[str, set[str]] = defaultdict(set)
    sizes: Counter[str] = Counter()
    for text, label, _ in rows:
        by_class[label].add(text)
        sizes[label] += 1
    uniform = sorted(c for c, texts in by_class.items() if len(texts) == 1 and sizes[c] > 1)
    if not uniform:
        return []
    named = [f"{c!r} ({_rows_of(sizes[c])})" for c in uniform]
    return [
        DataIssue(
            "class-identical-texts",
            "warning",
            f"{len(uniform)} classes repeat one text in every row: {_listing(named)}; the "
            "split keeps every copy, so these classes are trivially one cluster and inflate "
            "the scores; give them real examples or drop the copies",
            {"classes": uniform[:MAX_DETAILS]},
        )
    ]


def _too_few_test_texts(parts: DatasetParts) -> list[DataIssue]:
    """Every method is scored by placing the test texts into K clusters (K-means on them in
    the official protocol), so fewer test texts than classes cannot be scored at all: the
    run would crash mid-way, after its split was written."""
    n, k = len(parts.test), len(parts.classes)
    if n >= k:
        return []
    if parts.protocol.get("partition") == "single-jsonl-v1":
        fix = f"add rows (a class needs {ceil(1 / TEST_FRACTION)} to reach test)"
    else:
        fix = f"add rows to {parts.test.file.name}"
    return [
        DataIssue(
            "too-few-test-texts",
            "error",
            f"the test part of {parts.name!r} has {_rows_of(n, 'texts')}, fewer than its {k} "
            "classes, so no method can place them into K clusters and a run would measure "
            f"nothing; {fix}, or drop classes (and lower num_classes)",
            {"test_texts": n, "classes": k},
        )
    ]


def _empty_texts(parts: DatasetParts) -> list[DataIssue]:
    empty = [where for text, _, where in _rows(parts) if not text.strip()]
    if not empty:
        return []
    return [
        DataIssue(
            "empty-texts",
            "warning",
            f"{len(empty)} rows have an empty or whitespace-only text ({_listing(empty)}); the "
            "split keeps them, so methods are given empty strings to place; fill in or remove "
            "those rows",
            {"rows": empty[:MAX_DETAILS]},
        )
    ]


def _conflicting_labels(parts: DatasetParts) -> list[DataIssue]:
    seen: dict[str, dict[str, str]] = defaultdict(dict)  # text -> label -> first place
    for text, label, where in _rows(parts):
        seen[text].setdefault(label, where)
    conflicts = {text: labels for text, labels in seen.items() if len(labels) > 1}
    if not conflicts:
        return []
    text, labels = next(iter(conflicts.items()))
    example = f"{_quote(text)} is " + " and ".join(
        f"{label!r} at {where}" for label, where in sorted(labels.items())
    )
    return [
        DataIssue(
            "conflicting-labels",
            "warning",
            f"{len(conflicts)} texts occur under more than one label (e.g. {example}); the "
            "split keeps every row with its own label, so no method can place all of them "
            "right; fix the labels or drop the copies",
            {
                "texts": [
                    {"text": t, "labels": sorted(ls)}
                    for t, ls in list(conflicts.items())[:MAX_DETAILS]
                ]
            },
        )
    ]


def _small_classes(parts: DatasetParts) -> list[DataIssue]:
    train, dev, test = _counts(parts.train), _counts(parts.dev), _counts(parts.test)
    total = {c: train[c] + dev[c] + test[c] for c in parts.classes}
    partitioned = parts.protocol.get("partition") == "single-jsonl-v1"
    k = len(parts.classes)
    issues = []

    no_test = [c for c in parts.classes if test[c] == 0]
    if no_test:
        named = [f"{c!r} ({_rows_of(total[c])})" for c in no_test]
        if partitioned:
            need = ceil(1 / TEST_FRACTION)
            why = (
                f"fewer than {need} rows, so the single-jsonl-v1 partition puts all of "
                "them in train"
            )
            fix = f"add rows (a class needs {need} to reach test) or drop these classes"
        else:
            why = f"no row in {parts.test.file.name}"
            fix = "add test rows for them or drop these classes"
        issues.append(
            DataIssue(
                "class-missing-from-test",
                "warning",
                f"{_classes_have(len(no_test), k)} {why}: {_listing(named)}; they stay among the "
                f"{k} classes and may be drawn as known, but no test text is of them, so the "
                f"metrics never measure them; {fix} (and lower num_classes)",
                {"classes": no_test[:MAX_DETAILS]},
            )
        )

    no_dev = [c for c in parts.classes if dev[c] == 0 and c not in no_test]
    if no_dev and parts.dev is not None:
        if partitioned:
            need = ceil(1 / DEV_FRACTION)
            why = f"fewer than {need} rows, so the single-jsonl-v1 partition gives them"
        else:
            why = f"no row in {parts.dev.file.name}, so they get"
        issues.append(
            DataIssue(
                "class-missing-from-dev",
                "info",
                f"{_classes_have(len(no_dev), k)} {why} no dev rows: "
                f"{_listing([repr(c) for c in no_dev])}; when known, methods that tune on dev "
                "see no dev example of them",
                {"classes": no_dev[:MAX_DETAILS]},
            )
        )
    return issues


def _unused_label_names(parts: DatasetParts, definition: DatasetDefinition) -> list[DataIssue]:
    if any(f.name == LABEL_NAMES_FILE for f in parts.files) or not definition.label_names:
        return []
    unused = sorted(k.lower() for k in definition.label_names if k.lower() not in parts.classes)
    if not unused:
        return []
    return [
        DataIssue(
            "unused-label-names",
            "warning",
            f"the definition of {parts.name!r} names {len(unused)} labels that no row has: "
            f"{_listing([repr(u) for u in unused])}; those classes are shown by their keys; "
            "make label_names' keys the labels of the file (compared lower-cased)",
            {"labels": unused[:MAX_DETAILS]},
        )
    ]


def _known_ratio(parts: DatasetParts, known_ratio: float) -> list[DataIssue]:
    k = len(parts.classes)
    n_known = round(k * known_ratio)  # as make_split draws it
    if n_known == 0:
        return [
            DataIssue(
                "no-known-classes",
                "error",
                f"--known-ratio {known_ratio:g} yields no known class for {k} classes "
                f"(round({k} × {known_ratio:g}) = 0), so the split cannot be drawn; use a "
                f"ratio above {0.5 / k:.4g}",
                {"known_ratio": known_ratio, "classes": k},
            )
        ]
    if n_known == k:
        return [
            DataIssue(
                "no-novel-classes",
                "warning",
                f"--known-ratio {known_ratio:g} makes all {k} classes known (round({k} × "
                f"{known_ratio:g}) = {k}); the split has no novel class, so nothing is "
                "discovered and novel ACC is empty; lower --known-ratio",
                {"known_ratio": known_ratio, "classes": k},
            )
        ]
    return []


def _labeled(n_train: int, labeled_ratio: float) -> int:
    return min(round(n_train * labeled_ratio), n_train)  # as make_split draws it


def _ratio_for_one(n_train: int) -> float:
    """The smallest 3-decimal labeled ratio that gives a class of ``n_train`` one example."""
    return (floor(0.5 / n_train * 1000) + 1) / 1000


def _unlabeled_if_known(parts: DatasetParts, labeled_ratio: float) -> list[DataIssue]:
    train = _counts(parts.train)
    bare = [c for c in parts.classes if _labeled(train[c], labeled_ratio) == 0]
    if not bare:
        return []
    smallest = min(train[c] for c in bare)
    named = [f"{c!r} ({_rows_of(train[c], 'train rows')})" for c in bare]
    return [
        DataIssue(
            "known-class-unlabeled",
            "warning",
            f"{len(bare)} of {len(parts.classes)} classes are too small for --labeled-ratio "
            f"{labeled_ratio:g} (round(n × {labeled_ratio:g}) = 0): {_listing(named)}; "
            "whichever of them a seed draws as known stays known but gets no labeled "
            f"example; a class of n train rows needs a --labeled-ratio above 0.5/n "
            f"({_ratio_for_one(smallest):g} for the smallest here), or add rows",
            {"classes": bare[:MAX_DETAILS], "labeled_ratio": labeled_ratio},
        )
    ]


def _unlabeled_known_classes(parts: DatasetParts, split: GCDSplit) -> list[DataIssue]:
    label_of = dict(zip(parts.train.rows.tolist(), parts.train.labels, strict=True))
    labeled = Counter(label_of[r] for r in split.labeled_rows)
    bare = [c for c in split.known_classes if labeled[c] == 0]
    if not bare:
        return []
    train = _counts(parts.train)
    smallest = min(train[c] for c in bare)
    named = [f"{c!r} ({_rows_of(train[c], 'train rows')})" for c in bare]
    return [
        DataIssue(
            "known-class-unlabeled",
            "warning",
            f"{len(bare)} of the {len(split.known_classes)} known classes of seed {split.seed} "
            f"get no labeled example at --labeled-ratio {split.labeled_ratio:g}: "
            f"{_listing(named)}; the split keeps them known (they count in known ACC) but a "
            "method sees none of their texts labeled; a class of n train rows needs a "
            f"--labeled-ratio above 0.5/n ({_ratio_for_one(smallest):g} for the smallest "
            "here), or add rows",
            {"classes": bare, "labeled_ratio": split.labeled_ratio, "seed": split.seed},
        )
    ]


def summary(parts: DatasetParts) -> dict[str, int]:
    """Row and class counts, for the check's header line."""
    return {
        "classes": len(parts.classes),
        "rows": sum(len(p) for p in _parts(parts)),
        "train": len(parts.train),
        "dev": len(parts.dev) if parts.dev is not None else 0,
        "test": len(parts.test),
    }
