"""Conformance checks any method plugin runs against itself, in the spirit of
scikit-learn's ``check_estimator``::

    from gcdbench.testing import check_method
    check_method(MyMethod)                   # raises ConformanceError on the first failure

    @pytest.mark.parametrize("check", method_checks(MyMethod), ids=lambda c: c.__name__)
    def test_conformance(check):
        check()

The checks run the method on a tiny synthetic task (six classes, 120 texts, built in memory)
with the built-in hashed bag-of-words encoder, a real featurizer that needs no model,
so they take seconds on a CPU. Pass ``encoder="all-MiniLM-L6-v2"`` to check with a real model;
methods that fine-tune a transformer need a model there (a small local folder keeps it quick),
and run with their ``smoke`` preset when they declare one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gcdbench import registry
from gcdbench.api.dataset import DataFile, DatasetParts, Part
from gcdbench.api.encoder import Encoder
from gcdbench.api.feedback import ERROR, LAYOUTS, FeedbackEnv, Query
from gcdbench.api.method import Method, MethodOutput, params_dict
from gcdbench.api.query_kind import ANSWER_SECTIONS, ChoiceKind, QueryKind
from gcdbench.api.spec import RunSpec
from gcdbench.api.task import GCDTask, Gold
from gcdbench.data.split import build_task, make_split
from gcdbench.encoders.bag_of_words import BagOfWordsEncoder
from gcdbench.encoders.cache import FeatureCache
from gcdbench.registry import KINDS
from gcdbench.report.feedback_quality import score_feedback_log
from gcdbench.runner.context import RunContext, build_context

__all__ = [
    "BagOfWordsEncoder",
    "ConformanceError",
    "check_method",
    "check_query_kind",
    "method_checks",
    "tiny_task",
]


class ConformanceError(AssertionError):
    """A method plugin broke the contract; the message says which rule and how to fix it."""


_TOPICS = {
    "card_arrival": "card arrive delivery post mail when",
    "exchange_rate": "exchange rate currency euro dollar convert",
    "top_up_failed": "top up failed declined balance add money",
    "lost_card": "lost stolen card missing block freeze",
    "pin_change": "pin change code new reset number",
    "refund": "refund return merchant money back purchase",
}
_FILLER = ["please", "help", "me", "my", "the", "i", "a", "can", "you", "with", "about"]


def tiny_parts(seed: int = 0) -> DatasetParts:
    """A six-class dataset with train/dev/test parts, deterministic for ``seed``."""
    rnd = random.Random(seed)
    splits = {"train": 14, "dev": 3, "test": 6}
    parts: dict[str, Part] = {}
    for part_name, per_class in splits.items():
        texts, labels = [], []
        for label, words in _TOPICS.items():
            vocab = words.split()
            for _ in range(per_class):
                sentence = rnd.sample(vocab, 3) + rnd.sample(_FILLER, 3)
                rnd.shuffle(sentence)
                texts.append(" ".join(sentence))
                labels.append(label)
        sha = hashlib.sha256(json.dumps([part_name, texts, labels]).encode()).hexdigest()
        file = DataFile(f"{part_name}.tsv", Path(f"<tiny>/{part_name}.tsv"), sha, True)
        parts[part_name] = Part(texts, labels, file, np.arange(len(texts)))
    classes = tuple(sorted(_TOPICS))
    return DatasetParts(
        name="tiny",
        train=parts["train"],
        dev=parts["dev"],
        test=parts["test"],
        classes=classes,
        label_names={c: c for c in classes},
        files=tuple(p.file for p in parts.values()),
    )


def tiny_task(seed: int = 0, known_ratio: float = 0.5) -> tuple[GCDTask, Any, DatasetParts]:
    parts = tiny_parts(seed)
    split = make_split(parts, known_ratio=known_ratio, labeled_ratio=0.5, seed=seed)
    task, gold = build_task(parts, split)
    return task, gold, parts


def _context(
    method_cls: type[Method],
    params: Any,
    seed: int,
    parts: DatasetParts,
    encoder: Encoder | str | None,
    work_dir: Path,
    gold: Gold,
    feedback: str,
) -> RunContext:
    """The context the runner would build for this method on the tiny task."""
    # A named encoder goes into the spec, as the runner puts it there: training methods
    # fine-tune the model it names. An encoder object (default: the bag of words) is handed
    # over as it is.
    spec = RunSpec(
        method_cls.name,
        "tiny",
        0.5,
        seed,
        0.5,
        encoder=encoder if isinstance(encoder, str) else None,
        llm=feedback if "feedback" in method_cls.uses else None,
        params=params_dict(params),
    )
    texts = {p.file.sha256: list(p.texts) for p in (parts.train, parts.dev, parts.test) if p}
    return build_context(
        spec,
        texts,
        work_dir,
        uses=method_cls.uses,
        encoder=None if isinstance(encoder, str) else encoder or BagOfWordsEncoder(),
        feedback_env=FeedbackEnv(seed=seed, gold=gold, ledger_path=work_dir / "ledger.sqlite"),
        features=FeatureCache(work_dir / "features"),
    )


def _fail(method_cls: type[Method], rule: str) -> ConformanceError:
    return ConformanceError(f"{getattr(method_cls, 'name', method_cls.__name__)}: {rule}")


def method_checks(
    method_cls: type[Method], *, encoder: Encoder | str | None = None, feedback: str = "oracle"
) -> list[Callable[[], None]]:
    """The checks, each a no-argument callable named after what it checks. Methods that
    ask feedback get ``feedback`` (a ``--llm`` spec; the exact gold oracle by default)."""

    def check_declaration() -> None:
        name = getattr(method_cls, "name", None)
        if not isinstance(name, str) or not name or name != name.strip() or " " in name:
            raise _fail(method_cls, "`name` must be a non-empty string without spaces")
        if not (isinstance(method_cls, type) and issubclass(method_cls, Method)):
            raise _fail(method_cls, "must subclass gcdbench.api.Method")
        unknown_kinds = set(method_cls.uses) - set(KINDS)
        if unknown_kinds:
            raise _fail(
                method_cls,
                f"`uses` names unknown kinds {sorted(unknown_kinds)}; use {sorted(KINDS)}",
            )
        if method_cls.trains_encoder and "encoder" not in method_cls.uses:
            raise _fail(
                method_cls, "a method that trains its encoder must list 'encoder' in `uses`"
            )
        if "feedback" in method_cls.uses and not method_cls.asks:
            raise _fail(method_cls, "a feedback method must list the query kinds it asks in `asks`")
        unregistered = [k for k in method_cls.asks if k not in registry.names("query-kind")]
        if unregistered:
            raise _fail(
                method_cls,
                f"`asks` names unregistered query kinds {unregistered}; register them "
                "(hook register_query_kinds) or fix the names",
            )
        names = [c.name for c in method_cls.components]
        if len(names) != len(set(names)):
            raise _fail(method_cls, "component names must be unique")
        for component in method_cls.components:
            missing = set(component.includes) - set(names)
            if missing:
                raise _fail(
                    method_cls, f"group {component.name!r} includes undeclared {sorted(missing)}"
                )

    def check_params() -> None:
        if not dataclasses.is_dataclass(method_cls.Params):
            raise _fail(method_cls, "`Params` must be a dataclass")
        for field in dataclasses.fields(method_cls.Params):
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise _fail(method_cls, f"parameter {field.name!r} needs a default")
        for preset in [None, *method_cls.presets]:
            params = method_cls.resolve_params(preset, {})
            try:
                json.dumps(params_dict(params))
            except TypeError:
                raise _fail(
                    method_cls, f"preset {preset!r}: parameters must be JSON values"
                ) from None

    def run_once(
        seed: int,
        ablations: frozenset[str] = frozenset(),
        *,
        feedback_spec: str | None = None,
        expect_errors: bool = False,
    ) -> tuple[MethodOutput, GCDTask]:
        task, gold, parts = tiny_task(seed)
        preset = "smoke" if "smoke" in method_cls.presets else None
        params = method_cls.resolve_params(preset, {})
        spec = feedback_spec or feedback
        with tempfile.TemporaryDirectory() as tmp:
            ctx = _context(method_cls, params, seed, parts, encoder, Path(tmp), gold, spec)
            try:
                output = method_cls(params, ablations).run(task, ctx)
                if ctx.backbones and not method_cls.fine_tunes_encoder(ablations):
                    # The runner checks the encoder has weights only for methods that say
                    # they train it; an undeclared one fails mid-run, after the split.
                    raise _fail(
                        method_cls,
                        "it fine-tuned the encoder (ctx.load_backbone) but does not declare "
                        "`trains_encoder = True`",
                    )
                if expect_errors and ctx.feedback_loaded:
                    _check_errors_counted(method_cls, ctx.feedback.describe())
            finally:
                if ctx.feedback_loaded:
                    ctx.feedback.close()
            if output.feedback_log is not None:
                try:
                    score_feedback_log(output.feedback_log, gold, BagOfWordsEncoder())
                except Exception as exc:
                    raise _fail(
                        method_cls, f"its feedback_log cannot be scored against gold: {exc}"
                    ) from exc
            return output, task

    def check_output() -> None:
        output, task = run_once(0)
        pred = np.asarray(output.test_assignments)
        if pred.shape != (len(task.test),) or not np.issubdtype(pred.dtype, np.integer):
            raise _fail(
                method_cls,
                f"test_assignments must be {len(task.test)} integers, got {pred.shape} "
                f"{pred.dtype}",
            )
        if (pred < 0).any():
            raise _fail(method_cls, "cluster ids must be non-negative")
        for key, info in output.clusters.items():
            if not isinstance(info.name, str):
                raise _fail(method_cls, f"cluster {key} must have a string name")
        try:
            json.dumps(output.diagnostics, default=str)
        except (TypeError, ValueError):
            raise _fail(method_cls, "diagnostics must be JSON-serialisable") from None
        log = output.feedback_log
        asked = {a.kind for a in log.asked} | {c.kind for c in log.choices} if log else set()
        undeclared = sorted(asked - set(method_cls.asks))
        if undeclared:
            raise _fail(method_cls, f"it asked {undeclared}, which `asks` does not list")

    def check_pseudo_labels() -> None:
        output, task = run_once(0)
        labeled = output.labeled_assignments
        if labeled is None:
            raise _fail(
                method_cls,
                "a `pseudo_labels` method must return labeled_assignments (its labels of the "
                "labeled texts), which refiners estimate its reliability from",
            )
        labeled = np.asarray(labeled)
        if labeled.shape != (task.num_labeled,) or not np.issubdtype(labeled.dtype, np.integer):
            raise _fail(
                method_cls,
                f"labeled_assignments must be {task.num_labeled} integers, got "
                f"{labeled.shape} {labeled.dtype}",
            )
        if (labeled < -1).any() or not (labeled >= 0).any():
            raise _fail(
                method_cls,
                "labeled_assignments must hold cluster ids (-1 for a text the method did not "
                "label), at least one of them >= 0",
            )

    def check_deterministic() -> None:
        first, _ = run_once(3)
        second, _ = run_once(3)
        if not np.array_equal(first.test_assignments, second.test_assignments):
            raise _fail(
                method_cls,
                "two runs with the same seed disagree; draw randomness from ctx.rng(stage)",
            )

    def check_no_global_rng() -> None:
        np.random.seed(12345)
        random.seed(12345)
        np_state, py_state = _np_global_state(), random.getstate()
        run_once(1)
        if not np.array_equal(_np_global_state(), np_state) or random.getstate() != py_state:
            raise _fail(
                method_cls, "the method used the global NumPy/Python RNG; use ctx.rng(stage)"
            )

    def check_failing_feedback() -> None:
        # A real provider over a real network fault: the OpenAI-compatible backend sent to a
        # local port nothing listens on, no retries. Every answer comes back status "error";
        # the method must finish with a valid output, and the provider must count the errors.
        failing = f"openai:unreachable;base_url={_closed_port_url()};max_retries=0"
        try:
            output, task = run_once(0, feedback_spec=failing, expect_errors=True)
        except ConformanceError:
            raise
        except Exception as exc:
            raise _fail(
                method_cls,
                "with every feedback answer an error (a network fault) the method raised "
                f"{type(exc).__name__}: {exc}; fall back where `answer.ok` is false",
            ) from None
        if np.asarray(output.test_assignments).shape != (len(task.test),):
            raise _fail(method_cls, "with failing feedback the output has the wrong shape")

    def check_ablations() -> None:
        for component in method_cls.components:
            output, task = run_once(0, method_cls.expand_ablations([component.name]))
            if np.asarray(output.test_assignments).shape != (len(task.test),):
                raise _fail(
                    method_cls, f"with {component.name!r} ablated the output has the wrong shape"
                )

    checks = [
        check_declaration,
        check_params,
        check_output,
        check_deterministic,
        check_no_global_rng,
        check_ablations,
    ]
    # Checks picked by what the method declares it uses (as scikit-learn picks by tags).
    if "feedback" in method_cls.uses:
        checks.append(check_failing_feedback)
    if method_cls.pseudo_labels:
        checks.append(check_pseudo_labels)
    return checks


def _closed_port_url() -> str:
    """A local URL nothing listens on: a port the OS just handed out and took back."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _check_errors_counted(method_cls: type[Method], described: dict[str, Any]) -> None:
    total = described.get("stats", {}).get("total", {})
    asked = total.get("queries", 0)
    errors = total.get("statuses", {}).get(ERROR, 0)
    if asked and errors != asked:
        raise _fail(
            method_cls,
            f"with a failing backend {errors} of {asked} answers were counted as errors; "
            "every one should be",
        )


def _np_global_state() -> np.ndarray:
    # The key array of the legacy tuple (NumPy types get_state() as a dict or a tuple).
    state: Any = np.random.get_state(legacy=True)
    return np.array(state[1], copy=True)


def check_method(
    method_cls: type[Method], *, encoder: Encoder | str | None = None, feedback: str = "oracle"
) -> None:
    """Run every check; raise :class:`ConformanceError` on the first broken rule."""
    for check in method_checks(method_cls, encoder=encoder, feedback=feedback):
        check()


def check_query_kind(kind: QueryKind, example: Query | None = None) -> None:
    """What a query kind plugin must get right before any model sees it: a name, templates
    that load (the default among them) with the sections its answers need, and, given an
    ``example`` query, that the example validates and renders in every layout and answer mode
    its default template has. Raises :class:`ConformanceError` naming the rule."""

    def fail(rule: str) -> ConformanceError:
        return ConformanceError(f"query kind {getattr(kind, 'name', kind)!r}: {rule}")

    name = getattr(kind, "name", None)
    if not isinstance(name, str) or not name or " " in name:
        raise fail("`name` must be a non-empty string without spaces")
    versions = kind.templates()
    if kind.default_template not in versions:
        raise fail(
            f"default template {kind.default_template!r} is not among its templates "
            f"{versions} in {kind.template_dir}; ship {name}.{kind.default_template}.txt there"
        )
    needed = ["instructions", "answer"]
    if isinstance(kind, ChoiceKind):
        needed += ["option_line", "subject"]
    for version in versions:
        template = kind.template(version)
        missing = [section for section in needed if not template.has(section)]
        if missing:
            raise fail(f"template {template.id} lacks the sections {missing}")
    if example is None:
        return
    if example.kind != name:
        raise fail(f"the example is a {example.kind!r} query")
    kind.validate(example)
    template = kind.template(example.policy.template)
    modes = [mode for mode, section in ANSWER_SECTIONS.items() if template.has(section)]
    for layout in LAYOUTS:
        for mode in modes:
            order = (
                list(range(len(kind.options(example)))) if isinstance(kind, ChoiceKind) else None
            )
            messages = kind.render(example, template, layout=layout, answer_mode=mode, order=order)
            if not messages or not messages[-1].content.strip():
                raise fail(f"rendering the example ({layout}, {mode}) gave no user message")
