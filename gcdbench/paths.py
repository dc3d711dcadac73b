"""Where gcdbench keeps things on disk, each overridable from the environment."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Content-addressed caches (downloaded data, splits, embeddings): ``GCDBENCH_CACHE``,
    else the user cache dir."""
    env = os.environ.get("GCDBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs  # on first use, not when the plugins import this module

    return Path(platformdirs.user_cache_dir("gcdbench"))


def results_dir(cli_value: str | Path | None = None) -> Path:
    """The results store: ``--results-dir``, else ``GCDBENCH_RESULTS``, else ./results."""
    if cli_value:
        return Path(cli_value).expanduser()
    return Path(os.environ.get("GCDBENCH_RESULTS", "results")).expanduser()
