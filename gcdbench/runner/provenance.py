"""Provenance: what code, packages, plugins and hardware produced a result."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re
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

GIT_STATUS = ("status", "--porcelain=v2", "--branch", "--untracked-files=no")


@cache
def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the gcdbench source tree, when it is a git checkout."""
    root = Path(gcdbench.__file__).resolve().parent.parent
    # An installed copy in site-packages has no commit of its own; asking git there could
    # report whatever repository happens to contain the virtualenv.
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        # One process for both: porcelain v2 heads its listing with "# branch.oid <commit>".
        status = subprocess.run(
            ["git", "-C", str(root), *GIT_STATUS],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    oids = [line.split()[2] for line in status if line.startswith("# branch.oid ")]
    commit = oids[0] if oids and oids[0] != "(initial)" else None
    return {"commit": commit, "dirty": any(not line.startswith("#") for line in status)}


@cache
def package_versions() -> dict[str, str]:
    """The installed versions of PACKAGES, as ``importlib.metadata.version`` gives them.

    Read from the ``<name>-<version>.dist-info`` folder names of the import path, one folder
    listing per path entry, instead of one metadata search per package (three times faster
    on a cold start); a package found no such way is asked of ``importlib.metadata``."""
    wanted = {_normalized(name): name for name in PACKAGES}
    out: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            if not folder.endswith(".dist-info") or "-" not in folder:
                continue
            dist, version = folder[: -len(".dist-info")].split("-", 1)
            name = wanted.get(_normalized(dist))
            if name is not None and name not in out:  # the first on the path is imported
                out[name] = version
    for name in PACKAGES:
        if name not in out:
            try:
                out[name] = md.version(name)
            except md.PackageNotFoundError:
                continue
    return {name: out[name] for name in PACKAGES if name in out}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@cache
def hardware() -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        # platform.processor() runs `uname -p` in a subprocess on Linux: only when needed.
        "cpu": cpu or platform.processor() or platform.machine(),
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
