"""ResultRecord: the JSON written for every finished run (versioned schema)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gcdbench.api.spec import RunSpec, canonical_json, sha256_hex

#: Bump when a field changes meaning or is removed; readers refuse newer majors.
#: 2: ``identity`` and ``run_id`` (the folder name); schema-1 records have neither.
SCHEMA_VERSION = 2

METRIC_KEYS = ("acc", "ari", "nmi", "known_acc", "novel_acc", "h_score")


@dataclass
class ResultRecord:
    """One finished run.

    ``metrics`` are percentages (0-100), unrounded. ``predictions_file`` names the per-sample
    predictions written beside the record (one row per test sample).
    """

    spec: RunSpec
    metrics: dict[str, float]
    split: dict[str, Any]
    data: dict[str, Any]
    method: dict[str, Any]
    encoder: dict[str, Any] | None
    provenance: dict[str, Any]
    llm: dict[str, Any] | None = None
    feedback: dict[str, Any] | None = None  # provider, simulated flag, templates, statistics
    clusters: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    predictions_file: str = "predictions.csv"
    # What shaped the result beyond the spec (gcdbench/runner/identity.py): split and data
    # hashes, engine, plugin and model versions. Its sha256 is the run id.
    identity: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def spec_hash(self) -> str:
        return self.spec.hash

    @property
    def run_id(self) -> str:
        """sha256 of the identity; a schema-1 record (no identity) is known by its spec hash."""
        if not self.identity:
            return self.spec.hash
        return sha256_hex(canonical_json(self.identity))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["spec"] = self.spec.to_dict()
        out["spec_hash"] = self.spec.hash
        out["run_id"] = self.run_id
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultRecord:
        data = dict(data)
        version = int(data.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            from gcdbench.errors import GcdbenchError

            raise GcdbenchError(
                f"result record has schema version {version}, newer than this gcdbench "
                f"understands ({SCHEMA_VERSION}); upgrade gcdbench."
            )
        data.pop("spec_hash", None)
        data.pop("run_id", None)
        data["spec"] = RunSpec.from_dict(data["spec"])
        return cls(**data)
