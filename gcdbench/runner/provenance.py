"""Provenance: what code, packages, plugins and hardware produced a result."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import resource
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import gcdbench
from gcdbench import registry

PACKAGES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "torch",
    "transformers",
    "sentence-transformers",
    "pluggy",
    "openai",
    "llama-cpp-python",
    "vllm",
)


@cache
def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the gcdbench source tree, when it is a git checkout."""
    root = Path(gcdbench.__file__).resolve().parent.parent
    # An installed copy in site-packages has no commit of its own; asking git there could
    # report whatever repository happens to contain the virtualenv.
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            != ""
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


@cache
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


@cache
def hardware() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "gpu": None,
    }
    if "torch" in sys.modules:  # only ask when torch is already loaded: it is slow to import
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def plugins() -> list[dict[str, Any]]:
    return [
        {"name": p.name, "distribution": p.distribution, "version": p.version}
        for p in registry.plugins()
    ]


def collect() -> dict[str, Any]:
    return {
        "gcdbench_version": gcdbench.__version__,
        "git": git_state(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "plugins": plugins(),
        "hardware": hardware(),
        "argv": sys.argv[1:],
    }
