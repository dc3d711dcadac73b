from __future__ import annotations

import os
from pathlib import Path

import pytest
from llm_servers import llama_server, scripted_server  # noqa: F401 - LLM server fixtures

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    for candidate in (os.environ.get("GCDBENCH_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "banking" / "train.tsv").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark data folder (GCDBENCH_DATA, else ../shared/data beside the repo)."""
    path = _shared_data()
    if path is None:
        message = "benchmark data not found: set GCDBENCH_DATA to the data folder"
        if os.environ.get("CI"):  # CI must test the data path, never skip it
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep every test's caches out of the user's home; share them within the session."""
    cache = tmp_path_factory.getbasetemp() / "gcdbench-cache"
    monkeypatch.setenv("GCDBENCH_CACHE", str(cache))
    yield
