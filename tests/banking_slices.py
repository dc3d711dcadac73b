"""Small slices of the real BANKING data (its first classes, 24 train / 4 dev / 8 test texts
each), copied from the benchmark data folder and registered as datasets, so a test run
takes seconds on real texts."""

from __future__ import annotations

import csv
from pathlib import Path

from gcdbench import hookimpl
from gcdbench.api.dataset import DatasetDefinition
from gcdbench.data.readers import read_gcd_tsv

PER_CLASS = {"train": 24, "dev": 4, "test": 8}


class SlicePlugin:
    """Registers ``slices`` (name -> number of classes kept) as gcd-tsv datasets."""

    def __init__(self, slices: dict[str, int]) -> None:
        self.slices = slices

    @hookimpl
    def register_datasets(self, register):
        for name, k in self.slices.items():
            register(
                DatasetDefinition(name, f"first {k} BANKING classes (test slice)", "gcd-tsv", (), k)
            )


def write_slice(source: Path, target: Path, classes: set[str]) -> None:
    target.mkdir(parents=True)
    for part, per_class in PER_CLASS.items():
        texts, labels = read_gcd_tsv(source / f"{part}.tsv")
        taken: dict[str, int] = {}
        rows = []
        for text, label in zip(texts, labels, strict=True):
            if label in classes and taken.get(label, 0) < per_class:
                taken[label] = taken.get(label, 0) + 1
                rows.append((text, label))
        with open(target / f"{part}.tsv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(["text", "label"])
            writer.writerows(rows)


def write_slices(shared_data: Path, root: Path, slices: dict[str, int]) -> None:
    """Write each slice under ``root``: the first k BANKING classes in sorted order."""
    _, labels = read_gcd_tsv(shared_data / "banking" / "train.tsv")
    ordered = sorted(set(labels))
    for name, k in slices.items():
        write_slice(shared_data / "banking", root / name, set(ordered[:k]))
