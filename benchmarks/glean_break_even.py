"""How right must feedback be for GLEAN to beat its no-LLM control? (issue 15)

    python benchmarks/glean_break_even.py run --results-dir results/break-even --seeds 0-2 \\
        --accuracies 0.3,0.5,0.7,0.9,1,oracle --controls
    python benchmarks/glean_break_even.py report --results-dir results/break-even \\
        --control-dir results/baselines --bank-dir results \\
        --figure benchmarks/figures/glean-break-even.png

``run`` makes one default (cpu-preset) GLEAN run on BANKING (``--dataset``) 25% known per
seed and accuracy with ``--llm noisy-oracle:P``: every choice question with a right option is
answered right with probability P, otherwise a wrong option uniformly; a question without a
right option gets a uniform pick; cluster descriptions are exact (the oracle names clusters
from gold). ``oracle`` in ``--accuracies`` adds the exact oracle, which answers right whenever
it can and abstains when no option is right (the question then falls back, as a filtered
answer does). ``--controls`` adds GLEAN's matched control per seed: the same training with every LLM
question ablated (``--ablate instance-instance --ablate cluster-instance``, which
``--ablate llm`` names in one word). Runs already in the store are skipped, so a second call
only adds what is missing.

``report`` prints, per accuracy, GLEAN's ACC beside two controls on the same seed (paired
differences per seed): the matched control (from ``--results-dir``) and ``no-llm`` (read from
``--control-dir``), whose round-loop defaults differ from GLEAN's in more than the feedback
(a known-class classifier and a round every 2 epochs, against K-way and 3). It also prints
the feedback accuracy the runs realised per kind against gold (the share of answered
questions answered right, :mod:`gcdbench.report.feedback_quality`) beside the encoder's own
choice on the same questions, and how many were answered. With ``--bank-dir``, the
embedded model's accuracies on the feedback bank (``gcdbench feedback eval`` records) are
drawn on the same axis, so a reader sees which P the local model's answers correspond to.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from gcdbench import registry
from gcdbench.api.record import ResultRecord
from gcdbench.cli.common import expand_ints, parse_int_ranges
from gcdbench.report.leaderboard import non_default_params
from gcdbench.runner.store import ResultsStore, load_record

DATASET = "banking"
KNOWN = 0.25
KINDS = ("select-similar-instance", "select-category")
EMPTY = "–"


#: Ablating both feedback components leaves GLEAN's training with nothing asked.
CONTROL_ABLATIONS = ("instance-instance", "cluster-instance")
EXACT = "oracle"


def run(
    results_dir: Path, seeds: list[int], points: list[str], controls: bool, dataset: str
) -> None:
    for seed in seeds:
        common = [
            sys.executable, "-m", "gcdbench", "run", "glean", "-d", dataset,
            "--known-ratio", str(KNOWN), "--seed", str(seed),
            "--results-dir", str(results_dir), "-q",
        ]  # fmt: skip
        commands = [
            [*common, "--llm", EXACT if p == EXACT else f"noisy-oracle:{float(p):g}"]
            for p in points
        ]
        if controls:
            commands.append([*common, *(f"--ablate={a}" for a in CONTROL_ABLATIONS)])
        for command in commands:
            print("$", " ".join(command[2:]), flush=True)
            subprocess.run(command, check=True)


def _records(results_dir: Path) -> list[ResultRecord]:
    store = ResultsStore(results_dir)
    if not results_dir.is_dir():
        return []
    return [load_record(path) for path in sorted(store.record_paths())]


def _accuracy(record: ResultRecord) -> float | None:
    """The P of a ``noisy-oracle:P`` run (1.0 for the exact oracle), else None."""
    spec = record.spec.llm or ""
    if spec == EXACT:
        return 1.0
    if not spec.startswith("noisy-oracle:"):
        return None
    try:
        return float(spec.split(":", 1)[1])
    except ValueError:
        return None  # a per-kind spec: not one point of the curve


def _settings(record: ResultRecord) -> str:
    """The parameters a run set away from its method's current defaults, as ``-p`` reads
    them ('' for none)."""
    changed = non_default_params(record.spec)
    return " ".join(f"-p {key}={value}" for key, value in sorted(changed.items()))


def _ablated_parts(record: ResultRecord) -> set[str]:
    """The components a run switched off. The record lists a group (``llm``) beside the parts
    it expands to; the parts are what decide the run, so ``--ablate llm`` and naming both
    parts read the same."""
    components = registry.get("method", record.spec.method).components
    groups = {c.name for c in components if c.includes}
    return set(record.method.get("ablated_components", [])) - groups


def _label(record: ResultRecord) -> str:
    """How the row reads in the table: P, the exact oracle or a model's spec, then any
    parameter set away from the defaults."""
    p = _accuracy(record)
    if _is_exact(record):
        label = "oracle (abstains)"
    else:
        label = f"{p:g}" if p is not None else f"{record.spec.llm} (a model)"
    settings = _settings(record)
    return f"{label}, {settings}" if settings else label


def _default_run(
    record: ResultRecord, method: str, ablated: tuple[str, ...] = (), dataset: str = DATASET
) -> bool:
    """A run of ``method`` on ``dataset``, 25% known, without a preset, in the paper variant,
    with exactly the ``ablated`` components (groups expanded, as the record keeps them).
    Other parameters may differ: such a run is a row of its own, labelled by :func:`_settings`."""
    spec = record.spec
    return (
        spec.method == method
        and spec.dataset == dataset
        and spec.known_ratio == KNOWN
        and not spec.preset
        and _ablated_parts(record) == set(ablated)
        and spec.params.get("variant", "paper") == "paper"
    )


def _is_exact(record: ResultRecord) -> bool:
    return record.spec.llm == EXACT


def _is_control(record: ResultRecord, dataset: str = DATASET) -> bool:
    return _default_run(record, "no-llm", dataset=dataset)


def _is_matched_control(record: ResultRecord, dataset: str = DATASET) -> bool:
    # At the defaults, as every point it is paired with trains (a point may ask otherwise).
    return _default_run(record, "glean", CONTROL_ABLATIONS, dataset) and not _settings(record)


def _is_point(record: ResultRecord, dataset: str = DATASET) -> bool:
    """A default GLEAN run with any feedback: a point of the curve when simulated, a
    horizontal line when a model answered."""
    return _default_run(record, "glean", dataset=dataset) and bool(record.spec.llm)


def _by_seed(records: list[ResultRecord]) -> dict[int, float]:
    return {r.spec.seed: r.metrics["acc"] for r in records}


def _paired(group: list[ResultRecord], controls: dict[int, float]) -> list[float]:
    return [r.metrics["acc"] - controls[r.spec.seed] for r in group if r.spec.seed in controls]


def rows(
    points: list[ResultRecord], matched: dict[int, float], no_llm: dict[int, float]
) -> list[dict[str, Any]]:
    """One row per provider, settings and GLEAN version (two versions are never averaged):
    ACC (mean over seeds), the paired differences to each control, and the realised feedback
    accuracy per kind with the encoder's on the same questions."""
    groups: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    for record in points:
        groups[(_label(record), str(record.method.get("version", "?")))].append(record)

    def order(item: tuple[tuple[str, str], list[ResultRecord]]) -> tuple[bool, float, str, str]:
        p = _accuracy(item[1][0])  # a model's rows (no P) after the simulated ones
        return (p is None, p or 0.0, *item[0])

    out = []
    for (label, version), group in sorted(groups.items(), key=order):
        accs = [r.metrics["acc"] for r in group]
        row: dict[str, Any] = {
            "p": _accuracy(group[0]),
            "label": label,
            "exact": _is_exact(group[0]),
            "settings": _settings(group[0]),
            "version": version,
            "seeds": sorted(r.spec.seed for r in group),
            "acc": statistics.fmean(accs),
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "diffs_matched": _paired(group, matched),
            "diffs_no_llm": _paired(group, no_llm),
        }
        for kind in KINDS:
            totals = [
                r.diagnostics.get("feedback_quality", {}).get("totals", {}).get(kind, {})
                for r in group
            ]
            # Over the answered questions (the exact oracle abstains where no option is
            # right), with the encoder on those same questions.
            row[kind] = _mean([t.get("feedback_accuracy") for t in totals])
            row[kind + ":encoder"] = _mean(
                [t.get("encoder_accuracy_answered", t.get("encoder_accuracy")) for t in totals]
            )
            row[kind + ":answered"] = sum(t.get("answered", 0) for t in totals)
            row[kind + ":asked"] = sum(t.get("asked", 0) for t in totals)
        out.append(row)
    return out


def _mean(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _f(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return EMPTY if value is None else f"{value * scale:.{digits}f}"


def _diffs(diffs: list[float]) -> str:
    if not diffs:
        return EMPTY
    listed = ", ".join(f"{d:+.2f}" for d in diffs)
    return listed if len(diffs) == 1 else f"{statistics.fmean(diffs):+.2f} ({listed})"


def _per_seed(name: str, controls: dict[int, float]) -> str:
    listed = ", ".join(f"seed {s}: {a:.2f}" for s, a in sorted(controls.items()))
    return f"{name} ACC per seed: {listed or EMPTY}"


def markdown(
    table: list[dict[str, Any]], matched: dict[int, float], no_llm: dict[int, float]
) -> str:
    lines = [
        _per_seed("matched control (glean --ablate llm)", matched),
        "",
        _per_seed("no-llm", no_llm),
        "",
        "| feedback: noisy-oracle P or provider | GLEAN version | seeds | GLEAN ACC | "
        "− matched control (mean; per seed) | − no-llm (mean; per seed) | "
        "instance right / encoder (answered/asked) | category right / encoder (answered/asked) |",
        "|---|---:|---|---:|---|---|---:|---:|",
    ]
    for row in table:
        acc = _f(row["acc"]) + (f" ± {row['acc_std']:.2f}" if row["acc_std"] is not None else "")
        cells = [
            f"{_f(row[k], 100, 1)} / {_f(row[k + ':encoder'], 100, 1)} "
            f"({row[k + ':answered']}/{row[k + ':asked']})"
            for k in KINDS
        ]
        lines.append(
            f"| {row['label']} | {row['version']} | {','.join(map(str, row['seeds']))} | "
            f"{acc} | {_diffs(row['diffs_matched'])} | {_diffs(row['diffs_no_llm'])} | "
            f"{cells[0]} | {cells[1]} |"
        )
    return "\n".join(lines)


def bank_accuracies(bank_dir: Path, dataset: str) -> list[tuple[str, str, float]]:
    """(provider and policy, kind, accuracy) of every local-model bank evaluation of ``dataset``:
    fused with the encoder where fitted, else with the encoder's choice where the model's
    answer was not kept, so every question has an answer, as in the noisy-oracle runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from feedback_bank import rows as bank_rows

    from gcdbench.runner.feedback_eval import eval_records

    records = [
        r for r in eval_records(bank_dir)
        if r["bank"]["dataset"] == dataset and "oracle" not in str(r.get("llm", ""))
    ]  # fmt: skip
    out = []
    for kind in KINDS:
        for row in bank_rows(records, kind):
            accuracy = row["fused"] if row["fused"] is not None else row["with_fallback"]
            out.append((row["label"], kind, float(accuracy)))
    return out


def figure(
    table: list[dict[str, Any]],
    controls: dict[str, dict[int, float]],
    bank: list[tuple[str, str, float]],
    path: Path,
    dataset: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 6.2))
    # The curve: noisy-oracle points at the defaults. Every other simulated row is a marker
    # of its own (the exact oracle, other settings); a model's row is a horizontal line.
    noisy = [r for r in table if not r["exact"] and r["p"] is not None and not r["settings"]]
    exact = [r for r in table if r["p"] is not None and r not in noisy]
    models = [r for r in table if r["p"] is None]
    ps = [r["p"] for r in noisy]
    left.errorbar(ps, [r["acc"] for r in noisy], yerr=[r["acc_std"] or 0 for r in noisy],
                  marker="o", label="GLEAN, noisy-oracle:P")  # fmt: skip
    for row, marker in zip(exact, ("*", "P", "X", "D"), strict=False):
        seeds = ",".join(map(str, row["seeds"]))
        left.errorbar([row["p"]], [row["acc"]], yerr=[row["acc_std"] or 0], marker=marker,
                      markersize=11, linestyle="none",
                      label=f"GLEAN, {row['label']} (seeds {seeds})")  # fmt: skip
    for row, colour in zip(models, ("tab:red", "tab:purple", "tab:brown"), strict=False):
        left.axhline(row["acc"], color=colour, linestyle=":",
                     label=f"GLEAN, {row['label']}, version {row['version']}")  # fmt: skip
    for (name, by_seed), style in zip(controls.items(), ("-.", "--"), strict=True):
        if by_seed:
            seeds = ",".join(map(str, sorted(by_seed)))
            left.axhline(statistics.fmean(by_seed.values()), color="grey", linestyle=style,
                         label=f"{name} (mean of seeds {seeds})")  # fmt: skip
    left.set_xlabel("noisy-oracle P (right answer when one is offered)")
    left.set_ylabel(f"ACC on {dataset} 25% known")
    left.set_title("GLEAN against feedback accuracy")
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1)
    for kind, colour in zip(KINDS, ("tab:blue", "tab:orange"), strict=True):
        right.plot(ps, [None if r[kind] is None else 100 * r[kind] for r in noisy],
                   marker="o", color=colour, label=f"{kind}: realised")  # fmt: skip
        # Over the simulated points only: they answer every question, so the encoder's share
        # is over the same questions as theirs.
        encoder = [r[kind + ":encoder"] for r in noisy if r[kind + ":encoder"] is not None]
        if encoder:
            right.axhline(100 * statistics.fmean(encoder), color=colour, linestyle="--",
                          label=f"{kind}: encoder's own choice")  # fmt: skip
        for label, bank_kind, accuracy in bank:
            if bank_kind == kind:
                right.axhline(100 * accuracy, color=colour, linestyle=":", linewidth=1)
                right.annotate(
                    label, (max(ps, default=1.0), 100 * accuracy), fontsize=6, color=colour,
                    ha="right",
                )  # fmt: skip
    right.set_xlabel("noisy-oracle P")
    right.set_ylabel("share of asked questions answered right (%)")
    right.set_title("feedback accuracy\n(dotted: the embedded model on the feedback bank)")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def report(args: argparse.Namespace) -> None:
    # The same run copied into two stores counts once.
    by_id = {r.run_id: r for d in [args.results_dir, *args.also] for r in _records(d)}
    records = list(by_id.values())
    dataset = args.dataset
    points = [r for r in records if _is_point(r, dataset)]
    seeds = {r.spec.seed for r in points}
    control_records = _records(args.control_dir) if args.control_dir else records
    matched = _by_seed([r for r in records if _is_matched_control(r, dataset)])
    no_llm = _by_seed([r for r in control_records if _is_control(r, dataset)])
    matched = {s: a for s, a in matched.items() if s in seeds}
    no_llm = {s: a for s, a in no_llm.items() if s in seeds}
    table = rows(points, matched, no_llm)
    print(markdown(table, matched, no_llm))
    bank = bank_accuracies(args.bank_dir, dataset) if args.bank_dir else []
    for label, kind, accuracy in bank:
        print(f"bank: {label} — {kind} {100 * accuracy:.1f}")
    if args.figure and table:
        controls = {"matched control (glean --ablate llm)": matched, "no-llm": no_llm}
        figure(table, controls, bank, args.figure, dataset)
        print(f"figure: {args.figure}")


def _is_provider_point(text: str) -> bool:
    """``oracle`` or a probability, as ``--accuracies`` takes them."""
    if text == EXACT:
        return True
    try:
        return 0.0 <= float(text) <= 1.0
    except ValueError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run")
    go.add_argument("--results-dir", type=Path, required=True)
    go.add_argument("--dataset", default=DATASET)
    go.add_argument("--seeds", default="0")
    go.add_argument(
        "--accuracies",
        default="0.2,0.4,0.6,0.8,1.0",
        help="noisy-oracle P values, and 'oracle' for the exact oracle",
    )
    go.add_argument("--controls", action="store_true", help="also the matched control per seed")
    show = sub.add_parser("report")
    show.add_argument("--results-dir", type=Path, required=True)
    show.add_argument("--dataset", default=DATASET)
    show.add_argument("--control-dir", type=Path, help="where the no-llm records are")
    show.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="another store whose default GLEAN runs join the table (e.g. a local-model run)",
    )
    show.add_argument("--bank-dir", type=Path, help="results store with feedback evaluations")
    show.add_argument("--figure", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        accuracies = [p.strip() for p in args.accuracies.split(",") if p.strip()]
        for p in accuracies:
            if not _is_provider_point(p):
                parser.error(f"--accuracies: {p!r} is neither a probability nor 'oracle'")
        # Read as gcdbench run reads --seeds: 0 / 0,1,2 / 0-4.
        seeds = expand_ints(parse_int_ranges((args.seeds,), "--seeds"))
        run(args.results_dir, seeds, accuracies, args.controls, args.dataset)
    else:
        report(args)


if __name__ == "__main__":
    main()
