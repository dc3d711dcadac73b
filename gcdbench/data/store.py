"""Where the data lives, and downloading it from its public sources.

Where a dataset's files are read from (:func:`locate_dataset`), first match wins:

1. the definition's own folder (``DatasetDefinition.local_dir``), when it holds every
   required file: data a plugin ships with itself is read in place;
2. ``<data root>/<name>``, the data root being ``--data-dir``, else ``GCDBENCH_DATA``: a
   folder the user chose is read as it is, never downloaded into. A root without a
   ``<name>`` folder does not hide the dataset (next step); a ``<name>`` folder that lacks
   files is an error, so a half-copied folder is never silently passed over;
3. ``<cache>/data/<name>``, downloading the missing files into it first.

``gcdbench data download`` writes into the cache too unless told ``--to DIR``: a shared
``GCDBENCH_DATA`` folder is never written to behind the user's back.

Downloads go to a temporary file beside the target, are checked against the published
sha256, and only then renamed into place, so an interrupted or corrupted download never
leaves a file under its final name. ``GCDBENCH_DATA_MIRROR`` (or ``mirror=``) replaces the
public URLs with ``<mirror>/<dataset>/<file>``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gcdbench import __version__
from gcdbench.api.dataset import DatasetDefinition, RemoteFile
from gcdbench.errors import DataError
from gcdbench.paths import cache_dir
from gcdbench.util.files import atomic_open, sha256_file

MIRROR_ENV = "GCDBENCH_DATA_MIRROR"
DATA_ENV = "GCDBENCH_DATA"
CHUNK = 1 << 16


@dataclass(frozen=True)
class DownloadEvent:
    """What :func:`download_dataset` reports to ``on_progress``.

    ``kind`` is ``"skip"`` (present with the right hash), ``"start"``, ``"progress"``,
    ``"retry"`` (an attempt failed and will be repeated; ``message`` says why) or ``"done"``.
    ``retries`` counts the failed attempts of this file so far.
    """

    kind: str
    file: str
    url: str
    done_bytes: int = 0
    total_bytes: int | None = None
    retries: int = 0
    message: str = ""


ProgressCallback = Callable[[DownloadEvent], None]


def resolve_data_root(cli_value: str | Path | None) -> tuple[Path, str]:
    """The data root and its origin: ``"--data-dir"``, ``"GCDBENCH_DATA"`` or ``"cache"``."""
    return user_data_root(cli_value) or (cache_data_root(), "cache")


def user_data_root(cli_value: str | Path | None) -> tuple[Path, str] | None:
    """``--data-dir``, else ``GCDBENCH_DATA``, with its origin; None when neither is set."""
    for origin, value in (("--data-dir", cli_value), (DATA_ENV, os.environ.get(DATA_ENV))):
        if value is None or str(value) == "":
            continue
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DataError(
                f"{origin} {path} is not an existing folder; point it at a folder containing "
                f"<dataset>/..., or leave {origin} unset to use the download cache"
            )
        return path, origin
    return None


def cache_data_root() -> Path:
    """Where datasets are downloaded to: ``<cache>/data``."""
    return cache_dir() / "data"


def missing_files(defn: DatasetDefinition, folder: Path) -> list[str]:
    """Names of the required files of ``defn`` that ``folder`` lacks."""
    return [f.name for f in defn.files if f.required and not (folder / f.name).is_file()]


def own_folder(defn: DatasetDefinition) -> Path | None:
    """The folder the definition declares for its files (``local_dir``), if any."""
    if defn.local_dir is None or str(defn.local_dir) == "":
        return None
    folder = Path(defn.local_dir).expanduser()
    if not folder.is_absolute():
        # Relative to what? The current folder changes between runs; the plugin does not.
        raise DataError(
            f"dataset {defn.name!r} declares local_dir={str(defn.local_dir)!r}, which is not "
            "an absolute path; build it in the plugin from Path(__file__).parent"
        )
    return folder


def _complete(defn: DatasetDefinition, folder: Path) -> bool:
    return folder.is_dir() and not missing_files(defn, folder)


def locate_dataset(
    definition: DatasetDefinition,
    data_dir: str | Path | None,
    *,
    download: bool = True,
    mirror: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[Path, str]:
    """The folder holding ``definition``'s files, and where it is: ``"plugin"``,
    ``"--data-dir"``, ``"GCDBENCH_DATA"`` or ``"cache"`` (see the module docstring).

    ``data_dir`` is the ``--data-dir`` value (``GCDBENCH_DATA`` is read here). Missing files
    are downloaded into the cache only when ``download``.
    """
    return _locate(
        definition,
        user_data_root(data_dir),
        cache_data_root(),
        download=download,
        mirror=mirror,
        on_progress=on_progress,
    )


def _locate(
    defn: DatasetDefinition,
    user: tuple[Path, str] | None,
    cache: Path,
    *,
    download: bool,
    mirror: str | None,
    on_progress: ProgressCallback | None,
) -> tuple[Path, str]:
    own = own_folder(defn)
    if own is not None and _complete(defn, own):
        return own, "plugin"
    looked = [f"{own} (the plugin's folder)"] if own is not None else []
    if user is not None:
        root, origin = user
        folder = root / defn.name
        if folder.is_dir():
            missing = missing_files(defn, folder)
            if missing:
                raise DataError(
                    f"{folder} lacks {', '.join(missing)} ({origin} {root}); add the missing "
                    f"files, or remove the {defn.name} folder there to use the download cache"
                )
            return folder, origin
        looked.append(f"{folder} ({origin})")
    folder = cache / defn.name
    missing = missing_files(defn, folder)
    if folder.is_dir() and not missing:
        return folder, "cache"
    looked.append(f"{folder} (cache)")
    where = "; looked in " + ", ".join(looked)
    if not download:
        raise DataError(
            f"{defn.name!r} is not here{where}; run `gcdbench data download {defn.name}`"
        )
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    unreachable = [f.name for f in defn.files if f.name in missing and not f.url and not mirror]
    if unreachable:
        raise DataError(
            f"{defn.name!r} lacks {', '.join(unreachable)}, which has no download URL{where}; "
            f"put the files in <data dir>/{defn.name} and pass --data-dir, or fix the "
            "plugin's local_dir"
        )
    download_dataset(defn, cache, mirror=mirror, on_progress=on_progress)
    return folder, "cache"


def ensure_dataset(
    defn: DatasetDefinition,
    root: Path,
    origin: str,
    *,
    download: bool = True,
    mirror: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """The folder of ``defn`` given a root from :func:`resolve_data_root` (kept for callers
    written before :func:`locate_dataset`, which also says where the folder is)."""
    user = None if origin == "cache" else (Path(root), origin)
    cache = Path(root) if origin == "cache" else cache_data_root()
    folder, _ = _locate(
        defn, user, cache, download=download, mirror=mirror, on_progress=on_progress
    )
    return folder


def file_url(defn: DatasetDefinition, file: RemoteFile, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{defn.name}/{file.name}" if mirror else file.url


def _target(folder: Path, file: RemoteFile) -> Path:
    # Names come from plugins; never let one write outside the dataset's folder.
    rel = PurePosixPath(file.name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DataError(
            f"dataset file name {file.name!r} must be a relative path inside its folder"
        )
    return folder.joinpath(*rel.parts)


def download_dataset(
    defn: DatasetDefinition,
    root: Path,
    *,
    mirror: str | None = None,
    force: bool = False,
    on_progress: ProgressCallback | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 1.0,
) -> list[Path]:
    """Fetch the files of ``defn`` into ``root/defn.name``; return the paths of its files.

    Files already there with the published hash are skipped unless ``force`` (``on_progress``
    gets a ``"skip"`` event for them, and ``"done"`` for each file fetched). Each file is
    tried ``1 + retries`` times on network errors, timeouts and HTTP 5xx, waiting
    ``backoff × 2**attempt`` seconds between tries. An optional file that cannot be fetched
    is left out; anything else raises :class:`DataError`.
    """
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    folder = Path(root) / defn.name
    report = on_progress or (lambda event: None)
    present: list[Path] = []
    for file in defn.files:
        target = _target(folder, file)
        url = file_url(defn, file, mirror)
        if not force and target.is_file() and sha256_file(target) == file.sha256:
            report(DownloadEvent("skip", file.name, url))
            present.append(target)
            continue
        if not url:
            if file.required:
                raise DataError(
                    f"{defn.name!r} has no download URL for {file.name} (its plugin ships the "
                    "file itself); reinstall the plugin, or give the file a URL"
                )
            continue
        try:
            _fetch(file, url, target, report, timeout=timeout, retries=retries, backoff=backoff)
        except DataError:
            if file.required:
                raise
            continue
        present.append(target)
    return present


class _Retryable(Exception):
    pass


def _fetch(
    file: RemoteFile,
    url: str,
    target: Path,
    report: ProgressCallback,
    *,
    timeout: float,
    retries: int,
    backoff: float,
) -> None:
    failures = 0
    while True:
        report(DownloadEvent("start", file.name, url, retries=failures))
        try:
            _fetch_once(file, url, target, report, timeout=timeout, retries=failures)
            return
        except _Retryable as exc:
            failures += 1
            if failures > retries:
                raise DataError(
                    f"could not download {url} after {failures} attempts ({exc}); check the "
                    f"connection (or {MIRROR_ENV}), or fetch the file yourself and point "
                    f"--data-dir at a folder containing {target.parent.name}/{file.name}"
                ) from None
            report(DownloadEvent("retry", file.name, url, retries=failures, message=str(exc)))
            time.sleep(backoff * 2 ** (failures - 1))


def _fetch_once(
    file: RemoteFile,
    url: str,
    target: Path,
    report: ProgressCallback,
    *,
    timeout: float,
    retries: int,
) -> None:
    # Here, not at the top: urllib.request brings http.client and the email package, which
    # `gcdbench data list` (this module's other user) has no use for.
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": f"gcdbench/{__version__}"})
    digest = hashlib.sha256()
    done = 0
    # Anything raised inside the block removes the temporary file: only checked bytes land.
    with atomic_open(target, "wb") as out:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    report(DownloadEvent("progress", file.name, url, done, total, retries))
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise _Retryable(f"HTTP {exc.code}") from None
            raise DataError(
                f"could not download {url} (HTTP {exc.code} {exc.reason}); check the URL "
                f"or {MIRROR_ENV}"
            ) from None
        except (
            urllib.error.URLError,
            TimeoutError,
            ConnectionError,
            http.client.HTTPException,
        ) as exc:
            raise _Retryable(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
        if total is not None and done != total:
            raise _Retryable(f"got {done} of {total} bytes")
        got = digest.hexdigest()
        if got != file.sha256:
            raise DataError(
                f"{url}: sha256 mismatch for {file.name} (expected {file.sha256}, got {got}); "
                "the file was not kept: retry later, or report the changed source"
            )
    report(DownloadEvent("done", file.name, url, done, done, retries))
