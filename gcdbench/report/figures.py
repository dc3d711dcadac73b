"""The report's PNG figures, drawn with matplotlib (the ``report`` extra) on the Agg backend.

Every function takes what :mod:`gcdbench.report.series` and :mod:`gcdbench.report.run_view`
computed and writes one PNG atomically. The drawing uses matplotlib's default style whatever
the user's matplotlibrc says, and every random choice upstream is seeded, so the same
records give the same pictures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.errors import GcdbenchError
from gcdbench.report.run_view import Confusion
from gcdbench.report.series import BudgetPoint, RatioSeries, RoundSeries, Stat
from gcdbench.util.files import atomic_open

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "MISSING_MATPLOTLIB",
    "budget_figure",
    "confusion_figure",
    "feedback_rounds_figure",
    "projection_figure",
    "ratio_figure",
    "require_matplotlib",
]

MISSING_MATPLOTLIB = (
    "gcdbench report draws its figures with matplotlib, which is not installed; install the "
    'report extra: pip install "gcdbench[report]" (in a checkout: pip install -e ".[report]").'
)
DPI = 110
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">")
KNOWN_MARKER, NOVEL_MARKER = "o", "^"


def require_matplotlib() -> None:
    """One clear error, before anything is written, when the extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GcdbenchError(MISSING_MATPLOTLIB) from None


def _pyplot() -> Any:
    require_matplotlib()
    import matplotlib

    # No display is needed or wanted: the figures only go to files.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _figure(
    path: Path, ncols: int = 1, size: tuple[float, float] = (7.0, 5.0), sharey: bool = False
) -> Iterator[Any]:
    """``(figure, axes list)``, saved to ``path`` as PNG on leaving the block."""
    plt = _pyplot()
    with plt.style.context("default"):
        fig, axes = plt.subplots(1, ncols, figsize=size, squeeze=False, sharey=sharey)
        try:
            yield fig, list(axes[0])
            _save(fig, path)
        finally:
            plt.close(fig)


def _save(fig: Figure, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        # tight: the legends sit outside the axes and must not be cut off
        fig.savefig(fh, format="png", dpi=DPI, bbox_inches="tight")


def _style(index: int) -> dict[str, Any]:
    """Colour and marker of the index-th row: ten colours, then the markers change too."""
    return {"color": f"C{index % 10}", "marker": MARKERS[(index // 10) % len(MARKERS)]}


def _legend_below(fig: Figure, axes: Sequence[Axes]) -> None:
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=2 if len(labels) > 6 else 1,
            fontsize="small",
            frameon=False,
        )


def _errorbar(ax: Axes, x: Stat, y: Stat, style: dict[str, Any], label: str, hollow: bool) -> None:
    ax.errorbar(
        x.mean,
        y.mean,
        xerr=x.err,
        yerr=y.err,
        linestyle="none",
        capsize=3,
        markerfacecolor="none" if hollow else style["color"],
        label=label,
        **style,
    )


# --- 1. ACC against questions and dollars ----------------------------------------------------


def budget_figure(points: Sequence[BudgetPoint], title: str, path: Path) -> None:
    """Left: ACC against LLM questions per row; right: against dollars, for rows whose every
    seed has a known price and real (not simulated) feedback. Hollow markers: simulated."""
    with _figure(path, ncols=2, size=(12.0, 5.0), sharey=True) as (fig, (left, right)):
        for i, point in enumerate(points):
            style = _style(i)
            _errorbar(left, point.questions, point.acc, style, point.row, point.simulated)
            if point.dollars is not None and not point.simulated:
                _errorbar(right, point.dollars, point.acc, style, point.row, False)
        left.set_xscale("symlog", linthresh=1.0)
        # From 0, so a method that asks nothing and one that asks a few share one scale.
        most = max((p.questions.mean + p.questions.err for p in points), default=1.0)
        left.set_xlim(-0.5, max(most, 1.0) * 2)
        left.set_xlabel("LLM questions asked per run (symlog)")
        _dollar_axis(
            right, [p.dollars.mean for p in points if p.dollars is not None and not p.simulated]
        )
        for ax in (left, right):
            ax.set_ylabel("ACC (%)")
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        _legend_below(fig, [left, right])


def _dollar_axis(ax: Axes, dollars: Sequence[float]) -> None:
    """Symlog when something cost money; a plain axis, said so, when every priced run was
    free (a local model) or none was priced."""
    if any(d > 0 for d in dollars):
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel("dollars per run (symlog)")
        return
    ax.set_xlim(-1.0, 1.0)
    ax.set_xticks([0.0], ["$0"])
    ax.set_xlabel("dollars per run")
    if dollars:
        ax.set_title("every priced run cost $0 (e.g. a local model)", fontsize="small")
    else:
        ax.set_title("no run with a known, real dollar cost", fontsize="small")


# --- 2. ACC against the known-class ratio ----------------------------------------------------


def ratio_figure(series: Sequence[RatioSeries], title: str, path: Path) -> None:
    with _figure(path) as (fig, (ax,)):
        ratios = sorted({100 * r for line in series for r in line.ratios})
        # Rows side by side at each ratio, so their error bars do not hide each other.
        dodge = 0.015 * (ratios[-1] - ratios[0] if len(ratios) > 1 else 1.0)
        for i, line in enumerate(series):
            style = _style(i)
            shift = (i - (len(series) - 1) / 2) * dodge
            ax.errorbar(
                [100 * r + shift for r in line.ratios],
                [s.mean for s in line.acc],
                yerr=[s.err for s in line.acc],
                capsize=3,
                label=line.row,
                **style,
            )
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.set_xlabel("known-class ratio (%)")
        ax.set_ylabel("ACC (%), mean ± std over seeds")
        ax.grid(alpha=0.3)
        ax.set_title(title)
        _legend_below(fig, [ax])


# --- 3. feedback accuracy per round ----------------------------------------------------------


def feedback_rounds_figure(series: Sequence[RoundSeries], title: str, path: Path) -> None:
    """One panel per kind of question; per row, the feedback's accuracy (solid line, filled
    markers) and the encoder's own choice on the same questions (dashed, hollow, same
    colour, nudged right so the error bars stay apart)."""
    kinds = sorted({s.kind for s in series})
    rows = sorted({s.row for s in series})
    with _figure(path, ncols=len(kinds), size=(5.5 * len(kinds), 4.5)) as (fig, axes):
        for ax, kind in zip(axes, kinds, strict=True):
            shown = [s for s in series if s.kind == kind]
            for line in shown:
                style = _style(rows.index(line.row))
                _round_line(ax, line.rounds, line.feedback, style, False, f"{line.row}: feedback")
                _round_line(
                    ax, line.rounds, line.encoder, style, True, f"{line.row}: encoder's own choice"
                )
            rounds = sorted({r for line in shown for r in line.rounds})
            ax.set_xticks(rounds)
            ax.set_xlim(rounds[0] - 0.5, rounds[-1] + 0.5)
            ax.set_title(kind)
            ax.set_xlabel("round")
            ax.set_ylabel("accuracy against gold (%)")
            ax.set_ylim(-5, 105)
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        _legend_below(fig, axes)


def _round_line(
    ax: Axes,
    rounds: Sequence[int],
    values: Sequence[Stat | None],
    style: dict[str, Any],
    encoder: bool,
    label: str,
) -> None:
    kept = [(r, v) for r, v in zip(rounds, values, strict=True) if v is not None]
    if kept:
        nudge = 0.08 if encoder else 0.0
        ax.errorbar(
            [r + nudge for r, _ in kept],
            [v.mean for _, v in kept],
            yerr=[v.err for _, v in kept],
            linestyle="--" if encoder else "-",
            markerfacecolor="none" if encoder else style["color"],
            capsize=3,
            label=label,
            **style,
        )


# --- 4. a 2-D projection of one run's test texts ---------------------------------------------


def projection_figure(
    coords: np.ndarray,
    clusters: np.ndarray,
    known: np.ndarray,
    axis_name: str,
    title: str,
    path: Path,
) -> None:
    """Colour: predicted cluster (20 colours, repeated past 20 clusters); marker: whether the
    text's gold class is known (circle) or novel (triangle)."""
    plt = _pyplot()
    colours = plt.get_cmap("tab20")(np.asarray(clusters) % 20)
    with _figure(path, size=(7.5, 6.5)) as (_fig, (ax,)):
        for mask, marker, label in (
            (known, KNOWN_MARKER, "gold class known"),
            (~known, NOVEL_MARKER, "gold class novel"),
        ):
            if mask.any():
                ax.scatter(
                    coords[mask, 0],
                    coords[mask, 1],
                    c=colours[mask],
                    marker=marker,
                    s=12,
                    alpha=0.8,
                    linewidths=0,
                    label=label,
                )
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
        ax.set_title(title, fontsize="medium")
        clusters_shown = len(np.unique(clusters))
        ax.text(
            0.01,
            0.01,
            f"{len(coords)} test texts, {clusters_shown} predicted clusters",
            transform=ax.transAxes,
            fontsize="small",
            va="bottom",
        )
        legend = ax.legend(loc="upper right", fontsize="small")
        for handle in legend.legend_handles:
            if handle is not None:  # the legend's markers are grey: colour means cluster
                handle.set_color("grey")


# --- 5. the confusion matrix of the largest classes ------------------------------------------


def confusion_figure(confusion: Confusion, title: str, path: Path) -> None:
    """Rows: gold classes, largest first (novel ones marked *); columns: the clusters the
    Hungarian matching gave those classes, then every other cluster. Shade: the share of the
    row; number: texts."""
    counts = confusion.counts
    sizes = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, sizes, out=np.zeros(counts.shape), where=sizes > 0)
    names = [
        f"{c} *" if novel else c
        for c, novel in zip(confusion.classes, confusion.novel, strict=True)
    ]
    k = len(names)
    side = max(5.0, 0.45 * k + 3.0)
    with _figure(path, size=(side + 1.5, side)) as (fig, (ax,)):
        image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(k):
            for j in range(k + 1):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if shares[i, j] > 0.6 else "black",
                    )
        ax.set_yticks(range(k), names, fontsize=7)
        ax.set_xticks(range(k + 1), [*names, "other clusters"], fontsize=7, rotation=90)
        ax.set_ylabel("gold class (* novel)")
        ax.set_xlabel("predicted cluster, named by its Hungarian-matched class")
        ax.set_title(title, fontsize="medium")
        fig.colorbar(image, ax=ax, fraction=0.04, label="share of the gold class's texts")
