"""Install an example plugin package the way a user would, into a private folder.

pip builds in-tree, so a copy of the source is installed (egg-info and build/ stay out of the
checkout); ``--no-deps`` because gcdbench itself is the one under test. The folder goes on the
PYTHONPATH of subprocesses only, so the test session's own plugin set never sees it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def install_example(example: Path, work: Path) -> tuple[Path, Path]:
    """(the copy of ``example``'s source, the folder it was installed into)."""
    source = shutil.copytree(
        example, work / "src", ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__")
    )
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    command += ["--no-build-isolation", "--no-index", "--target", str(target), str(source)]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return Path(source), target
