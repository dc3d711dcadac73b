"""The GCD task a method sees, the split it comes from, and the gold labels it does not see."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gcdbench.api.dataset import DataFile


@dataclass(frozen=True)
class GCDSplit:
    """The saved split artifact: which classes are known and which rows are labeled.

    Identical for every method given (dataset, known ratio, labeled ratio, seed); ``hash``
    is the sha256 of its canonical JSON content (see :mod:`gcdbench.data.split`).
    """

    dataset: str
    known_ratio: float
    labeled_ratio: float
    seed: int
    protocol: str
    known_classes: tuple[str, ...]  # in draw order: position = known-class id
    labeled_rows: tuple[int, ...]  # train-file rows, in file order
    unlabeled_rows: tuple[int, ...]
    dev_rows: tuple[int, ...]  # dev rows of known classes
    test_rows: tuple[int, ...]
    data_files: Mapping[str, str]  # file name -> sha256
    hash: str = ""


@dataclass(frozen=True)
class TaskPart:
    """Texts a method may read, with where they come from (for feature caches)."""

    texts: list[str]
    file: DataFile
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class GCDTask:
    """Everything a method may use. Test labels and unlabeled labels are not here.

    The training pool is the labeled samples first, then the unlabeled ones:
    ``train.texts[:num_labeled]`` have known-class ids ``labeled_y``.
    """

    dataset: str
    task_word: str
    num_classes: int
    known_classes: tuple[str, ...]
    known_class_names: tuple[str, ...]
    train: TaskPart
    num_labeled: int
    labeled_y: np.ndarray
    dev: TaskPart
    dev_y: np.ndarray
    test: TaskPart
    split_hash: str
    seed: int

    @property
    def num_known(self) -> int:
        return len(self.known_classes)


@dataclass(frozen=True)
class Gold:
    """Gold labels (global class ids). Only the runner, oracles and diagnostics read this."""

    classes: tuple[str, ...]
    class_names: Mapping[str, str]
    known_ids: np.ndarray  # global ids of the known classes, in known-class order
    train_y: np.ndarray  # for every pool sample, in pool order
    test_y: np.ndarray
