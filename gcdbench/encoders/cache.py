"""On-disk caches for encoders: model-folder fingerprints and text features.

Features are cached per (encoder fingerprint, data file sha256) for every row of the file,
so all methods, splits and seeds that read the same file with the same encoder share one
computation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gcdbench.api.spec import canonical_json, sha256_hex
from gcdbench.paths import cache_dir
from gcdbench.util.files import atomic_open, sha256_file, write_json

# Files that describe a model but do not change what it computes.
_IGNORED = {"README.md", ".gitattributes"}


def folder_fingerprint(folder: Path) -> str:
    """sha256 over every file's relative path and content hash.

    Hashing ~100 MB of weights takes a fraction of a second, but it is still remembered per
    (path, size, mtime) so repeated runs pay nothing.
    """
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name not in _IGNORED and ".cache" not in p.parts
    )
    stamp = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    memo_key = hashlib.sha256(json.dumps([str(folder.resolve()), stamp]).encode()).hexdigest()
    memo = cache_dir() / "fingerprints" / f"{memo_key}.txt"
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(sha256_file(path).encode())
    fingerprint = digest.hexdigest()
    with atomic_open(memo) as fh:
        fh.write(fingerprint)
    return fingerprint


def model_fingerprint(backend: str, folder: Path, **settings: object) -> str:
    """An encoder fingerprint: the backend, the model folder's content (weights and the
    model's own pooling/normalisation config) and the ``settings`` that change the output."""
    return sha256_hex(
        canonical_json({"backend": backend, "files": folder_fingerprint(folder), **settings})
    )


class FeatureCache:
    """Feature matrices of whole data files, keyed by encoder fingerprint and file hash."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "features"
        self.hits = 0
        self.misses = 0

    def path(self, encoder_fingerprint: str, file_sha256: str) -> Path:
        return self.root / encoder_fingerprint[:24] / f"{file_sha256[:24]}.npy"

    def get_or_compute(
        self,
        encoder_fingerprint: str,
        file_sha256: str,
        compute: Callable[[], np.ndarray],
    ) -> np.ndarray:
        path = self.path(encoder_fingerprint, file_sha256)
        if path.is_file():
            self.hits += 1
            return np.load(path)
        self.misses += 1
        features = np.ascontiguousarray(compute(), dtype=np.float32)
        with atomic_open(path, "wb") as fh:
            np.save(fh, features)
        write_json(
            path.with_suffix(".json"),
            {"encoder": encoder_fingerprint, "file_sha256": file_sha256, "shape": features.shape},
        )
        return features
