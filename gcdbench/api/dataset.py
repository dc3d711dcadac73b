"""Datasets: what a plugin registers, and what loading one yields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gcdbench.api.parts import DataFile, DatasetParts, Part, RemoteFile


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
        # The readers are engine code (numpy only); they import the part types from
        # gcdbench.api.parts, never this module, so the two do not import each other.
        from gcdbench.data.loading import load_dataset

        return load_dataset(self, folder)


__all__ = ["DataFile", "DatasetDefinition", "DatasetParts", "Part", "RemoteFile"]
