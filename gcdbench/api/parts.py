"""What loading a dataset yields: its files, its parts and the class vocabulary.

Kept apart from :mod:`gcdbench.api.dataset` so the readers in :mod:`gcdbench.data.loading`
build these without importing the definition that calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset, with the sha256 of its published bytes.

    ``url`` is where ``gcdbench data download`` fetches it from; ``""`` for a file that has
    no public source and ships with its plugin (see :attr:`DatasetDefinition.local_dir`).
    """

    name: str  # path inside the dataset's folder, e.g. "train.tsv"
    url: str
    sha256: str
    required: bool = True


@dataclass(frozen=True)
class DataFile:
    """A file that was read, with the hash of the bytes that were read."""

    name: str
    path: Path
    sha256: str
    verified: bool  # the hash equals the published one

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "verified": self.verified}


@dataclass(frozen=True)
class Part:
    """Rows of one data file: texts, their label keys, and their row numbers in the file."""

    texts: list[str]
    labels: list[str]
    file: DataFile
    rows: np.ndarray  # 0-based data-row index in ``file`` (header excluded)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class DatasetParts:
    """A loaded dataset: train/dev/test parts and the class vocabulary.

    ``classes`` is the sorted list of label keys; a class's position in it is its global id.
    ``label_names`` maps a label key to the name shown to people and LLMs (for most
    datasets the key itself; StackOverflow's keys are numbers).
    """

    name: str
    train: Part
    dev: Part | None
    test: Part
    classes: tuple[str, ...]
    label_names: Mapping[str, str]
    files: tuple[DataFile, ...]
    protocol: Mapping[str, object] = field(default_factory=dict)


__all__ = ["DataFile", "DatasetParts", "Part", "RemoteFile"]
