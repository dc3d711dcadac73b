"""Load a dataset folder into :class:`~gcdbench.api.DatasetParts`.

Layouts:

``gcd-tsv``
    ``train.tsv``, ``dev.tsv``, ``test.tsv`` as published by GLEAN/Loop. The classes are
    the sorted unique train labels (``np.unique``, plain string order: StackOverflow gives
    ``'1', '10', '11', ...``); a class's position is its global id. Every dev/test label
    must be a train class. ``label_names.tsv`` in the folder, when present, names the
    classes; else the definition's ``label_names``; else each key is its own name.

``single-jsonl``
    One JSON-lines file, the one ``.jsonl`` file the definition lists in ``files`` (the
    ClusterLLM sets call it ``small.jsonl``), partitioned by the fixed protocol
    ``single-jsonl-v1``, which does not depend on the run seed so that every run of every
    method evaluates on the same test rows:

    * classes in sorted order, one ``np.random.RandomState(0)`` shared by all of them;
    * for a class with ``n`` rows (in file order), ``perm = rs.permutation(n)``;
      the first ``floor(n / 5)`` permuted rows are test, the next ``floor(n / 10)`` dev,
      the rest train. So a class with fewer than 5 rows is train only, one with fewer
      than 10 has no dev rows, and every class has at least one train row;
    * each part keeps file order.

    ``Part.rows`` are row indices into the file (line ``i + 1``): these files repeat some
    texts, so samples are keyed by row, never by text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from fractions import Fraction
from math import floor
from pathlib import Path
from typing import Protocol

import numpy as np

from gcdbench.api.parts import DataFile, DatasetParts, Part, RemoteFile
from gcdbench.data.readers import parse_gcd_tsv, parse_jsonl, parse_label_names, read_bytes
from gcdbench.errors import DataError

LABEL_NAMES_FILE = "label_names.tsv"
# Exact fractions: a float product such as 0.1 * n can land just below an integer.
TEST_FRACTION = Fraction(1, 5)
DEV_FRACTION = Fraction(1, 10)
PARTITION_SEED = 0
JSONL_PROTOCOL: Mapping[str, object] = {
    "partition": "single-jsonl-v1",
    "seed": PARTITION_SEED,
    "test_fraction": float(TEST_FRACTION),
    "dev_fraction": float(DEV_FRACTION),
    "rounding": "floor",
}
TSV_PROTOCOL: Mapping[str, object] = {"partition": "published"}


class DatasetLayout(Protocol):
    """What the readers need of a :class:`gcdbench.api.DatasetDefinition` (typed as this
    protocol because the definition's ``load`` calls into this module)."""

    @property
    def name(self) -> str: ...
    @property
    def layout(self) -> str: ...
    @property
    def files(self) -> Sequence[RemoteFile]: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def label_names(self) -> Mapping[str, str] | None: ...


def load_dataset(defn: DatasetLayout, folder: Path) -> DatasetParts:
    """Read, hash and check the files of ``defn`` in ``folder`` (``<root>/<name>``)."""
    folder = Path(folder)
    if defn.layout == "gcd-tsv":
        return _load_gcd_tsv(defn, folder)
    if defn.layout == "single-jsonl":
        return _load_single_jsonl(defn, folder)
    raise DataError(
        f"dataset {defn.name!r} has layout {defn.layout!r}, which gcdbench cannot read; "
        "use 'gcd-tsv' or 'single-jsonl', or override DatasetDefinition.load in its plugin"
    )


def _published_sha(defn: DatasetLayout, name: str) -> str | None:
    return next((f.sha256 for f in defn.files if f.name == name), None)


def _read(defn: DatasetLayout, folder: Path, name: str) -> tuple[bytes, DataFile]:
    path = folder / name
    data = read_bytes(path, defn.name)
    sha = hashlib.sha256(data).hexdigest()
    return data, DataFile(name, path, sha, verified=sha == _published_sha(defn, name))


def _names(
    defn: DatasetLayout, folder: Path, classes: tuple[str, ...]
) -> tuple[dict[str, str], DataFile | None]:
    extra: DataFile | None = None
    if (folder / LABEL_NAMES_FILE).is_file():
        data, extra = _read(defn, folder, LABEL_NAMES_FILE)
        given: Mapping[str, str] = parse_label_names(data, extra.path, defn.name)
    else:
        given = {k.lower(): v for k, v in (defn.label_names or {}).items()}
    return {c: given.get(c, c) for c in classes}, extra


def _check_classes(defn: DatasetLayout, classes: tuple[str, ...], file: DataFile) -> None:
    if len(classes) == defn.num_classes:
        return
    # A file with the published hash is the data the plugin describes, so the plugin's
    # count is what is wrong; any other file is another version of the data.
    cause = (
        f"the file has its published sha256, so the plugin's num_classes={defn.num_classes} "
        "is wrong: correct it in the plugin"
        if file.verified
        else "either this is another version of the data (its sha256 differs from the "
        "published one: use the published file) or the plugin's num_classes is wrong"
    )
    raise DataError(
        f"{file.path} has {len(classes)} classes, but the definition of {defn.name!r} says "
        f"num_classes={defn.num_classes}; the file does not match the definition: {cause}"
    )


def single_file_name(defn: DatasetLayout) -> str:
    """The one data file of a ``single-jsonl`` definition: its only ``.jsonl`` file."""
    names = [f.name for f in defn.files if f.name.endswith(".jsonl")]
    if len(names) != 1:
        listed = ", ".join(names) or "none"
        raise DataError(
            f"dataset {defn.name!r} has layout 'single-jsonl' but lists {len(names)} .jsonl "
            f"files ({listed}); list exactly one, e.g. RemoteFile('data.jsonl', url, sha256)"
        )
    return names[0]


def _load_gcd_tsv(defn: DatasetLayout, folder: Path) -> DatasetParts:
    parts: dict[str, Part] = {}
    for split in ("train", "dev", "test"):
        name = f"{split}.tsv"
        optional = any(f.name == name and not f.required for f in defn.files)
        if split == "dev" and optional and not (folder / name).exists():
            continue
        data, file = _read(defn, folder, name)
        texts, labels = parse_gcd_tsv(data, file.path, defn.name)
        parts[split] = Part(texts, labels, file, np.arange(len(texts), dtype=np.int64))

    train = parts["train"]
    classes = tuple(str(c) for c in np.unique(np.array(train.labels)))
    _check_classes(defn, classes, train.file)
    known = set(classes)
    for split in ("dev", "test"):
        if split not in parts:
            continue
        stray = sorted(set(parts[split].labels) - known)
        if stray:
            raise DataError(
                f"{parts[split].file.path} has labels that train.tsv lacks "
                f"({', '.join(stray[:5])}); every {split} label must be a train class: "
                "fix the files, or use the published ones"
            )
    label_names, extra = _names(defn, folder, classes)
    files = tuple(p.file for p in parts.values()) + ((extra,) if extra else ())
    return DatasetParts(
        name=defn.name,
        train=train,
        dev=parts.get("dev"),
        test=parts["test"],
        classes=classes,
        label_names=label_names,
        files=files,
        protocol=dict(TSV_PROTOCOL),
    )


def partition_rows(labels: list[str]) -> dict[str, np.ndarray]:
    """Row indices of the train/dev/test parts under ``single-jsonl-v1`` (module docstring)."""
    y = np.array(labels)
    rs = np.random.RandomState(PARTITION_SEED)
    chosen: dict[str, list[np.ndarray]] = {"train": [], "dev": [], "test": []}
    for cls in np.unique(y):
        rows = np.flatnonzero(y == cls)
        perm = rows[rs.permutation(len(rows))]
        n_test = floor(len(rows) * TEST_FRACTION)
        n_dev = floor(len(rows) * DEV_FRACTION)
        chosen["test"].append(perm[:n_test])
        chosen["dev"].append(perm[n_test : n_test + n_dev])
        chosen["train"].append(perm[n_test + n_dev :])
    return {
        part: np.sort(np.concatenate(arrays)).astype(np.int64) if arrays else np.zeros(0, np.int64)
        for part, arrays in chosen.items()
    }


def _load_single_jsonl(defn: DatasetLayout, folder: Path) -> DatasetParts:
    data, file = _read(defn, folder, single_file_name(defn))
    texts, labels = parse_jsonl(data, file.path, defn.name)
    classes = tuple(str(c) for c in np.unique(np.array(labels)))
    _check_classes(defn, classes, file)

    def part(rows: np.ndarray) -> Part:
        return Part([texts[i] for i in rows], [labels[i] for i in rows], file, rows)

    rows = partition_rows(labels)
    label_names, extra = _names(defn, folder, classes)
    return DatasetParts(
        name=defn.name,
        train=part(rows["train"]),
        dev=part(rows["dev"]),
        test=part(rows["test"]),
        classes=classes,
        label_names=label_names,
        files=(file,) + ((extra,) if extra else ()),
        protocol=dict(JSONL_PROTOCOL),
    )
