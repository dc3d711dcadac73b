"""One run end to end: data -> split -> method -> metrics -> record.

Everything that can be wrong with the request is checked in :func:`resolve_spec`, before
anything runs or is written; :func:`execute` then never half-writes a record.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gcdbench import registry
from gcdbench.api.dataset import DatasetParts
from gcdbench.api.executor import Outcome
from gcdbench.api.feedback import FeedbackEnv
from gcdbench.api.k_estimator import KChoice, KEstimator, parse_k
from gcdbench.api.method import Method, MethodOutput, params_dict
from gcdbench.api.record import ResultRecord
from gcdbench.api.refiner import Refiner
from gcdbench.api.spec import DEFAULT_ENCODER, RunSpec
from gcdbench.api.task import GCDTask, Gold
from gcdbench.data.checks import check_dataset, stop_on_errors
from gcdbench.data.split import (
    build_task,
    check_known_classes,
    check_ratio,
    make_split,
    save_split,
)
from gcdbench.data.store import DownloadEvent, locate_dataset
from gcdbench.encoders import check_encoder, trainable_ref
from gcdbench.engine import engine_fingerprint
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.resolve import resolve_llm
from gcdbench.metrics import evaluate, hungarian_mapping
from gcdbench.report.feedback_quality import score_feedback_log
from gcdbench.runner import provenance
from gcdbench.runner.context import Reporter, RunContext, build_context, checkpoint_folder
from gcdbench.runner.identity import run_identity
from gcdbench.runner.store import ResultsStore


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what): never part of the spec hash. Picklable for executors."""

    results_dir: Path
    data_dir: str | None = None
    force: bool = False
    download: bool = True
    llm_offline: bool = False  # replay the feedback ledger; a miss is an error
    ledger: str | None = None  # the feedback ledger file (default: <cache>/ledger.sqlite)


def resolve_spec(
    method: str,
    dataset: str,
    known_ratio: float,
    seed: int,
    *,
    labeled_ratio: float = 0.1,
    ablations: Sequence[str] = (),
    encoder: str | None = None,
    llm: str | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    llm_options: Mapping[str, str] | None = None,
    llm_budget: str | None = None,
    refine: str | None = None,
    refine_overrides: Mapping[str, Any] | None = None,
    k: str | None = None,
) -> RunSpec:
    """Validate a request and pin every value that shapes the result."""
    method_cls: type[Method] = registry.get("method", method)
    refiner_cls, refine_params = _resolve_refiner(method_cls, refine, refine_overrides)
    definition = registry.get("dataset", dataset)
    check_ratio("--known-ratio", known_ratio)
    check_ratio("--labeled-ratio", labeled_ratio)
    num_known = check_known_classes(definition.num_classes, known_ratio)
    k_choice, k_version = _resolve_k(method_cls, refiner_cls, k, num_known)
    expanded = method_cls.expand_ablations(list(ablations))
    params = method_cls.resolve_params(preset, dict(overrides or {}))
    # Rules that depend on the dataset's number of classes (e.g. GLEAN's options <= K).
    method_cls.cross_check(params, k_choice.fixed or definition.num_classes)
    if "encoder" in _uses(method_cls, refiner_cls):
        encoder = encoder or DEFAULT_ENCODER
        # An unknown name, missing model packages or folder, or a hub id this machine cannot
        # reach fail here, before anything is written, not when the model loads mid-run.
        check_encoder(encoder)
        if method_cls.fine_tunes_encoder(expanded):
            # A bag of words has no weights to train: say so now, not after the split.
            trainable_ref(encoder, method)
    else:
        encoder = None
    if "feedback" in method_cls.uses:
        # Canonical and validated: options and budget change answers, so they join the hash.
        llm = resolve_llm(llm, llm_options, llm_budget)
    elif (llm is not None and "llm" not in method_cls.uses) or llm_options or llm_budget:
        raise GcdbenchError(
            f"method {method!r} asks no LLM feedback, so --llm, --llm-option and "
            "--llm-budget do not apply; drop them."
        )
    return RunSpec(
        method=method,
        dataset=dataset,
        known_ratio=known_ratio,
        seed=seed,
        labeled_ratio=labeled_ratio,
        ablations=tuple(ablations),
        encoder=encoder,
        llm=llm,
        preset=preset,
        params=params_dict(params),
        method_version=method_cls.version,
        refine=refine,
        refine_params=params_dict(refine_params) if refiner_cls else {},
        refine_version=refiner_cls.version if refiner_cls else "",
        k=k_choice.spec_value,
        k_version=k_version,
    )


def _resolve_refiner(
    method_cls: type[Method], refine: str | None, overrides: Mapping[str, Any] | None
) -> tuple[type[Refiner] | None, Any]:
    """The ``--refine`` refiner and its checked parameters (None when there is none)."""
    if refine is None:
        if overrides:
            raise GcdbenchError("--refine-param needs --refine NAME; add it or drop the params.")
        return None, None
    refiner_cls: type[Refiner] = registry.get("refiner", refine)
    if not method_cls.pseudo_labels:
        tagged = [n for n in registry.names("method") if registry.get("method", n).pseudo_labels]
        raise GcdbenchError(
            f"--refine {refine} refines pseudo-labels, and method {method_cls.name!r} does not "
            f"assign labels text by text; use it with {', '.join(tagged) or 'such a method'} "
            "or drop --refine."
        )
    params = refiner_cls.resolve_params(dict(overrides or {}))
    refiner_cls.cross_check(params)
    return refiner_cls, params


def _resolve_k(
    method_cls: type[Method], refiner_cls: type[Refiner] | None, k: str | None, num_known: int
) -> tuple[KChoice, str]:
    """``--k`` checked, and the version of the estimator it names ("" for none)."""
    choice = parse_k(k)
    if choice.fixed is not None and choice.fixed < num_known:
        raise GcdbenchError(
            f"--k {choice.fixed} is fewer clusters than the {num_known} known classes; pass "
            f"--k {num_known} or more, or estimate:NAME (gcdbench list k-estimators)."
        )
    if choice.estimator is None:
        return choice, ""
    estimator: KEstimator = registry.get("k-estimator", choice.estimator)
    if "encoder" not in _uses(method_cls, refiner_cls):
        raise GcdbenchError(
            f"--k estimate:{choice.estimator} reads the encoder's features, and method "
            f"{method_cls.name!r} uses no encoder; pass a fixed --k N or drop --k."
        )
    return choice, estimator.version


def _uses(method_cls: type[Method], refiner_cls: type[Refiner] | None) -> tuple[str, ...]:
    """What the run needs: the method's parts, and its refiner's."""
    extra = tuple(u for u in (refiner_cls.uses if refiner_cls else ()) if u not in method_cls.uses)
    return tuple(method_cls.uses) + extra


def execute(spec: RunSpec, options: RunOptions, reporter: Reporter | None = None) -> Outcome:
    """Run one spec unless its record exists. Raises on failure; see :func:`run_job`.

    From the record check to the write the run's lock is held, so a second process given
    the same run waits, then finds the record and skips (or runs, if the first failed)."""
    with ExitStack() as held:
        return _execute(spec, options, reporter or Reporter(), held)


def _execute(spec: RunSpec, options: RunOptions, reporter: Reporter, held: ExitStack) -> Outcome:
    store = ResultsStore(options.results_dir)
    started = datetime.now(UTC)
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    definition = registry.get("dataset", spec.dataset)
    folder, origin = locate_dataset(
        definition,
        options.data_dir,
        download=options.download,
        on_progress=download_reporter(reporter),
    )
    reporter.message(f"loading {spec.dataset} from {folder} ({origin})")
    parts = definition.load(folder)
    t = lap("load", clock)

    split = make_split(
        parts, known_ratio=spec.known_ratio, labeled_ratio=spec.labeled_ratio, seed=spec.seed
    )
    issues = check_dataset(parts, definition, split=split)
    stop_on_errors(issues)
    # The skip is decided on the identity, so changed data or code is never served a stale
    # record (the split hash covers the data files the rows come from).
    identity = run_identity(spec, split.hash, {f.name: f.sha256 for f in parts.files})
    waiting = time.perf_counter()
    if held.enter_context(store.lock_run(spec, identity.run_id, reporter)):
        timings["lock_wait"] = time.perf_counter() - waiting
        t += timings["lock_wait"]  # the split's lap keeps only the split's own time
    existing = store.find(spec, identity.run_id)
    if existing is not None and not options.force:
        return Outcome(spec, "skipped", str(existing))
    for issue in issues:  # warned for runs that happen; the record keeps them all
        if issue.severity != "info":
            reporter.message(f"{issue.severity}: {issue.message}")
    store.check_writable()
    split_path = save_split(split, store.splits)
    task, gold = build_task(parts, split, task_word=definition.task)
    t = lap("split", t)

    method_cls: type[Method] = registry.get("method", spec.method)
    method = method_cls(
        method_cls.Params(**spec.params), method_cls.expand_ablations(list(spec.ablations))
    )
    refiner_cls: type[Refiner] | None = (
        registry.get("refiner", spec.refine) if spec.refine else None
    )
    feedback_env = FeedbackEnv(
        seed=spec.seed,
        gold=gold,
        ledger_path=Path(options.ledger) if options.ledger else None,
        offline=options.llm_offline,
        run_hash=spec.hash,
    )
    # Under the store, not the system temp folder: a killed run's folder is removed by the
    # next open of the store.
    with store.work_dir(identity.run_id) as work:
        ctx = build_context(
            spec,
            file_texts(parts),
            work,
            uses=_uses(method_cls, refiner_cls),
            feedback_env=feedback_env,
            reporter=reporter,
            novel_dev_examples=partial(_novel_dev_examples, parts, split.known_classes),
            gold_labels=partial(_gold_labels, gold),
            # Kept across a kill, named by the run id; --force starts the training over.
            checkpoint_dir=checkpoint_folder(store.root, identity.run_id, fresh=options.force),
        )
        # --k: from here the method sees the fixed or estimated K as `task.num_classes`;
        # metrics, predictions and the record's split still read the gold classes.
        task, k_section = _task_with_k(spec, task, ctx)
        reporter.message(f"running {spec.label} (seed {spec.seed})")
        unrefined = None
        try:
            output = method.run(task, ctx)
            if refiner_cls is not None:
                _check_output(output, task, spec)
                unrefined = output
                refiner = refiner_cls(refiner_cls.Params(**spec.refine_params))
                with reporter.stage(f"refine: {spec.refine}"), ctx.timed(f"refine:{spec.refine}"):
                    output = refiner.refine(task, ctx, output)
        finally:
            feedback = ctx.feedback.describe() if ctx.feedback_loaded else None
            if ctx.feedback_loaded:
                ctx.feedback.close()
    _check_output(output, task, spec)
    t = lap("method", t)

    metrics = evaluate(gold.test_y, output.test_assignments, gold.known_ids)
    predictions = _predictions(task, gold, output)
    t = lap("metrics", t)
    diagnostics = dict(output.diagnostics)
    if unrefined is not None:
        # What the refiner changed, measured: the method's own assignment scored the same way.
        before = evaluate(gold.test_y, unrefined.test_assignments, gold.known_ids)
        diagnostics["refine"] = {
            **dict(diagnostics.get("refine", {})),
            "refiner": spec.refine,
            "before": before,
            "changed": int((unrefined.test_assignments != output.test_assignments).sum()),
        }
    if output.feedback_log is not None:
        # Only the runner holds gold labels, so only it can score the questions asked.
        diagnostics["feedback_quality"] = score_feedback_log(output.feedback_log, gold)
        lap("feedback_quality", t)
    timings["total"] = time.perf_counter() - clock

    plugin = registry.owner("method", spec.method)
    record = ResultRecord(
        spec=spec,
        metrics=metrics,
        split={
            "hash": split.hash,
            "file": str(split_path.relative_to(store.root)),
            "num_known": task.num_known,
            "num_labeled": task.num_labeled,
            "num_unlabeled": len(task.train) - task.num_labeled,
            "num_dev": len(task.dev),
            "num_test": len(task.test),
            "known_classes": list(split.known_classes),
            # Only for --k runs, so the records of runs given the true K are as before.
            **({"k": k_section} if k_section is not None else {}),
        },
        data={
            "dataset": spec.dataset,
            "folder": str(folder.resolve()),
            "data_root_origin": origin,
            "files": [f.to_dict() for f in parts.files],
            "protocol": dict(parts.protocol),
            "issues": [issue.to_dict() for issue in issues],
            "num_classes": len(parts.classes),
        },
        method={
            "name": spec.method,
            "version": method_cls.version,
            "params": spec.params,
            "ablations": list(spec.ablations),
            "ablated_components": sorted(method.ablations),
            "components": method_cls.component_names(),
            "refiner": (
                {"name": spec.refine, "version": spec.refine_version, "params": spec.refine_params}
                if spec.refine
                else None
            ),
            "plugin": {
                "name": plugin.name,
                "distribution": plugin.distribution,
                "version": plugin.version,
            },
        },
        # Name and fingerprint for every run with an encoder, training methods included
        # (they fine-tune the model it names and never embed through ctx.embed).
        encoder=ctx.describe_encoder(),
        feedback=feedback,
        provenance={
            **provenance.collect(),
            "engine_fingerprint": engine_fingerprint(),
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "durations_s": {k: round(v, 3) for k, v in {**timings, **ctx.timings}.items()},
            "peak_rss_mb": provenance.peak_rss_mb(),
            **ctx.describe(),
        },
        clusters=[
            {"id": int(k), "name": c.name, "description": c.description}
            for k, c in sorted(output.clusters.items())
        ],
        diagnostics=diagnostics,
        identity=identity.to_dict(),
    )
    path = store.write(record, predictions)
    ctx.discard_checkpoints()
    return Outcome(spec, "done", str(path))


def run_job(spec: RunSpec, options: RunOptions) -> Outcome:
    """:func:`execute` for executors: failures become outcomes, so one bad run does not
    stop a sweep. User errors keep their one-line message; crashes keep the traceback."""
    try:
        return execute(spec, options)
    except GcdbenchError as exc:
        return Outcome(spec, "failed", error=str(exc))
    except Exception:
        return Outcome(spec, "crashed", error=traceback.format_exc())


def download_reporter(reporter: Reporter) -> Callable[[DownloadEvent], None]:
    """Say what a download does: every retry (with its reason), every file fetched."""

    def report(event: DownloadEvent) -> None:
        if event.kind == "retry":
            reporter.message(f"retry {event.retries} of {event.url}: {event.message}")
        elif event.kind == "done":
            retries = f" after {event.retries} retries" if event.retries else ""
            reporter.message(f"downloaded {event.file} ({event.done_bytes:,} bytes){retries}")

    return report


def file_texts(parts: DatasetParts) -> dict[str, list[str]]:
    by_file: dict[str, dict[int, str]] = {}
    for part in (parts.train, parts.dev, parts.test):
        if part is None:
            continue
        rows = by_file.setdefault(part.file.sha256, {})
        rows.update(zip(part.rows.tolist(), part.texts, strict=True))
    # Rows no part uses (none in the built-in layouts) embed as empty strings.
    return {sha: [rows.get(i, "") for i in range(max(rows) + 1)] for sha, rows in by_file.items()}


def _novel_dev_examples(
    parts: DatasetParts, known: Sequence[str], per_class: int
) -> list[tuple[str, str]]:
    """The first ``per_class`` dev rows of every novel class (class order), with gold names."""
    if parts.dev is None:
        return []
    by_class: dict[str, list[str]] = {c: [] for c in parts.classes if c not in known}
    for text, label in zip(parts.dev.texts, parts.dev.labels, strict=True):
        texts = by_class.get(label)
        if texts is not None and len(texts) < per_class:
            texts.append(text)
    return [
        (text, str(parts.label_names.get(label, label)))
        for label, texts in by_class.items()
        for text in texts
    ]


def _gold_labels(gold: Gold, part: str) -> np.ndarray:
    return gold.train_y if part == "train" else gold.test_y


def _task_with_k(
    spec: RunSpec, task: GCDTask, ctx: RunContext
) -> tuple[GCDTask, dict[str, Any] | None]:
    """The task the method gets under ``--k``, and the record's ``split.k``: the true K and
    the fixed one, or the estimate with the estimator's details. An estimate is read off the
    frozen encoder's features of the training pool, drawing only from the ``k-estimate``
    stage; one outside [max(2, known classes), rows] is clamped, the record keeping both."""
    choice = parse_k(spec.k)
    if choice.is_true:
        return task, None
    low, high = max(2, task.num_known), min(len(task.train), len(task.test))
    section: dict[str, Any] = {"true": task.num_classes}
    if choice.fixed is not None:
        if choice.fixed > high:
            raise GcdbenchError(
                f"--k {choice.fixed} is more clusters than this split has texts ({high} in the "
                f"smaller of train and test); pass --k {high} or fewer."
            )
        k = section["fixed"] = choice.fixed
    else:
        name = str(choice.estimator)
        estimator: KEstimator = registry.get("k-estimator", name)
        with ctx.reporter.stage(f"estimate K: {name}"), ctx.timed("k_estimate"):
            estimate = estimator.estimate(ctx.embed(task.train), task, ctx.rng("k-estimate"))
        raw = estimate.k
        if isinstance(raw, bool) or not isinstance(raw, int | np.integer):
            raise GcdbenchError(
                f"K estimator {name!r} returned k = {raw!r}, not a whole number; fix the plugin."
            )
        k = min(max(int(raw), low), high)
        section.update(estimated=k, estimator=name, version=spec.k_version)
        if k != raw:
            section["unclamped"] = int(raw)
        section["details"] = dict(estimate.details)
    ctx.reporter.message(f"K = {k} for the method (true K {task.num_classes}; --k {spec.k})")
    return replace(task, num_classes=k), section


def _check_output(output: MethodOutput, task: GCDTask, spec: RunSpec) -> None:
    pred = np.asarray(output.test_assignments)
    if pred.shape != (len(task.test),) or not np.issubdtype(pred.dtype, np.integer):
        raise GcdbenchError(
            f"method {spec.method!r} returned test_assignments of shape {pred.shape} and dtype "
            f"{pred.dtype}; it must return one integer cluster id per test text "
            f"({len(task.test)}). Fix the method plugin."
        )
    if (pred < 0).any():
        raise GcdbenchError(
            f"method {spec.method!r} returned negative cluster ids; fix the plugin."
        )


def _predictions(task: GCDTask, gold: Gold, output: MethodOutput) -> pd.DataFrame:
    pred = np.asarray(output.test_assignments)
    mapping = hungarian_mapping(gold.test_y, pred)
    matched = np.array([mapping.get(int(c), -1) for c in pred])
    classes = np.array(gold.classes, dtype=object)
    return pd.DataFrame(
        {
            "test_row": task.test.rows,
            "gold": classes[gold.test_y],
            "cluster": pred,
            "matched_class": [classes[m] if m >= 0 else "" for m in matched],
            "correct": matched == gold.test_y,
        }
    )
