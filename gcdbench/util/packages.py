"""Files inside installed distributions: where packaged model weights (and their parts) live."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from gcdbench.errors import GcdbenchError


def installed_file(distribution: str, version: str, suffix: str, *, model: str, hint: str) -> Path:
    """The file of ``distribution`` (pinned at ``version``) whose path ends with ``suffix``,
    found through the package metadata so the package itself is never imported.

    Any problem — package missing, another version, file absent — is one error line that
    names ``model`` and the install command ``hint``.
    """
    try:
        dist = md.distribution(distribution)
    except md.PackageNotFoundError:
        raise GcdbenchError(
            f"model {model!r} needs the package {distribution}; install it with `{hint}`."
        ) from None
    if dist.version != version:
        raise GcdbenchError(
            f"model {model!r} expects {distribution}=={version}, found {dist.version}; "
            f"install it with `{hint}`."
        )
    found = [f for f in dist.files or () if str(f).replace("\\", "/").endswith(suffix)]
    path = Path(str(found[0].locate())) if found else None
    if path is None or not path.is_file():
        raise GcdbenchError(
            f"model {model!r}: package {distribution} {version} has no file {suffix}; "
            f"reinstall it with `{hint} --force-reinstall`."
        )
    return path
