"""The engine version: which version of gcdbench's own result-shaping code a run used.

A run's result depends on its method plugin *and* on the engine it calls into: data loading
and the split protocol, encoders, the training engine, the feedback layer and LLM backends,
metrics. ``ENGINE_VERSION`` is part of every run's identity (docs/results.md), so a record
made by an older engine is shown as stale instead of being reused.

How it stays honest: ``ENGINE_FINGERPRINT`` is the sha256 of the engine's source files
(:data:`ENGINE_PARTS`). tests/test_identity.py fails whenever those files change and the
fingerprint was not updated. Whoever changes them then decides:

* the change can alter a result (a draw, a default, a prompt, a metric): bump
  ``ENGINE_VERSION``, then record the new fingerprint;
* it cannot (a comment, a rename, a faster path with identical output): record the new
  fingerprint only.

``python -m gcdbench.engine`` prints the current fingerprint; ``--update`` writes it here.
"""

from __future__ import annotations

import hashlib
import re
import sys
from functools import cache
from pathlib import Path

#: Bump when a change to the engine's code can change any run's result.
#: 3: query kinds are plugins and the asking policy left the query payload, so the second
#: option order and noisy-oracle draws are keyed by the question alone (answers of methods
#: that ask can move); an unconstrained reply that does not parse is asked once more.
ENGINE_VERSION = "3"
#: sha256 of the engine sources at ENGINE_VERSION (see the module docstring).
ENGINE_FINGERPRINT = "2e75d19d85053ee4271d4ca8b4197aff83a7438586113ec3696bf770194edce4"

PACKAGE = Path(__file__).resolve().parent
#: The result-shaping code, relative to the package: folders (every .py and .txt inside)
#: and single files. Reporting, the CLI, the results store and executors are not in it.
ENGINE_PARTS = (
    "api",
    "data",
    "encoders",
    "feedback",
    "llm",
    "training",
    "util",
    "metrics.py",
    "runner/run.py",
    "runner/context.py",
)
_SUFFIXES = (".py", ".txt", ".json")


def engine_files() -> list[Path]:
    files: list[Path] = []
    for part in ENGINE_PARTS:
        path = PACKAGE / part
        if path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)
        elif path.is_file():
            files.append(path)
    return sorted(f for f in files if "__pycache__" not in f.parts)


@cache
def engine_fingerprint() -> str:
    """sha256 over (path, content) of every engine file, line endings normalised."""
    digest = hashlib.sha256()
    for path in engine_files():
        digest.update(path.relative_to(PACKAGE).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes().replace(b"\r\n", b"\n"))
        digest.update(b"\0")
    return digest.hexdigest()


def _update() -> None:
    source = Path(__file__)
    text = source.read_text(encoding="utf-8")
    new = re.sub(
        r'^ENGINE_FINGERPRINT = "[^"]*"$',
        f'ENGINE_FINGERPRINT = "{engine_fingerprint()}"',
        text,
        count=1,
        flags=re.MULTILINE,
    )
    source.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    if "--update" in sys.argv[1:]:
        _update()
    print(engine_fingerprint())
