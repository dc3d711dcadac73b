"""The GLEAN/Loop reproduction plan (issue #5): run it, then print its tables.

    python benchmarks/reproduction.py run --config a --ablations     # cpu preset, local LLM
    python benchmarks/reproduction.py run --config b --ablations     # cpu preset, noisy oracle
    python benchmarks/reproduction.py run --config c --ablations     # paper preset, GPU
    python benchmarks/reproduction.py report --out benchmarks/REPRODUCTION.md

``run`` resolves every spec of the plan (methods x datasets x seeds, plus GLEAN's ablation
rows with --ablations) before anything runs, then executes them one after another through
the runner; a spec with a record in --results-dir is skipped, so an interrupted plan resumes.
``report`` reads every record under --results-dir and prints markdown: main results, the
ablation table beside the paper's figures, feedback quality and the cost of each run, each
table under the ``run`` command that reproduces it. The data folder comes from GCDBENCH_DATA.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reproduction_tables import ConfigKey, render_report

from gcdbench import registry
from gcdbench.api.record import ResultRecord
from gcdbench.api.spec import DEFAULT_ENCODER, RunSpec
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.resolve import parse_llm_spec
from gcdbench.report.leaderboard import format_ints, non_default_params
from gcdbench.runner.context import Reporter
from gcdbench.runner.run import RunOptions, execute, resolve_spec
from gcdbench.runner.store import ResultsStore
from gcdbench.util.files import atomic_open

SCRIPT = "python benchmarks/reproduction.py"
METHODS = ("glean", "loop", "no-llm")
GLEAN_ABLATIONS = ("instance-instance", "cluster-instance", "quality")
#: The paper's measured feedback accuracies (enhanced prompt, gpt-4o-mini); other kinds exact.
PAPER_FEEDBACK = "noisy-oracle:select-similar-instance=0.53,select-category=0.859"


@dataclass(frozen=True)
class Config:
    what: str
    llm: str
    preset: str | None  # None = the methods' defaults, which are their cpu preset
    encoder: str = DEFAULT_ENCODER


# a and b name no preset: the defaults are the cpu preset, and a bare `gcdbench run glean
# --llm ...` then resolves to the very same spec, so records from either count for both.
CONFIGS = {
    "a": Config(
        "cpu preset, embedded local LLM (Qwen2.5-Coder-1.5B-Instruct GGUF)", "llamacpp", None
    ),
    "b": Config(
        "cpu preset, noisy oracle at the paper's feedback accuracies", PAPER_FEEDBACK, None
    ),
    "c": Config(
        "paper preset on a GPU, bert-base-uncased", "llamacpp", "paper", "bert-base-uncased"
    ),
}


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _seeds(value: str) -> list[int]:
    from gcdbench.cli.common import parse_ints

    return parse_ints((value,), "--seeds")


def _overrides(pairs: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """``-p KEY=VALUE`` for every method, ``-p METHOD.KEY=VALUE`` for one."""
    out: dict[str, dict[str, str]] = {m: {} for m in methods}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        target, dot, name = key.strip().rpartition(".")
        if not sep or not name:
            raise GcdbenchError(f"-p takes KEY=VALUE or METHOD.KEY=VALUE, got {pair!r}.")
        if dot and target not in out:
            raise GcdbenchError(
                f"-p {pair}: {target!r} is not in --methods ({', '.join(methods)})."
            )
        for method in [target] if dot else methods:
            out[method][name] = value.strip()
    return out


def plan(args: argparse.Namespace) -> list[RunSpec]:
    """Every spec of the plan, validated; seed-major so partial plans cover every method."""
    config = CONFIGS[args.config]
    methods = _split(args.methods)
    if args.ablations and "glean" not in methods:
        raise GcdbenchError(
            "--ablations adds GLEAN rows beside the full GLEAN; add glean to --methods."
        )
    rows = [(m, ()) for m in methods]
    rows += [("glean", (a,)) for a in GLEAN_ABLATIONS] if args.ablations else []
    overrides = _overrides(args.param, methods)
    specs = []
    for dataset in _split(args.datasets):
        for seed in _seeds(args.seeds):
            for method, ablations in rows:
                asks = "feedback" in registry.get("method", method).uses
                specs.append(
                    resolve_spec(
                        method,
                        dataset,
                        args.known_ratio,
                        seed,
                        ablations=ablations,
                        encoder=args.encoder or config.encoder,
                        llm=(args.llm or config.llm) if asks else None,
                        preset=args.preset_override or config.preset,
                        overrides=overrides[method],
                    )
                )
    return specs


class PrintingReporter(Reporter):
    def message(self, text: str) -> None:
        print(f"    {text}", file=sys.stderr, flush=True)


def run_plan(args: argparse.Namespace) -> int:
    specs = plan(args)
    options = RunOptions(Path(args.results_dir).resolve(), ledger=args.ledger)
    ResultsStore(options.results_dir).check_writable()
    print(f"{len(specs)} runs; results in {options.results_dir}", file=sys.stderr)
    failed = 0
    for i, spec in enumerate(specs, 1):
        where = f"[{i}/{len(specs)}] {spec.label} on {spec.dataset} seed {spec.seed}"
        print(where, file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            outcome = execute(spec, options, PrintingReporter())
        except GcdbenchError as exc:  # one bad run must not stop a plan of hours
            failed += 1
            print(f"{where}: failed: {exc}", file=sys.stderr)
            continue
        except Exception:
            failed += 1
            print(f"{where}: crashed:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        took = time.perf_counter() - start
        print(f"{where}: {outcome.status} ({took:.0f} s) {outcome.record_path}", file=sys.stderr)
    print(f"report: {SCRIPT} report --results-dir {shlex.quote(args.results_dir)}", file=sys.stderr)
    return 1 if failed else 0


def config_name(key: ConfigKey) -> str:
    for letter, config in CONFIGS.items():
        same_llm = key.llm is None or parse_llm_spec(config.llm).canonical() == key.llm
        if same_llm and (key.preset, key.encoder) == (config.preset, config.encoder):
            return f"({letter}) {config.what}"
    return f"llm={key.llm or 'none'}, preset={key.preset}, encoder={key.encoder}"


def run_command(key: ConfigKey, records: Iterable[ResultRecord], results_dir: str) -> str:
    """The ``run`` command that produces ``records`` (one configuration's)."""
    records = list(records)
    same_llm = [
        c for c, config in CONFIGS.items() if parse_llm_spec(config.llm).canonical() == key.llm
    ]
    exact = [c for c in CONFIGS if config_name(key).startswith(f"({c})")]
    letter = (exact or same_llm or ["a"])[0]
    config = CONFIGS[letter]
    argv = ["run", "--config", letter]
    if key.llm is not None and parse_llm_spec(config.llm).canonical() != key.llm:
        argv += ["--llm", key.llm]
    if key.encoder != config.encoder:
        argv += ["--encoder", str(key.encoder)]
    if key.preset != config.preset:
        argv += ["--preset-override", str(key.preset)]
    methods = sorted({r.spec.method for r in records}, key=_method_order)
    datasets = sorted({r.spec.dataset for r in records})
    argv += ["--methods", ",".join(methods), "--datasets", ",".join(datasets)]
    argv += ["--seeds", format_ints({r.spec.seed for r in records})]
    argv += ["--known-ratio", f"{key.known_ratio:g}"]
    if any(r.spec.ablations for r in records):
        argv.append("--ablations")
    changed = {
        f"{r.spec.method}.{k}={v}" for r in records for k, v in non_default_params(r.spec).items()
    }
    argv += [a for pair in sorted(changed) for a in ("-p", pair)]
    return f"{SCRIPT} {shlex.join([*argv, '--results-dir', results_dir])}"


def _method_order(name: str) -> tuple[int, str]:
    return (METHODS.index(name) if name in METHODS else len(METHODS), name)


def report(args: argparse.Namespace) -> int:
    records = list(ResultsStore(Path(args.results_dir)).records())
    if not records:
        raise GcdbenchError(
            f"no run records under {args.results_dir}; run `{SCRIPT} run --config a` first "
            "or pass --results-dir."
        )
    text = render_report(
        records,
        name=config_name,
        command=lambda key, group: run_command(key, group, args.results_dir),
        report_command=f"{SCRIPT} report --results-dir {shlex.quote(args.results_dir)}",
    )
    if args.out:
        with atomic_open(Path(args.out)) as fh:  # a failed report never truncates the old file
            fh.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the plan of one configuration")
    run.add_argument("--config", choices=sorted(CONFIGS), required=True)
    run.add_argument("--methods", default=",".join(METHODS))
    run.add_argument("--datasets", default="banking,clinc")
    run.add_argument("--seeds", default="0-2")
    run.add_argument("--known-ratio", type=float, default=0.25)
    run.add_argument(
        "--ablations", action="store_true", help="add GLEAN w/o " + ", w/o ".join(GLEAN_ABLATIONS)
    )
    run.add_argument("--llm", default=None, help="override the configuration's --llm")
    run.add_argument("--encoder", default=None, help="override the configuration's encoder")
    run.add_argument("--ledger", default=None, help="feedback ledger file")
    run.add_argument("-p", "--param", action="append", default=[], metavar="[METHOD.]KEY=VALUE")
    # For validating the script on smoke runs; real figures use the configuration's preset.
    run.add_argument("--preset-override", default=None, help=argparse.SUPPRESS)
    rep = sub.add_parser("report", help="print the markdown tables of every record")
    rep.add_argument("--out", default=None, help="write the markdown here instead of stdout")
    for each in (run, rep):
        each.add_argument("--results-dir", default="results/reproduction")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run_plan(args) if args.command == "run" else report(args)
    except GcdbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
