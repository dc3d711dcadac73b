"""gcdbench: a plugin-based benchmark harness for Generalized Category Discovery on text."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from gcdbench.hookspecs import hookimpl

try:
    __version__ = version("gcdbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "hookimpl"]
