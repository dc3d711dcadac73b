"""The results store: one folder per finished run, written atomically.

Layout::

    <results>/runs/<dataset>/<method>/<run id[:16]>/record.json
                                                      /predictions.csv
    <results>/splits/<dataset>-kr..-lr..-s..-<split hash[:12]>.json

A run folder appears whole or not at all: it is written under a hidden temporary name and
renamed into place, so an interrupted run never leaves a half record.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from gcdbench.api.record import ResultRecord
from gcdbench.api.spec import RunSpec
from gcdbench.errors import GcdbenchError
from gcdbench.util.files import write_json

if TYPE_CHECKING:  # only the runner, which has pandas loaded, writes records
    import pandas as pd

RECORD = "record.json"


class ResultsStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = root / "runs"
        self.splits = root / "splits"

    def check_writable(self) -> None:
        """Fail before any work when results could not be saved."""
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.runs, prefix=".probe-"):
                pass
        except OSError as exc:
            raise GcdbenchError(
                f"results dir {self.root} is not writable ({exc.strerror or exc}); "
                "pass --results-dir (or set GCDBENCH_RESULTS) to a folder you can write."
            ) from None

    def run_dir(self, spec: RunSpec, run_id: str) -> Path:
        """Folders are named by the run id (gcdbench/runner/identity.py), not the spec: the
        same spec on changed data or code is another run."""
        return self.runs / spec.dataset / spec.method / run_id[:16]

    def find(self, spec: RunSpec, run_id: str) -> Path | None:
        path = self.run_dir(spec, run_id) / RECORD
        return path if path.is_file() else None

    def write(self, record: ResultRecord, predictions: pd.DataFrame) -> Path:
        final = self.run_dir(record.spec, record.run_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            predictions.to_csv(tmp / record.predictions_file, index=False)
            write_json(tmp / RECORD, record.to_dict())
            old = None
            if final.exists():  # a --force re-run replaces the old record
                old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final / RECORD

    def record_paths(self) -> Iterator[Path]:
        if not self.runs.is_dir():
            return
        for path in sorted(self.runs.glob(f"*/*/*/{RECORD}")):
            if not path.parent.name.startswith("."):
                yield path

    def records(self) -> Iterator[ResultRecord]:
        for path in self.record_paths():
            yield load_record(path)

    def lookup(self, prefix: str) -> Path:
        """The record whose run id starts with ``prefix`` (or a path to one)."""
        as_path = Path(prefix)
        if as_path.is_file():
            return as_path
        if (as_path / RECORD).is_file():
            return as_path / RECORD
        # Folders are named by the hash's first 16 characters; only a longer id needs a read.
        matches = [p for p in self.record_paths() if p.parent.name.startswith(prefix[:16])]
        if len(prefix) > 16:
            matches = [p for p in matches if load_record(p).run_id.startswith(prefix)]
        if not matches:
            raise GcdbenchError(
                f"no run {prefix!r} in {self.root}; `gcdbench show` with no argument lists runs."
            )
        if len(matches) > 1:
            raise GcdbenchError(
                f"run id {prefix!r} is ambiguous ({len(matches)} runs); give more of it."
            )
        return matches[0]


def load_record(path: Path) -> ResultRecord:
    try:
        return ResultRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GcdbenchError(
            f"cannot read result record {path} ({type(exc).__name__}: {exc}); "
            "delete it or re-run with --force."
        ) from None
