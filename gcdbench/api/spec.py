"""RunSpec: everything that identifies one run, and its stable hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
DEFAULT_LABELED_RATIO = 0.1


def canonical_json(obj: Any) -> str:
    """The one JSON form that hashes are taken over (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RunSpec:
    """One run: a method (with ablations and parameters) on one split of one dataset.

    ``params`` holds the fully resolved hyper-parameters once the runner has applied the
    method's defaults, the preset and explicit overrides, so the hash changes whenever a
    value that shapes the result changes.
    """

    method: str
    dataset: str
    known_ratio: float
    seed: int
    labeled_ratio: float = DEFAULT_LABELED_RATIO
    ablations: tuple[str, ...] = ()
    encoder: str | None = DEFAULT_ENCODER  # None for methods that use no encoder
    llm: str | None = None
    preset: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    method_version: str = ""
    # ``--refine NAME``: a refiner applied to the method's output (see gcdbench.api.refiner),
    # with its resolved parameters and version. Left out of the dict (and so of the hash)
    # when there is none, so the ids of unrefined runs do not change.
    refine: str | None = None
    refine_params: Mapping[str, Any] = field(default_factory=dict)
    refine_version: str = ""
    # ``--k``: None for the dataset's true K; a fixed K ("50") or "estimate:NAME" with the
    # estimator's version. Left out of the dict (and so of the hash) when None, so the ids of
    # runs given the true K do not change.
    k: str | None = None
    k_version: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ablations", tuple(sorted(set(self.ablations))))
        object.__setattr__(self, "params", dict(sorted(dict(self.params).items())))
        object.__setattr__(self, "refine_params", dict(sorted(dict(self.refine_params).items())))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ablations"] = list(self.ablations)
        if self.refine is None:
            for key in ("refine", "refine_params", "refine_version"):
                out.pop(key)
        if self.k is None:
            for key in ("k", "k_version"):
                out.pop(key)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        data = dict(data)
        data["ablations"] = tuple(data.get("ablations", ()))
        return cls(**data)

    @property
    def hash(self) -> str:
        return sha256_hex(canonical_json(self.to_dict()))

    @property
    def label(self) -> str:
        """Method with its ablations, as leaderboards show it."""
        refined = f" +{self.refine}" if self.refine else ""
        return self.method + refined + "".join(f" w/o {a}" for a in self.ablations)

    def with_(self, **changes: Any) -> RunSpec:
        return replace(self, **changes)
