"""Provenance read the quick way (one git process, dist-info folder names) says what the
slow ways say: ``git rev-parse`` and ``git status``, ``importlib.metadata.version``."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
from pathlib import Path

import pytest

import gcdbench
from gcdbench.runner import provenance

ROOT = Path(gcdbench.__file__).resolve().parent.parent


def test_package_versions_are_what_importlib_metadata_says() -> None:
    provenance.package_versions.cache_clear()
    expected = {}
    for name in provenance.PACKAGES:
        try:
            expected[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    assert "numpy" in expected and "torch" in expected
    assert provenance.package_versions() == expected


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="gcdbench is not a git checkout here")
def test_git_state_is_what_rev_parse_and_status_say() -> None:
    provenance.git_state.cache_clear()
    state = provenance.git_state()
    assert state["commit"] == _git("rev-parse", "HEAD").strip()
    assert state["dirty"] == (_git("status", "--porcelain", "--untracked-files=no").strip() != "")
