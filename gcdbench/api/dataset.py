"""Datasets: what a plugin registers, and what loading one yields."""

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


@dataclass(frozen=True)
class DatasetDefinition:
    """A dataset a plugin registers: where it comes from and how it is laid out.

    ``layout`` selects the reader: ``"gcd-tsv"`` (train/dev/test TSV files, the GLEAN/Loop
    splits) or ``"single-jsonl"`` (the one ``.jsonl`` file listed in ``files``, partitioned
    by a fixed, documented protocol). A plugin with another format subclasses this and
    overrides :meth:`load`.

    ``local_dir`` is a folder of the plugin's own that holds the files (for example data
    shipped inside its package: ``Path(__file__).parent / "data"``). When it holds every
    required file it is read in place and nothing is downloaded; otherwise gcdbench looks
    in ``--data-dir``/``GCDBENCH_DATA`` and then the download cache
    (:func:`gcdbench.data.store.locate_dataset`).
    """

    name: str
    description: str
    layout: str
    files: tuple[RemoteFile, ...]
    num_classes: int
    task: str = "intent"  # the word prompts use for what a class is
    license: str = ""
    source: str = ""
    label_names: Mapping[str, str] | None = None
    local_dir: str | Path | None = None

    def load(self, folder: Path) -> DatasetParts:
        from gcdbench.data.loading import load_dataset

        return load_dataset(self, folder)
