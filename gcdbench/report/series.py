"""What the report's figures plot, read from records (no plotting here): per leaderboard row,
mean ± std over seeds of ACC against spend, against the known-class ratio, and of the
feedback's accuracy per round beside the encoder's own choice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gcdbench.report.budget import mean_std, run_cost
from gcdbench.report.leaderboard import RowGroup, _dataset_sort_key

__all__ = [
    "BudgetPoint",
    "Cell",
    "RatioSeries",
    "RoundSeries",
    "Stat",
    "budget_points",
    "feedback_round_series",
    "ratio_series",
]

#: (dataset, known ratio): the scope within which ACC values are comparable.
Cell = tuple[str, float]


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (NaN for one value) over ``n`` seeds."""

    mean: float
    std: float
    n: int

    @property
    def err(self) -> float:
        """The error bar: the std, none for a single seed."""
        return 0.0 if math.isnan(self.std) else self.std


def stat(values: Sequence[float | None]) -> Stat | None:
    """Over the known values; None when there are none."""
    known = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    found = mean_std(known)
    return None if found is None else Stat(found[0], found[1], len(known))


def _cell(group: RowGroup) -> Cell:
    spec = group.records[0].spec
    return spec.dataset, round(float(spec.known_ratio), 6)


def _cell_order(cell: Cell) -> tuple[float, tuple[int, str]]:
    return cell[1], _dataset_sort_key(cell[0])


# --- ACC against spend -----------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetPoint:
    row: str
    simulated: bool  # its answers came from gold labels, so its $0 is not a real cost
    acc: Stat
    questions: Stat
    dollars: Stat | None  # None: some seed's price was unknown


def budget_points(groups: Iterable[RowGroup]) -> dict[Cell, list[BudgetPoint]]:
    """Per (dataset, known ratio), one point per row: ACC and questions (and dollars where
    every seed's price is known), mean ± std over seeds."""
    out: dict[Cell, list[BudgetPoint]] = defaultdict(list)
    for group in groups:
        costs = [run_cost(r) for r in group.records]
        acc = stat([r.metrics.get("acc") for r in group.records])
        questions = stat([float(c.questions) for c in costs])
        if acc is None or questions is None:
            continue
        dollars = mean_std([c.dollars for c in costs])
        out[_cell(group)].append(
            BudgetPoint(
                row=group.row,
                simulated=any(c.simulated for c in costs),
                acc=acc,
                questions=questions,
                dollars=None if dollars is None else Stat(*dollars, len(costs)),
            )
        )
    return {cell: sorted(out[cell], key=lambda p: p.row) for cell in sorted(out, key=_cell_order)}


# --- ACC against the known-class ratio -------------------------------------------------------


@dataclass(frozen=True)
class RatioSeries:
    row: str
    ratios: list[float]
    acc: list[Stat]


def ratio_series(groups: Iterable[RowGroup]) -> dict[str, list[RatioSeries]]:
    """Per dataset that has runs at two or more known ratios: each row's ACC by ratio."""
    by_dataset: dict[str, dict[str, dict[float, Stat]]] = defaultdict(lambda: defaultdict(dict))
    for group in groups:
        acc = stat([r.metrics.get("acc") for r in group.records])
        if acc is not None:
            dataset, ratio = _cell(group)
            by_dataset[dataset][group.row][ratio] = acc
    out = {}
    for dataset in sorted(by_dataset, key=_dataset_sort_key):
        rows = by_dataset[dataset]
        if len({ratio for per_ratio in rows.values() for ratio in per_ratio}) < 2:
            continue
        out[dataset] = [
            RatioSeries(row, sorted(per_ratio), [per_ratio[r] for r in sorted(per_ratio)])
            for row, per_ratio in sorted(rows.items())
        ]
    return out


# --- feedback accuracy per round -------------------------------------------------------------


@dataclass(frozen=True)
class RoundSeries:
    """One row's one kind of question, round by round: the feedback's accuracy against gold
    and the accuracy of the encoder's own choice on the same answered questions (×100)."""

    row: str
    kind: str
    rounds: list[int]
    feedback: list[Stat | None]
    encoder: list[Stat | None]


def feedback_round_series(groups: Iterable[RowGroup]) -> dict[Cell, list[RoundSeries]]:
    """From each record's ``diagnostics.feedback_quality.rounds``; cells without any are
    left out."""
    out: dict[Cell, list[RoundSeries]] = defaultdict(list)
    for group in groups:
        # (kind, round) -> per seed values
        feedback: dict[tuple[str, int], list[float | None]] = defaultdict(list)
        encoder: dict[tuple[str, int], list[float | None]] = defaultdict(list)
        for record in group.records:
            quality = record.diagnostics.get("feedback_quality") or {}
            for entry in quality.get("rounds") or []:
                key = (str(entry.get("kind")), int(entry.get("round", 0)))
                feedback[key].append(_percent_or_none(entry.get("feedback_accuracy")))
                encoder[key].append(_percent_or_none(entry.get("encoder_accuracy_answered")))
        for kind in sorted({k for k, _ in feedback}):
            rounds = sorted(r for k, r in feedback if k == kind)
            out[_cell(group)].append(
                RoundSeries(
                    row=group.row,
                    kind=kind,
                    rounds=rounds,
                    feedback=[stat(feedback[kind, r]) for r in rounds],
                    encoder=[stat(encoder[kind, r]) for r in rounds],
                )
            )
    return {
        cell: sorted(out[cell], key=lambda s: (s.kind, s.row))
        for cell in sorted(out, key=_cell_order)
    }


def _percent_or_none(value: Any) -> float | None:
    """feedback_quality keeps shares in [0, 1]; the figures show ×100 like every metric."""
    return None if value is None else float(value) * 100
