"""A run's identity: everything that shapes its result, hashed into its run id.

The spec says what was asked (method, parameters, dataset, ratios, seed, encoder, LLM). The
identity adds what the spec cannot know until the data and the installed code are looked at:

* ``split_hash``: the split artifact's hash, which covers the sha256 of every data file the
  rows index into, the split protocol and the drawn rows;
* ``data_files``: the sha256 of every file read (label names included: LLM prompts show them);
* ``engine_version``: gcdbench's result-shaping code (:mod:`gcdbench.engine`);
* ``plugins``: distribution and version of each plugin involved (method, dataset, encoder,
  feedback provider, refiner and K estimator where the run has one);
* ``models``: the encoder's weight fingerprint, and the weights hash of an LLM given as a
  local file or folder (packaged and API models are named by the spec itself).

The run id is the sha256 of the identity. A record whose identity no longer matches what is
installed (or whose data files changed) is *stale*: ``show`` says so and leaderboards leave
it out. docs/results.md describes the design.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from gcdbench import registry
from gcdbench.api.k_estimator import parse_k
from gcdbench.api.record import ResultRecord
from gcdbench.api.spec import RunSpec, canonical_json, sha256_hex
from gcdbench.engine import ENGINE_VERSION
from gcdbench.errors import GcdbenchError


@dataclass(frozen=True)
class RunIdentity:
    spec: RunSpec
    split_hash: str
    data_files: Mapping[str, str]  # file name -> sha256
    engine_version: str = ENGINE_VERSION
    plugins: Mapping[str, str] = field(default_factory=dict)  # role -> "dist==version"
    models: Mapping[str, str] = field(default_factory=dict)  # role -> weights identity

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "split_hash": self.split_hash,
            "data_files": dict(sorted(self.data_files.items())),
            "engine_version": self.engine_version,
            "plugins": dict(sorted(self.plugins.items())),
            "models": dict(sorted(self.models.items())),
        }

    @property
    def run_id(self) -> str:
        return sha256_hex(canonical_json(self.to_dict()))


def run_identity(spec: RunSpec, split_hash: str, data_files: Mapping[str, str]) -> RunIdentity:
    """The identity of ``spec`` on the data just read, with the code installed now."""
    return RunIdentity(
        spec=spec,
        split_hash=split_hash,
        data_files=dict(data_files),
        plugins=plugin_versions(spec),
        models=model_identities(spec),
    )


def _plugin_roles(spec: RunSpec) -> dict[str, tuple[str, str]]:
    roles = {"method": ("method", spec.method), "dataset": ("dataset", spec.dataset)}
    if spec.refine:
        roles["refiner"] = ("refiner", spec.refine)
    estimator = _k_estimator(spec)
    # Registered whenever a run starts; a record read after the estimator was uninstalled
    # is stale for that reason (stale_reasons), not an error here.
    if estimator and estimator in registry.names("k-estimator"):
        roles["k-estimator"] = ("k-estimator", estimator)
    if spec.encoder and spec.encoder.partition(":")[0] in registry.names("encoder"):
        roles["encoder"] = ("encoder", spec.encoder.partition(":")[0])
    if spec.llm:
        name = spec.llm.split(";", 1)[0].partition(":")[0]
        for kind in ("feedback", "llm"):
            if name in registry.names(kind):
                roles["llm"] = (kind, name)
    return roles


def _k_estimator(spec: RunSpec) -> str | None:
    """The K estimator a spec names (``--k estimate:NAME``), else None."""
    return parse_k(spec.k).estimator if spec.k else None


def plugin_versions(spec: RunSpec) -> dict[str, str]:
    """``role -> distribution==version`` of every plugin the run involves."""
    out: dict[str, str] = {}
    for role, (kind, name) in _plugin_roles(spec).items():
        info = registry.owner(kind, name)
        out[role] = f"{info.distribution or info.name}=={info.version or 'unknown'}"
    return out


def model_identities(spec: RunSpec) -> dict[str, str]:
    """Weights identities: the encoder's fingerprint; an LLM given as a local path, its hash."""
    return dict(_model_identities(spec.encoder, spec.llm))


@cache
def _model_identities(encoder: str | None, llm: str | None) -> tuple[tuple[str, str], ...]:
    # Once per process and model: `gcdbench show` checks every record of a store, and the
    # records of a sweep share a handful of models.
    from gcdbench.encoders import encoder_factory

    out: list[tuple[str, str]] = []
    if encoder:
        out.append(("encoder", encoder_factory(encoder)().fingerprint))
    local = _local_llm_weights(llm)
    if local is not None:
        out.append(("llm", local))
    return tuple(out)


def _local_llm_weights(llm: str | None) -> str | None:
    """A local file's sha256 or a local folder's fingerprint, for ``--llm BACKEND:PATH``."""
    if not llm:
        return None
    ref = llm.split(";", 1)[0].partition(":")[2]
    path = Path(ref).expanduser() if ref else None
    if path is None or not path.exists():
        return None
    from gcdbench.encoders.cache import folder_fingerprint
    from gcdbench.llm.models import verified_sha256

    return verified_sha256(path) if path.is_file() else folder_fingerprint(path)


# -- staleness -----------------------------------------------------------------------------


def stale_reasons(record: ResultRecord, *, check_data: bool = True) -> list[str]:
    """Why ``record`` no longer describes what a run would give now; empty when current.

    Compares the recorded identity with the installed engine, method and plugins, and the
    recorded data-file hashes with the files in the folder the run read (when it still
    exists; a folder that is gone cannot be checked and does not make a record stale).
    """
    identity = record.identity
    if not identity:
        return ["recorded before run identity covered data and code; re-run it"]
    reasons: list[str] = []
    if identity.get("engine_version") != ENGINE_VERSION:
        reasons.append(
            f"engine version {identity.get('engine_version')} (installed: {ENGINE_VERSION})"
        )
    spec = record.spec
    try:
        installed = registry.get("method", spec.method).version
    except GcdbenchError:
        reasons.append(f"method {spec.method!r} is not installed")
    else:
        if installed != spec.method_version:
            reasons.append(f"method version {spec.method_version} (installed: {installed})")
    if spec.refine:
        try:
            refiner = registry.get("refiner", spec.refine).version
        except GcdbenchError:
            reasons.append(f"refiner {spec.refine!r} is not installed")
        else:
            if refiner != spec.refine_version:
                reasons.append(f"refiner version {spec.refine_version} (installed: {refiner})")
    estimator = _k_estimator(spec)
    if estimator:
        try:
            installed_k = registry.get("k-estimator", estimator).version
        except GcdbenchError:
            reasons.append(f"K estimator {estimator!r} is not installed")
        else:
            if installed_k != spec.k_version:
                reasons.append(f"K estimator version {spec.k_version} (installed: {installed_k})")
    with contextlib.suppress(GcdbenchError):
        now = plugin_versions(spec)
        for role, version in sorted(dict(identity.get("plugins", {})).items()):
            if now.get(role, version) != version:
                reasons.append(f"{role} plugin {version} (installed: {now[role]})")
    if check_data:
        reasons.extend(_changed_data(record))
        reasons.extend(_changed_models(record))
    return reasons


def _changed_models(record: ResultRecord) -> list[str]:
    """Weights that are no longer what the run used (an upgraded model package, a local
    model folder edited). Models that cannot be located now (a hub id offline) are not
    checked, as a data folder that is gone is not."""
    recorded = dict(record.identity.get("models", {}))
    if not recorded:
        return []
    try:
        now = model_identities(record.spec)
    except (GcdbenchError, OSError):
        return []
    return [
        f"{role} weights changed since the run ({old[:12]}… → {now[role][:12]}…)"
        for role, old in sorted(recorded.items())
        if role in now and now[role] != old
    ]


def _changed_data(record: ResultRecord) -> list[str]:
    from gcdbench.llm.models import verified_sha256

    folder = record.data.get("folder")
    if not folder or not Path(folder).is_dir():
        return []
    changed = []
    for name, sha in sorted(dict(record.identity.get("data_files", {})).items()):
        path = Path(folder) / name
        if not path.is_file():
            changed.append(f"data file {path} is gone")
        elif verified_sha256(path) != sha:
            changed.append(f"data file {path} changed since the run")
    return changed
