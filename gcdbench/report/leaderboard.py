"""The markdown leaderboard: result records -> mean±std over seeds, one table per known ratio.

Layout follows the GCD-on-text papers (TEXTOIR, Loop, GLEAN): rows are methods, column groups
are datasets, sub-columns ACC / ARI / NMI ×100 with 2 decimals, best bold and second best
underlined, paper-reported rows marked apart from reproduced ones. The output is a pure
function of its inputs (no dates, stable ordering) so the committed file only changes when
the results do.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gcdbench.api.record import METRIC_KEYS, ResultRecord
from gcdbench.api.spec import (
    DEFAULT_ENCODER,
    DEFAULT_LABELED_RATIO,
    RunSpec,
    canonical_json,
    sha256_hex,
)
from gcdbench.report.references import load_references, validate_reference
from gcdbench.util.files import atomic_open

__all__ = ["DEFAULT_TITLE", "aggregate", "render_markdown", "write_leaderboard"]

DEFAULT_TITLE = "gcdbench leaderboard"
#: The metrics shown in the tables (``aggregate`` keeps every metric of the record schema).
SHOWN_METRICS = ("acc", "ari", "nmi")
#: The benchmark's own datasets come first, in the order the papers print them.
DATASET_ORDER = ("banking", "clinc", "stackoverflow")
EMPTY = "–"

_METRIC_COLUMNS = [f"{m}_{stat}" for m in METRIC_KEYS for stat in ("mean", "std")]
COLUMNS = [
    "row",
    "method",
    "dataset",
    "known_ratio",
    "labeled_ratio",
    "config",
    "n",
    "seeds",
    *_METRIC_COLUMNS,
]


# --- aggregation -----------------------------------------------------------------------------


def _ratio_key(value: float) -> float:
    # Ratios arrive from CLI parsing and JSON; rounding keeps 0.25 and 0.25000000001 together.
    return round(float(value), 6)


def _percent(ratio: float) -> str:
    return f"{round(float(ratio) * 100, 4):g}%"


def _qualifiers(spec_like: Mapping[str, Any]) -> list[str]:
    """What sets a row apart from the plain method: only settings that differ from default."""
    out = []
    # None: a method without an encoder (e.g. LLM-only), not a non-default one.
    if spec_like.get("encoder") not in (None, DEFAULT_ENCODER):
        out.append(f"encoder={spec_like['encoder']}")
    if spec_like.get("llm") is not None:
        out.append(f"llm={spec_like['llm']}")
    if spec_like.get("preset") is not None:
        out.append(f"preset={spec_like['preset']}")
    labeled = spec_like.get("labeled_ratio", DEFAULT_LABELED_RATIO)
    if _ratio_key(labeled) != _ratio_key(DEFAULT_LABELED_RATIO):
        out.append(f"labeled={_percent(labeled)}")
    return out


def _row_name(label: str, qualifiers: Sequence[str]) -> str:
    return f"{label} [{', '.join(qualifiers)}]" if qualifiers else label


def _config_id(spec: RunSpec) -> str:
    payload = {"params": dict(spec.params), "method_version": spec.method_version}
    return sha256_hex(canonical_json(payload))[:8]


def _newest_per_spec(records: Iterable[ResultRecord]) -> list[ResultRecord]:
    """One record per spec (seed included): the newest, so a ``--force`` re-run replaces
    the old result instead of counting twice."""

    def age(record: ResultRecord) -> tuple[str, str]:
        # ISO-8601 strings sort chronologically; the metrics break exact ties so the
        # choice never depends on the order the records were read in.
        finished = str(record.provenance.get("finished_at") or "")
        return finished, canonical_json(record.metrics)

    newest: dict[str, ResultRecord] = {}
    for record in records:
        key = record.spec.hash
        if key not in newest or age(record) > age(newest[key]):
            newest[key] = record
    return list(newest.values())


def _dataset_sort_key(name: str) -> tuple[int, str]:
    if name in DATASET_ORDER:
        return DATASET_ORDER.index(name), ""
    return len(DATASET_ORDER), name


def aggregate(records: Iterable[ResultRecord]) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN for a single seed) over seeds, one row per
    (row, dataset, known_ratio).

    ``row`` is the method label (with ablations) plus any non-default encoder, LLM, preset
    or labeled ratio, e.g. ``"kmeans [encoder=all-mpnet-base-v2]"``. Records whose specs
    agree in everything but the seed are pooled. If one row name would cover runs with
    different resolved parameters or method versions on the same dataset and ratio, the
    row gets a ``config=<hash>`` qualifier instead of silently mixing them.
    """
    groups: dict[str, list[ResultRecord]] = defaultdict(list)
    for record in _newest_per_spec(records):
        groups[record.spec.with_(seed=0).hash].append(record)

    base_of = {
        key: _row_name(group[0].spec.label, _qualifiers(group[0].spec.to_dict()))
        for key, group in groups.items()
    }
    configs_per_cell: dict[tuple[str, str, float], set[str]] = defaultdict(set)
    for key, group in groups.items():
        spec = group[0].spec
        cell = (base_of[key], spec.dataset, _ratio_key(spec.known_ratio))
        configs_per_cell[cell].add(_config_id(spec))
    ambiguous = {cell[0] for cell, configs in configs_per_cell.items() if len(configs) > 1}

    rows = []
    for key, group in groups.items():
        spec = group[0].spec
        qualifiers = _qualifiers(spec.to_dict())
        if base_of[key] in ambiguous:
            qualifiers.append(f"config={_config_id(spec)}")
        if any(r.provenance.get("leaks_labels") for r in group):
            # e.g. GLEAN's leaky_category_demos: gold names of novel classes reached the method
            qualifiers.append("LEAKS NOVEL LABELS")
        group.sort(key=lambda r: r.spec.seed)
        row: dict[str, Any] = {
            "row": _row_name(spec.label, qualifiers),
            "method": spec.label,
            "dataset": spec.dataset,
            "known_ratio": _ratio_key(spec.known_ratio),
            "labeled_ratio": _ratio_key(spec.labeled_ratio),
            "config": _config_id(spec),
            "n": len(group),
            "seeds": [r.spec.seed for r in group],
        }
        for metric in METRIC_KEYS:
            # A metric that is missing or null (JSON has no NaN) is undefined, not zero.
            raw = [r.metrics.get(metric) for r in group]
            values = np.array([math.nan if v is None else float(v) for v in raw])
            row[f"{metric}_mean"] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
        rows.append(row)

    rows.sort(key=lambda r: (r["known_ratio"], r["row"], _dataset_sort_key(r["dataset"])))
    return pd.DataFrame(rows, columns=COLUMNS)


# --- rendering -------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _shown(value: float) -> float:
    # Rank on the printed value, so two cells that read the same are marked the same.
    return float(f"{value:.2f}")


def _ranks(values: Mapping[str, float]) -> tuple[set[str], set[str]]:
    """Rows holding the best and second-best (dense ranking) value of one column."""
    finite = {row: _shown(v) for row, v in values.items() if math.isfinite(v)}
    # With a single entry "best" says nothing, and bold would only add noise.
    if len(finite) < 2:
        return set(), set()
    distinct = sorted(set(finite.values()), reverse=True)
    best = {row for row, v in finite.items() if v == distinct[0]}
    second = {row for row, v in finite.items() if len(distinct) > 1 and v == distinct[1]}
    return best, second


def _mean_std(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return EMPTY
    return f"{mean:.2f}±{std:.2f}" if math.isfinite(std) else f"{mean:.2f}"


def _table(
    sub: pd.DataFrame, refs: Sequence[Mapping[str, Any]], footnote_of: Mapping[str, int]
) -> list[str]:
    datasets = sorted(set(sub["dataset"]) | {r["dataset"] for r in refs}, key=_dataset_sort_key)
    header = ["Method"]
    for dataset in datasets:
        header += [f"{dataset} {m.upper()}" for m in SHOWN_METRICS] + [f"{dataset} n"]
    lines = [
        "| " + " | ".join(_escape(h) for h in header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]

    cells = {(r.row, r.dataset): r for r in sub.itertuples(index=False)}
    row_names = sorted(set(sub["row"]))
    marks = {}
    for dataset in datasets:
        for metric in SHOWN_METRICS:
            column = {
                name: getattr(cells[name, dataset], f"{metric}_mean")
                for name in row_names
                if (name, dataset) in cells
            }
            marks[dataset, metric] = _ranks(column)

    for name in row_names:
        out = [_escape(name)]
        for dataset in datasets:
            cell = cells.get((name, dataset))
            for metric in SHOWN_METRICS:
                if cell is None:
                    out.append(EMPTY)
                    continue
                text = _mean_std(getattr(cell, f"{metric}_mean"), getattr(cell, f"{metric}_std"))
                best, second = marks[dataset, metric]
                if name in best:
                    text = f"**{text}**"
                elif name in second:
                    text = f"<u>{text}</u>"
                out.append(text)
            out.append(str(cell.n) if cell is not None else EMPTY)
        lines.append("| " + " | ".join(out) + " |")

    # One table row per (label, source): a paper's numbers on several datasets share a row.
    by_row: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for ref in refs:
        label = _row_name(ref["method"], _qualifiers(ref))
        by_row[label, ref["source"]][ref["dataset"]] = ref
    for (label, source), per_dataset in sorted(by_row.items()):
        out = [f"*{_escape(label)} (reported)*[^{footnote_of[source]}]"]
        for dataset in datasets:
            ref = per_dataset.get(dataset)
            for metric in SHOWN_METRICS:
                value = None if ref is None else ref[metric]
                out.append(EMPTY if value is None else f"*{float(value):.2f}*")
            out.append(EMPTY)
        lines.append("| " + " | ".join(out) + " |")
    return lines


def render_markdown(
    df: pd.DataFrame,
    references: Iterable[Mapping[str, Any]] | None = None,
    title: str = DEFAULT_TITLE,
) -> str:
    """The leaderboard as markdown, from :func:`aggregate`'s frame.

    ``references`` are paper-reported rows (see :mod:`gcdbench.report.references`); ``None``
    means the ones shipped with gcdbench, ``[]`` means none. Same input, same bytes.
    """
    source_refs = load_references() if references is None else references
    refs = [validate_reference(r, f"reference row {i}") for i, r in enumerate(source_refs)]
    refs.sort(
        key=lambda r: (
            _ratio_key(r["known_ratio"]),
            _row_name(r["method"], _qualifiers(r)),
            r["source"],
            _dataset_sort_key(r["dataset"]),
        )
    )
    footnote_of: dict[str, int] = {}
    for ref in refs:
        footnote_of.setdefault(ref["source"], len(footnote_of) + 1)
    notes: dict[str, set[str]] = defaultdict(set)
    for ref in refs:
        if ref["note"].strip():
            notes[ref["source"]].add(ref["note"].strip())

    ratio_of_row = df["known_ratio"].map(_ratio_key)
    ratios = sorted(set(ratio_of_row) | {_ratio_key(r["known_ratio"]) for r in refs})

    lines = [
        f"# {title}",
        "",
        "Generated by `gcdbench leaderboard` from the stored result records; edits by hand "
        "are overwritten.",
        "Numbers are ×100, mean±std over seeds (sample std, ddof=1; a single seed shows no ±).",
        "Per column, **bold** marks the best reproduced mean and <u>underline</u> the second "
        "best; *italic* rows marked (reported) are copied from papers, not re-run, and are "
        "never ranked.",
        "",
    ]
    if not ratios:
        lines += ["No result records yet.", ""]
    for ratio in ratios:
        sub = df[ratio_of_row == ratio]
        ratio_refs = [r for r in refs if _ratio_key(r["known_ratio"]) == ratio]
        lines += [
            f"## Known-class ratio {_percent(ratio)}",
            "",
            "ACC / ARI / NMI ×100: mean±std over the n seeds given in each dataset's n column; "
            f"{_percent(DEFAULT_LABELED_RATIO)} of known-class training data labeled and "
            f"encoder {DEFAULT_ENCODER} unless the row says otherwise.",
            "",
            *_table(sub, ratio_refs, footnote_of),
            "",
        ]
    for source, number in footnote_of.items():
        extra = "".join(f"; {note}" for note in sorted(notes[source]))
        lines.append(f"[^{number}]: {source}{extra}")
    if footnote_of:
        lines.append("")
    return "\n".join(lines)


def format_ints(values: set[int] | list[int]) -> str:
    """How ``--seeds`` takes them: ``{0, 1, 2, 5}`` -> ``0-2,5``."""
    ordered = sorted(set(values))
    pieces: list[str] = []
    start = prev = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        pieces.append(
            f"{start}-{prev}" if prev > start + 1 else ",".join(map(str, range(start, prev + 1)))
        )
        if value is not None:
            start = prev = value
    return ",".join(pieces)


def reproduce_commands(records: Iterable[ResultRecord]) -> list[str]:
    """The ``gcdbench run`` commands that produce these records, one per configuration."""
    plans: dict[str, dict[str, Any]] = {}
    for record in records:
        spec = record.spec
        args = [spec.method, *(f"--ablate {a}" for a in spec.ablations)]
        if spec.encoder and spec.encoder != DEFAULT_ENCODER:
            args.append(f"--encoder {spec.encoder}")
        if spec.llm:
            args.append(f"--llm {spec.llm}")
        if spec.preset:
            args.append(f"--preset {spec.preset}")
        if not math.isclose(spec.labeled_ratio, DEFAULT_LABELED_RATIO):
            args.append(f"--labeled-ratio {spec.labeled_ratio:g}")
        args += [f"-p {k}={v}" for k, v in sorted(non_default_params(spec).items())]
        plan = plans.setdefault(
            " ".join(args), {"datasets": set(), "ratios": set(), "seeds": set()}
        )
        plan["datasets"].add(spec.dataset)
        plan["ratios"].add(spec.known_ratio)
        plan["seeds"].add(spec.seed)
    return [
        f"gcdbench run {args} -d {','.join(sorted(p['datasets'], key=_dataset_sort_key))} "
        f"--known-ratio {','.join(f'{r:g}' for r in sorted(p['ratios']))} "
        f"--seeds {format_ints(p['seeds'])}"
        for args, p in sorted(plans.items())
    ]


def non_default_params(spec: RunSpec) -> dict[str, Any]:
    """Parameters that differ from the method's current defaults (all, if it is unknown)."""
    from gcdbench import registry
    from gcdbench.errors import UnknownNameError

    try:
        defaults = registry.get("method", spec.method).resolve_params(spec.preset, {})
    except UnknownNameError:
        return dict(spec.params)
    unknown = object()  # a parameter the method no longer has is never a default
    return {k: v for k, v in spec.params.items() if getattr(defaults, k, unknown) != v}


def write_leaderboard(
    records: Iterable[ResultRecord],
    out_path: str | Path,
    references: Iterable[Mapping[str, Any]] | None = None,
    title: str = DEFAULT_TITLE,
) -> Path:
    """Render the leaderboard and write it to ``out_path`` atomically; returns the path.

    Readers never see a half-written file: the text goes to a temporary file in the same
    folder, which then replaces the target in one rename. ``references`` as in
    :func:`render_markdown`.
    """
    records = list(records)
    text = render_markdown(aggregate(records), references=references, title=title)
    commands = reproduce_commands(records)
    if commands:
        text += (
            "\n## Reproduce\n\n```bash\n" + "\n".join(commands) + "\ngcdbench leaderboard\n```\n"
        )
    out = Path(out_path)
    with atomic_open(out, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return out
