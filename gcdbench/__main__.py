"""``python -m gcdbench``: the CLI under the current interpreter, e.g. when no ``gcdbench``
script is on PATH or a test must pin ``sys.executable``."""

from __future__ import annotations

from gcdbench.cli import main

if __name__ == "__main__":
    main()
