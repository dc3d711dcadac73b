"""Paired per-seed differences between each method and a baseline, with significance tests.

Two runs are a pair when they ran on the same split: the record's ``split.hash`` is equal,
which means the same dataset, known and labeled ratio, seed and data files. Seeds move a
method's ACC by more than many gaps between methods (the split draws the known classes), so
a comparison over the splits both methods ran is far more sensitive than two means side by
side. Per (method, dataset, known ratio): the differences method − baseline in ACC points,
their mean, a paired t-test and a Wilcoxon signed-rank test (scipy, two-sided). Below
:data:`MIN_PAIRS` pairs neither test is run: "n too small".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gcdbench.errors import GcdbenchError
from gcdbench.report.leaderboard import RowGroup, _dataset_sort_key, _percent

__all__ = [
    "DEFAULT_BASELINES",
    "MIN_PAIRS",
    "PairedComparison",
    "paired_comparisons",
    "paired_table",
    "resolve_baseline",
]

#: Fewer pairs than this and a test says nothing worth printing (Wilcoxon's smallest
#: two-sided p with 2 pairs is 0.5).
MIN_PAIRS = 3
TOO_FEW = "n too small"
#: The baseline when ``--baseline`` is not given: the first of these the store has.
DEFAULT_BASELINES = ("no-llm", "kmeans")
EMPTY = "–"


@dataclass(frozen=True)
class PairedComparison:
    """``row`` against ``baseline`` on one dataset and known ratio, over the shared splits."""

    row: str
    baseline: str
    dataset: str
    known_ratio: float
    seeds: tuple[int, ...]
    differences: tuple[float, ...]  # row − baseline, in the metric's points, seed order
    t_p: float | None
    wilcoxon_p: float | None
    note: str  # why a p-value is missing; "" when both are there

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return sum(self.differences) / len(self.differences)


def resolve_baseline(groups: Sequence[RowGroup], wanted: str | None) -> str | None:
    """The leaderboard row ``--baseline`` names: a row name, or a method whose runs form one
    row (among real runs, if it also has simulated ones). Without ``wanted``, the first of
    :data:`DEFAULT_BASELINES` present, or None."""
    if wanted is None:
        for name in DEFAULT_BASELINES:
            try:
                return resolve_baseline(groups, name)
            except GcdbenchError:
                continue
        return None
    rows = {g.row for g in groups}
    if wanted in rows:
        return wanted
    of_method = [g for g in groups if g.records[0].spec.label == wanted]
    candidates = {g.row for g in of_method}
    if len(candidates) > 1:
        candidates = {g.row for g in of_method if not g.apart} or candidates
    if len(candidates) == 1:
        return candidates.pop()
    if not candidates:
        methods = sorted({g.records[0].spec.label for g in groups})
        raise GcdbenchError(
            f"--baseline {wanted!r} has no runs in this store; pass one of: {', '.join(methods)}."
        )
    shown = "; ".join(repr(c) for c in sorted(candidates))
    raise GcdbenchError(
        f"--baseline {wanted!r} matches several leaderboard rows ({shown}); pass one of them "
        "in full."
    )


def paired_comparisons(
    groups: Iterable[RowGroup], baseline: str, metric: str = "acc"
) -> list[PairedComparison]:
    """Every other row against ``baseline`` on each (dataset, known ratio) where they share at
    least one split; sorted by known ratio, dataset and row."""
    groups = list(groups)
    base_by_split = {
        r.split["hash"]: r
        for g in groups
        if g.row == baseline
        for r in g.records
        if r.split.get("hash")  # a record without a split hash pairs with nothing
    }
    out = []
    for group in groups:
        if group.row == baseline:
            continue
        pairs: list[tuple[int, float, float]] = []
        for record in group.records:
            base = base_by_split.get(record.split.get("hash"))
            value = _value(record.metrics, metric)
            base_value = None if base is None else _value(base.metrics, metric)
            if value is not None and base_value is not None:
                pairs.append((record.spec.seed, value, base_value))
        if not pairs:
            continue
        pairs.sort()
        spec = group.records[0].spec
        differences = tuple(a - b for _, a, b in pairs)
        t_p, wilcoxon_p, note = _tests([a for _, a, _ in pairs], [b for _, _, b in pairs])
        out.append(
            PairedComparison(
                row=group.row,
                baseline=baseline,
                dataset=spec.dataset,
                known_ratio=round(float(spec.known_ratio), 6),
                seeds=tuple(s for s, _, _ in pairs),
                differences=differences,
                t_p=t_p,
                wilcoxon_p=wilcoxon_p,
                note=note,
            )
        )
    out.sort(key=lambda c: (c.known_ratio, _dataset_sort_key(c.dataset), c.row))
    return out


def _value(metrics: dict[str, float], metric: str) -> float | None:
    value = metrics.get(metric)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _tests(
    values: Sequence[float], baseline: Sequence[float]
) -> tuple[float | None, float | None, str]:
    """Two-sided p-values of the paired t-test and the Wilcoxon signed-rank test of
    ``values`` against ``baseline`` (same splits, same order)."""
    if len(values) < MIN_PAIRS:
        return None, None, TOO_FEW
    from scipy import stats

    differences = [a - b for a, b in zip(values, baseline, strict=True)]
    with warnings.catch_warnings():
        # Identical differences make both statistics undefined (NaN, with a warning):
        # reported below as such, never as a number.
        warnings.simplefilter("ignore")
        t_p = _finite(stats.ttest_rel(values, baseline).pvalue)
        try:
            wilcoxon_p = _finite(stats.wilcoxon(values, baseline).pvalue)
        except ValueError:
            wilcoxon_p = None
    if len(set(differences)) == 1:
        # A t-test on constant differences divides by a zero spread: no p-value means
        # anything there, whatever scipy returns.
        t_p = None
    notes = []
    if t_p is None:
        notes.append("t-test undefined: every difference is the same")
    if wilcoxon_p is None:
        notes.append("Wilcoxon undefined: every difference is zero")
    return t_p, wilcoxon_p, "; ".join(notes)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _signed(value: float) -> str:
    # round first: -0.004 would print as "-0.00"
    return f"{round(value, 2) + 0.0:+.2f}"


def _p(value: float | None) -> str:
    return EMPTY if value is None else f"{value:.3f}"


def paired_table(comparisons: Sequence[PairedComparison]) -> list[str]:
    """Markdown lines: one row per comparison, each seed's difference shown."""
    lines = [
        "| Method | dataset | known | pairs | mean Δ | Δ per seed | paired t p | Wilcoxon p "
        "| note |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for c in comparisons:
        per_seed = ", ".join(
            f"s{s}: {_signed(d)}" for s, d in zip(c.seeds, c.differences, strict=True)
        )
        cells = [
            _escape(c.row),
            c.dataset,
            _percent(c.known_ratio),
            str(c.n),
            _signed(c.mean),
            per_seed,
            _p(c.t_p),
            _p(c.wilcoxon_p),
            c.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
