"""The GCD split protocol ``glean-loop-v1``: known classes and labeled rows.

Reproduces the official GLEAN/Loop data loader draw for draw, given the same seed:

1. ``n_known = round(K × known_ratio)`` (Python's banker's rounding: CLINC 25% → 38);
2. known classes = ``np.random.RandomState(seed).choice(classes, n_known, replace=False)``,
   in draw order (position = known-class id);
3. with ``random.Random(seed)``, for each known class in draw order:
   ``random.sample(train rows of the class in file order, round(count × labeled_ratio))``;
4. labeled = those rows in file order; unlabeled = every other train row (known and novel
   classes); dev = dev rows of known classes; test = every test row.

The official code seeds the global NumPy and Python generators; private generators seeded
the same way give the same draws without touching global state.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from gcdbench.api.dataset import DatasetParts, Part
from gcdbench.api.spec import canonical_json, sha256_hex
from gcdbench.api.task import GCDSplit, GCDTask, Gold, TaskPart
from gcdbench.errors import DataError, GcdbenchError
from gcdbench.util.files import atomic_open

PROTOCOL = "glean-loop-v1"


def check_ratio(flag: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise GcdbenchError(f"{flag} must be in (0, 1], got {value}; e.g. {flag} 0.25")
    return float(value)


def check_known_classes(num_classes: int, known_ratio: float) -> int:
    """The number of known classes; an error when the ratio rounds to none."""
    k = num_classes
    n_known = round(k * known_ratio)
    if n_known == 0:
        raise GcdbenchError(
            f"--known-ratio {known_ratio:g} yields no known class for {k} classes "
            f"(round({k} × {known_ratio:g}) = 0); use a ratio above {0.5 / k:.4g}, "
            f"e.g. {1 / k:.4g} for one known class"
        )
    return n_known


def make_split(
    parts: DatasetParts, *, known_ratio: float, labeled_ratio: float, seed: int
) -> GCDSplit:
    """Draw the split for (dataset, known ratio, labeled ratio, seed); see the module doc."""
    known_ratio = check_ratio("--known-ratio", known_ratio)
    labeled_ratio = check_ratio("--labeled-ratio", labeled_ratio)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise GcdbenchError(f"--seed must be an integer in [0, 2**32), got {seed}")
    seed = int(seed)
    k = len(parts.classes)
    n_known = check_known_classes(k, known_ratio)

    known = [
        str(c)
        for c in np.random.RandomState(seed).choice(np.array(parts.classes), n_known, replace=False)
    ]
    rnd = random.Random(seed)
    train_labels = np.array(parts.train.labels)
    train_rows = [int(r) for r in parts.train.rows]
    labeled: set[int] = set()
    for cls in known:
        idx = [train_rows[i] for i in np.flatnonzero(train_labels == cls)]
        n_lab = min(round(len(idx) * labeled_ratio), len(idx))
        labeled.update(rnd.sample(idx, n_lab))

    known_set = set(known)
    dev_rows: tuple[int, ...] = ()
    if parts.dev is not None:
        dev_rows = tuple(
            int(r) for r, y in zip(parts.dev.rows, parts.dev.labels, strict=True) if y in known_set
        )
    split = GCDSplit(
        dataset=parts.name,
        known_ratio=known_ratio,
        labeled_ratio=labeled_ratio,
        seed=seed,
        protocol=PROTOCOL,
        known_classes=tuple(known),
        labeled_rows=tuple(r for r in train_rows if r in labeled),
        unlabeled_rows=tuple(r for r in train_rows if r not in labeled),
        dev_rows=dev_rows,
        test_rows=tuple(int(r) for r in parts.test.rows),
        data_files=_data_files(parts),
    )
    return _with_hash(split)


def _data_files(parts: DatasetParts) -> dict[str, str]:
    """The files the rows index into; label_names.tsv is left out, as it moves no row."""
    used = [parts.train, parts.test] + ([parts.dev] if parts.dev is not None else [])
    return dict(sorted((p.file.name, p.file.sha256) for p in used))


def _content(split: GCDSplit) -> dict[str, Any]:
    out = asdict(split)
    del out["hash"]
    out["known_ratio"] = float(split.known_ratio)
    out["labeled_ratio"] = float(split.labeled_ratio)
    for key in ("known_classes", "labeled_rows", "unlabeled_rows", "dev_rows", "test_rows"):
        out[key] = list(out[key])
    out["data_files"] = dict(sorted(dict(split.data_files).items()))
    return out


def split_hash(split: GCDSplit) -> str:
    """sha256 of the canonical JSON of every field but ``hash``."""
    return sha256_hex(canonical_json(_content(split)))


def _with_hash(split: GCDSplit) -> GCDSplit:
    content = _content(split)
    digest = sha256_hex(canonical_json(content))
    frozen: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in content.items()}
    return GCDSplit(**frozen, hash=digest)


def split_filename(split: GCDSplit) -> str:
    return (
        f"{split.dataset}-kr{split.known_ratio:g}-lr{split.labeled_ratio:g}"
        f"-s{split.seed}-{split.hash[:12]}.json"
    )


def save_split(split: GCDSplit, directory: Path) -> Path:
    """Write the split as JSON (atomically; a file with the same name is left as it is)."""
    if split.hash != split_hash(split):
        raise GcdbenchError("the split's hash does not match its content; make it with make_split")
    path = Path(directory) / split_filename(split)
    if path.is_file():
        return path  # the name carries the content hash, so the content is the same
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({**_content(split), "hash": split.hash}, sort_keys=True) + "\n")
    return path


def load_split(path: Path) -> GCDSplit:
    """Read a split written by :func:`save_split`, checking its hash."""
    path = Path(path)
    fix = "delete it and it will be made again"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"split file {path} not found; check the path") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"split file {path} is not valid JSON ({exc}); {fix}") from None
    names = {f.name for f in fields(GCDSplit)}
    if not isinstance(raw, dict) or set(raw) != names:
        raise DataError(f"split file {path} does not hold a gcdbench split; {fix}")
    try:
        split = GCDSplit(**raw)
        got = split_hash(split)
    except (TypeError, ValueError) as exc:
        raise DataError(f"split file {path} has malformed fields ({exc}); {fix}") from None
    if got != split.hash:
        raise DataError(
            f"split file {path} was modified (its hash is {got[:12]}, it records "
            f"{str(split.hash)[:12]}); {fix}"
        )
    return _with_hash(split)  # tuples instead of JSON lists


def _positions(part: Part, rows: tuple[int, ...], what: str, split: GCDSplit) -> np.ndarray:
    index = {int(r): i for i, r in enumerate(part.rows)}
    try:
        return np.array([index[r] for r in rows], dtype=np.int64)
    except KeyError as exc:
        raise DataError(
            f"split {split.hash[:12]} of {split.dataset!r} names {what} row {exc.args[0]}, which "
            "the loaded data lacks; delete the split file and it will be made again"
        ) from None


def build_task(
    parts: DatasetParts, split: GCDSplit, *, task_word: str = "intent"
) -> tuple[GCDTask, Gold]:
    """What a method sees (:class:`GCDTask`) and what only the runner sees (:class:`Gold`)."""
    fix = "delete the split file and it will be made again"
    if split.dataset != parts.name:
        raise DataError(f"split {split.hash[:12]} is for {split.dataset!r}, not {parts.name!r}")
    if dict(split.data_files) != _data_files(parts):
        raise DataError(
            f"split {split.hash[:12]} of {parts.name!r} was made from different data files "
            f"({dict(split.data_files)} vs {_data_files(parts)}); {fix}"
        )
    pool_rows = split.labeled_rows + split.unlabeled_rows
    if sorted(pool_rows) != sorted(int(r) for r in parts.train.rows) or sorted(
        split.test_rows
    ) != sorted(int(r) for r in parts.test.rows):
        raise DataError(
            f"split {split.hash[:12]} of {parts.name!r} does not cover the loaded train/test "
            f"rows (was the data partitioned differently?); {fix}"
        )

    known_id = {c: i for i, c in enumerate(split.known_classes)}
    global_id = {c: i for i, c in enumerate(parts.classes)}
    pool = _positions(parts.train, pool_rows, "train", split)
    test = _positions(parts.test, split.test_rows, "test", split)
    train_texts = [parts.train.texts[i] for i in pool]
    labeled_y = np.array(
        [known_id[parts.train.labels[i]] for i in pool[: len(split.labeled_rows)]], dtype=np.int64
    )

    # A dataset without a dev file still gets a (empty) dev part, so methods need no branch.
    dev_part = (
        parts.dev
        if parts.dev is not None
        else Part([], [], parts.train.file, np.zeros(0, np.int64))
    )
    dev = _positions(dev_part, split.dev_rows, "dev", split)
    dev_labels = [dev_part.labels[i] for i in dev]
    if any(y not in known_id for y in dev_labels):
        raise DataError(f"split {split.hash[:12]} puts novel-class rows in dev; {fix}")

    task = GCDTask(
        dataset=parts.name,
        task_word=task_word,
        num_classes=len(parts.classes),
        known_classes=tuple(split.known_classes),
        known_class_names=tuple(parts.label_names.get(c, c) for c in split.known_classes),
        train=TaskPart(train_texts, parts.train.file, np.array(pool_rows, dtype=np.int64)),
        num_labeled=len(split.labeled_rows),
        labeled_y=labeled_y,
        dev=TaskPart(
            [dev_part.texts[i] for i in dev], dev_part.file, np.array(split.dev_rows, np.int64)
        ),
        dev_y=np.array([known_id[y] for y in dev_labels], dtype=np.int64),
        test=TaskPart(
            [parts.test.texts[i] for i in test],
            parts.test.file,
            np.array(split.test_rows, np.int64),
        ),
        split_hash=split.hash,
        seed=split.seed,
    )
    gold = Gold(
        classes=tuple(parts.classes),
        class_names=_full_names(parts.label_names, parts.classes),
        known_ids=np.array([global_id[c] for c in split.known_classes], dtype=np.int64),
        train_y=np.array([global_id[parts.train.labels[i]] for i in pool], dtype=np.int64),
        test_y=np.array([global_id[parts.test.labels[i]] for i in test], dtype=np.int64),
    )
    return task, gold


def _full_names(names: Mapping[str, str], classes: tuple[str, ...]) -> dict[str, str]:
    return {c: names.get(c, c) for c in classes}
