"""``llm-cluster``: text clustering as classification with an LLM (Huang & He, arXiv
2410.00927), as docs/methods/llm-cluster.md describes it.

Step 0: the seed labels are the known-class names. Step 1: label generation, one question per
shuffled mini-batch of B texts, the prompt showing the seeds. Step 2: one question merges the
collected list. Step 3: one classification question per text with the merged labels as
options; a text the LLM cannot place goes to an "Unsuccessful" cluster of its own (paper) or
to the nearest labelled centroid. K is not given: it comes out of the merge.

The ``cpu`` preset (the defaults) asks about a subsample only and assigns the remaining test
texts with a light model on encoder features fitted on the LLM's labels (llm-cluster.md §1.5);
``paper`` asks about every text. ``--variant official`` draws the seeds as the released code
does (with replacement) and shows the labels in an arbitrary (seeded) order (§6).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from gcdbench.api import (
    LAYOUTS,
    AskingPolicy,
    ClusterInfo,
    Component,
    GCDTask,
    Method,
    MethodOutput,
    Query,
    RunContext,
    hookimpl,
    param,
)
from gcdbench.api.asking import ask, usable
from gcdbench.api.feedback import BUDGET_EXHAUSTED, ERROR, Answer
from gcdbench.api.feedback_log import FeedbackLog
from gcdbench.api.parsing import label_key
from gcdbench.api.toolkit import fit_kmeans, l2_normalise
from gcdbench_builtins.clustering_kinds import ClassifyIntoLabels, LabelGeneration, LabelMerging

GENERATION, MERGING, CLASSIFY = LabelGeneration.name, LabelMerging.name, ClassifyIntoLabels.name
UNSUCCESSFUL = "Unsuccessful"
#: Names the paper's code drops from the generated labels (placeholders the prompt forbids)...
PLACEHOLDERS = ("new label", "unknown topic")
#: ...and the answer formats' own placeholders, which small models copy back verbatim
#: (SmolLM2 answered ``["<label>", "list"]``): the v1 templates' and the released code's.
FORMAT_PLACEHOLDERS = ("<label>", "label", "label name", "<label name>")
#: Answer statuses that mean no reply came back (a fault or the run's --llm-budget), as opposed
#: to a reply that names no label: such a text is treated as one the method did not ask about.
NO_REPLY = (ERROR, BUDGET_EXHAUSTED)
#: Weak regularisation: on unit-norm features with ~3 LLM-labelled texts per label, C = 1
#: underfits (oracle, BANKING 25% known, cpu preset: ACC 40.3 at C = 1, 76.4 at 10, 80.5 at 100,
#: nearest centroid 79.6).
LOGREG_C = 100.0


@dataclass(frozen=True)
class LlmClusterParams:
    variant: str = param(
        "paper",
        choices=("paper", "official"),
        help="official: seeds drawn with replacement, labels shown in an arbitrary order",
    )
    batch_size: int = param(15, ge=1, help="B: texts per label-generation question (paper: 15)")
    generate_on: str = param(
        "test",
        choices=("test", "pool"),
        help="texts labels are generated from: the test texts, or the unlabeled training pool",
    )
    generation_batches: int | None = param(
        20, ge=1, help="label-generation questions asked (none = every batch, the paper)"
    )
    show_labels: str = param(
        "seeds",
        choices=("seeds", "growing"),
        help="generation prompt lists the seeds (paper) or every label so far (deviation)",
    )
    merge_target: str = param(
        "none",
        choices=("none", "k"),
        help="k: ask the merge for about the true K labels (deviation; paper: none)",
    )
    dedup_threshold: float = param(
        0.0,
        ge=0.0,
        le=1.0,
        help="also merge labels whose encoder cosine >= this after the LLM merge (0 = off)",
    )
    classify_test: int | None = param(
        240, ge=1, help="test texts the LLM classifies (none = all, the paper); rest: rest_model"
    )
    classify_labeled: int | None = param(
        60, ge=0, help="labeled texts the LLM classifies for labeled_assignments (none = all)"
    )
    subsample: str = param(
        "diverse",
        choices=("diverse", "random"),
        help="which texts a budget keeps: nearest to K-means centres (diverse) or random",
    )
    rest_model: str = param(
        "centroid",
        choices=("centroid", "logreg"),
        help="assigns the test texts the LLM did not classify, on encoder features",
    )
    unmatched: str = param(
        "own-cluster",
        choices=("own-cluster", "nearest"),
        help="a reply naming no label: an Unsuccessful cluster (paper) or nearest centroid",
    )
    prompt_layout: str = param(
        "cache-friendly",
        choices=LAYOUTS,
        help="classification prompt: labels before the text (cache-friendly) or after",
    )


#: Every question asked (generation over all texts, every text classified): ≈ 1.07 N.
_PAPER = {"generation_batches": None, "classify_test": None, "classify_labeled": None}
_SMOKE = {"batch_size": 5, "generation_batches": 2, "classify_test": 12, "classify_labeled": 6}


class LlmCluster(Method):
    name = "llm-cluster"
    description = (
        "Text clustering as classification with LLMs (Huang & He): known names as seeds, LLM "
        "label generation over mini-batches, one merge, one classification per text; K from "
        "the merge. Defaults = the cpu preset (subsample + encoder model); presets: cpu, "
        "paper, smoke"
    )
    version = "1"
    uses = ("encoder", "feedback")
    asks = (GENERATION, MERGING, CLASSIFY)
    pseudo_labels = True
    components = (
        Component("seeds", "the known-class names as seed labels (ablated: no seeds, 0%)"),
        Component("generation", "LLM label generation (ablated: the seeds are the labels)"),
        Component("merge", "the LLM merge of the label list (ablated: the unmerged list)"),
    )
    Params = LlmClusterParams
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "cpu": {},
        "paper": _PAPER,
        "smoke": _SMOKE,
    }

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        return _Run(task, ctx, self.params, self.enabled).run()


# -- the run ----------------------------------------------------------------------------------


@dataclass
class _Classified:
    """One batch of classification questions: the text ids asked and what each became."""

    ids: np.ndarray
    #: label id per asked text; -1 unsuccessful (a reply naming no label), -2 no reply
    outcome: np.ndarray
    statuses: Counter[str] = field(default_factory=Counter)


UNSUCCESSFUL_OUTCOME, NO_REPLY_OUTCOME = -1, -2


class _Run:
    def __init__(
        self,
        task: GCDTask,
        ctx: RunContext,
        params: LlmClusterParams,
        enabled: Callable[[str], bool],
    ) -> None:
        self.task, self.ctx, self.params, self.enabled = task, ctx, params, enabled
        self.log = FeedbackLog()
        self.questions: Counter[str] = Counter()
        self.diag: dict[str, Any] = {"variant": params.variant}
        self._test_features: np.ndarray | None = None

    @property
    def test_features(self) -> np.ndarray:
        if self._test_features is None:
            self._test_features = l2_normalise(self.ctx.embed(self.task.test))
        return self._test_features

    def run(self) -> MethodOutput:
        seeds = self.seeds() if self.enabled("seeds") else []
        labels = _unique(seeds)
        self.diag["seeds"] = {"shown": len(seeds), "unique": len(labels), "names": list(labels)}
        if self.enabled("generation"):
            labels = self.generate(seeds, labels)
        self.diag["generated_labels"] = len(labels)
        if self.enabled("merge"):
            labels = self.merge(labels)
        if self.params.dedup_threshold > 0:
            labels = self.dedup(labels)
        self.diag["merged_labels"] = len(labels)
        if not labels:
            return self.no_labels()
        return self.classify_and_assign(labels, {label_key(s) for s in seeds})

    # -- step 0 -------------------------------------------------------------------------------

    def seeds(self) -> list[str]:
        """The known-class names. ``official``: as many draws as there are known classes
        from all K names *with replacement* (``random.choices``), the distinct drawn slots
        mapped onto a random subset of the known names; duplicates stay in the list shown.
        That is the released code's seed multiset when the known classes are its 20% draw,
        without reading a novel class's name."""
        names = list(self.task.known_class_names)
        if self.params.variant == "paper" or not names:
            return names
        rng = self.ctx.rng("seeds")
        draws = rng.integers(self.task.num_classes, size=len(names))
        slots = list(dict.fromkeys(int(d) for d in draws))
        picked = rng.choice(len(names), size=len(slots), replace=False)
        name_of = {slot: names[int(j)] for slot, j in zip(slots, picked, strict=True)}
        return [name_of[int(d)] for d in draws]

    # -- step 1 -------------------------------------------------------------------------------

    def generation_texts(self) -> tuple[list[str], np.ndarray, str]:
        """The texts generation reads, their ids in their part, and the part."""
        task = self.task
        if self.params.generate_on == "test":
            texts, ids, part = task.test.texts, np.arange(len(task.test)), "test"
        else:
            texts = task.train.texts[task.num_labeled :]
            ids, part = task.num_labeled + np.arange(len(texts)), "train"
        return list(texts), ids, part

    def generate(self, seeds: list[str], labels: list[str]) -> list[str]:
        p = self.params
        texts, ids, part = self.generation_texts()
        rng = self.ctx.rng("generation")
        wanted = len(texts) if p.generation_batches is None else p.generation_batches * p.batch_size
        if wanted < len(texts):
            chosen = self.subsample(len(texts), wanted, rng, self.generation_features)
        else:
            chosen = np.arange(len(texts))
        # The paper shuffles the data before cutting it into batches (seeded here).
        chosen = chosen[rng.permutation(len(chosen))]
        batches = [chosen[i : i + p.batch_size] for i in range(0, len(chosen), p.batch_size)]
        task_word = self.task.task_word
        keys = {label_key(label) for label in labels}
        dropped: Counter[str] = Counter()

        def query(batch: np.ndarray, shown: Sequence[str]) -> Query:
            payload: dict[str, Any] = {"texts": [texts[i] for i in batch], "task": task_word}
            if shown:
                payload["known_labels"] = list(shown)
            meta = {"ids": [int(ids[i]) for i in batch], "part": part}
            return Query(GENERATION, payload, meta)

        answers: list[Answer] = []
        if p.show_labels == "seeds":
            asked = ask(self.ctx, [query(b, seeds) for b in batches], log=self.log)
            answers = asked.answers
            for answer in answers:
                _collect(labels, keys, answer, dropped)
        else:
            # Each prompt shows every label collected so far, so the batches go one by one.
            for index, batch in enumerate(batches):
                asked = ask(self.ctx, [query(batch, labels)], log=self.log, round_index=index)
                answers += asked.answers
                _collect(labels, keys, asked.answers[0], dropped)
        self.questions[GENERATION] += len(batches)
        self.diag["generation"] = {
            "texts": len(chosen),
            "available": len(texts),
            "on": p.generate_on,
            "questions": len(batches),
            "statuses": _statuses(answers),
            "new_labels": len(labels) - len(_unique(seeds)),
            "placeholders_dropped": sum(dropped.values()),
        }
        return labels

    def generation_features(self) -> np.ndarray:
        if self.params.generate_on == "test":
            return self.test_features
        return l2_normalise(self.ctx.embed(self.task.train)[self.task.num_labeled :])

    def subsample(
        self, n: int, m: int, rng: np.random.Generator, features: Callable[[], np.ndarray]
    ) -> np.ndarray:
        """``m`` of ``n`` ids, sorted: random, or the text nearest each of m K-means centres
        (so a small budget still covers the whole feature space)."""
        if self.params.subsample == "random":
            return np.sort(rng.choice(n, size=m, replace=False))
        with self.ctx.timed("subsample"):
            return _diverse(features(), m, int(rng.integers(2**31 - 1)), rng)

    # -- step 2 -------------------------------------------------------------------------------

    def merge(self, labels: list[str]) -> list[str]:
        info: dict[str, Any] = {"before": len(labels), "asked": False}
        self.diag["merge"] = info
        if len(labels) < 2:
            info["after"] = len(labels)
            return labels
        payload: dict[str, Any] = {"labels": list(labels), "task": self.task.task_word}
        if self.params.merge_target == "k":
            payload["target_count"] = int(self.task.num_classes)
        asked = ask(self.ctx, [Query(MERGING, payload)], log=self.log)
        self.questions[MERGING] += 1
        answer = asked.answers[0]
        info.update(asked=True, status=answer.status, target=payload.get("target_count"))
        merged: list[str] = []
        if usable(answer) and isinstance(answer.value, list):
            merged = _unique(str(v) for v in answer.value if not _placeholder(str(v)))
        # The paper keeps the unmerged list when the reply does not parse.
        kept = not merged
        asked.used = [not kept]
        info.update(kept_unmerged=kept, after=len(labels if kept else merged))
        return labels if kept else merged

    def dedup(self, labels: list[str]) -> list[str]:
        """Greedy: a label joins the first earlier kept label whose encoder cosine reaches
        the threshold (declared deviation, llm-cluster.md §1.4 step 2)."""
        if len(labels) < 2:
            return labels
        vectors = l2_normalise(self.ctx.encoder.encode(labels))
        kept: list[int] = []
        for i in range(len(labels)):
            if not kept or float((vectors[kept] @ vectors[i]).max()) < self.params.dedup_threshold:
                kept.append(i)
        self.diag["dedup"] = {"before": len(labels), "after": len(kept)}
        return [labels[i] for i in kept]

    # -- step 3 -------------------------------------------------------------------------------

    def classify_and_assign(self, labels: list[str], seed_keys: set[str]) -> MethodOutput:
        p, task = self.params, self.task
        order = np.arange(len(labels))
        if p.variant == "official":
            # The released code classifies into list(set(labels)): an arbitrary order.
            order = self.ctx.rng("options").permutation(len(labels))
        shown = [labels[j] for j in order]
        label_vectors = l2_normalise(self.ctx.encoder.encode(shown))

        n_test = len(task.test)
        test_ids = np.arange(n_test)
        if p.classify_test is not None and p.classify_test < n_test:
            test_ids = self.subsample(
                n_test, p.classify_test, self.ctx.rng("classify-test"), lambda: self.test_features
            )
        test = self.classify(
            test_ids,
            task.test.texts,
            "test",
            shown,
            order,
            label_vectors,
            self.test_features[test_ids],
        )
        n_labeled = task.num_labeled
        labeled_ids = np.arange(n_labeled)
        if p.classify_labeled is not None and p.classify_labeled < n_labeled:
            rng = self.ctx.rng("classify-labeled")
            labeled_ids = np.sort(rng.choice(n_labeled, size=p.classify_labeled, replace=False))
        labeled_features = self.labeled_features(labeled_ids)
        labeled = self.classify(
            labeled_ids, task.train.texts, "train", shown, order, label_vectors, labeled_features
        )

        # The light model: fitted on every text the LLM placed (test and labeled).
        fit_x, fit_y = _fit_set(
            (self.test_features[test.ids], test.outcome), (labeled_features, labeled.outcome)
        )
        label_space = label_vectors[np.argsort(order)]  # in label id order
        bucket = len(labels)
        pred, assigned_by = self.assign_test(test, fit_x, fit_y, label_space, bucket)
        labeled_out = self.assign_labeled(labeled, labeled_features, fit_x, fit_y, bucket)

        used = sorted(set(pred.tolist()) | {int(v) for v in labeled_out if v >= 0})
        clusters = {
            c: (
                ClusterInfo(UNSUCCESSFUL, "texts the LLM could not place in the labels (paper)")
                if c == bucket
                else ClusterInfo(
                    labels[c],
                    "seed (known-class name)" if label_key(labels[c]) in seed_keys else "LLM label",
                )
            )
            for c in used
        }
        self.diag.update(
            labels=labels,
            predicted_k=len(np.unique(pred)),
            true_k=int(task.num_classes),
            unsuccessful=int((test.outcome == UNSUCCESSFUL_OUTCOME).sum()),
            unsuccessful_labeled=int((labeled.outcome == UNSUCCESSFUL_OUTCOME).sum()),
            no_reply=int((test.outcome == NO_REPLY_OUTCOME).sum()),
            classified_by_llm={
                "test": int((test.outcome >= 0).sum()),
                "test_asked": len(test.ids),
                "labeled": int((labeled.outcome >= 0).sum()),
                "labeled_asked": len(labeled.ids),
            },
            classification_statuses={
                "test": dict(test.statuses),
                "labeled": dict(labeled.statuses),
            },
            assigned_by=assigned_by,
            questions={k: self.questions.get(k, 0) for k in (GENERATION, MERGING, CLASSIFY)},
        )
        return MethodOutput(
            test_assignments=pred.astype(np.int64),
            clusters=clusters,
            diagnostics=self.diag,
            feedback_log=self.log,
            labeled_assignments=labeled_out.astype(np.int64),
        )

    def labeled_features(self, ids: np.ndarray) -> np.ndarray:
        if not len(ids):
            return np.empty((0, self.test_features.shape[1]), dtype=np.float32)
        texts = [self.task.train.texts[int(i)] for i in ids]
        return l2_normalise(self.ctx.encoder.encode(texts))

    def classify(
        self,
        ids: np.ndarray,
        texts: Sequence[str],
        part: str,
        shown: list[str],
        order: np.ndarray,
        label_vectors: np.ndarray,
        features: np.ndarray,
    ) -> _Classified:
        """One question per text (``features``: theirs, in ``ids`` order); the reply's option
        is mapped back to the label id."""
        policy = AskingPolicy(layout=self.params.prompt_layout)
        word = self.task.task_word
        queries = [
            Query(
                CLASSIFY,
                {"text": texts[int(i)], "labels": shown, "task": word},
                {"id": int(i), "part": part},
                policy,
            )
            for i in ids
        ]
        # What the encoder alone would answer: the label name nearest the text.
        nearest = (features @ label_vectors.T).argmax(axis=1) if len(ids) else []
        encoder_values = [int(j) for j in nearest]
        asked = ask(
            self.ctx,
            queries,
            log=self.log,
            round_index=0 if part == "test" else 1,
            encoder_values=encoder_values,
            label=f"{CLASSIFY} ({'test' if part == 'test' else 'labeled'})",
        )
        self.questions[CLASSIFY] += len(queries)
        outcome = np.array([_outcome(a, order) for a in asked.answers], dtype=np.int64)
        asked.used = [bool(o >= 0) for o in outcome]
        return _Classified(ids, outcome, Counter(a.status for a in asked.answers))

    def assign_test(
        self,
        test: _Classified,
        fit_x: np.ndarray,
        fit_y: np.ndarray,
        label_space: np.ndarray,
        bucket: int,
    ) -> tuple[np.ndarray, dict[str, int]]:
        n = len(self.task.test)
        pred = np.full(n, -1, dtype=np.int64)
        placed = test.outcome >= 0
        pred[test.ids[placed]] = test.outcome[placed]
        assigned_by = {"llm": int(placed.sum())}
        failed = test.ids[test.outcome == UNSUCCESSFUL_OUTCOME]
        if len(failed):
            if self.params.unmatched == "own-cluster":
                pred[failed] = bucket
                assigned_by["unsuccessful-cluster"] = len(failed)
            else:
                how = _predict(self.test_features[failed], fit_x, fit_y, label_space, "centroid")
                pred[failed] = how[0]
                assigned_by[f"unsuccessful-to-{how[1]}"] = len(failed)
        rest = np.flatnonzero(pred < 0)
        if len(rest):
            with self.ctx.timed("rest-model"):
                values, how_name = _predict(
                    self.test_features[rest],
                    fit_x,
                    fit_y,
                    label_space,
                    self.params.rest_model,
                    seed=int(self.ctx.rng("rest-model").integers(2**31 - 1)),
                )
            pred[rest] = values
            assigned_by[how_name] = len(rest)
        return pred, assigned_by

    def assign_labeled(
        self,
        labeled: _Classified,
        features: np.ndarray,
        fit_x: np.ndarray,
        fit_y: np.ndarray,
        bucket: int,
    ) -> np.ndarray:
        """Labels of the labeled texts in the test id space; -1 for one not classified (not
        asked, or no reply)."""
        out = np.full(self.task.num_labeled, -1, dtype=np.int64)
        placed = labeled.outcome >= 0
        out[labeled.ids[placed]] = labeled.outcome[placed]
        failed = labeled.outcome == UNSUCCESSFUL_OUTCOME
        if failed.any():
            if self.params.unmatched == "own-cluster" or not len(fit_y):
                out[labeled.ids[failed]] = bucket
            else:
                out[labeled.ids[failed]] = _centroid_predict(features[failed], fit_x, fit_y)
        return out

    def no_labels(self) -> MethodOutput:
        """Nothing to classify into (no seeds and no generated label): one cluster."""
        self.diag.update(
            labels=[],
            predicted_k=1,
            true_k=int(self.task.num_classes),
            unsuccessful=0,
            classified_by_llm={"test": 0, "test_asked": 0, "labeled": 0, "labeled_asked": 0},
            assigned_by={"no-labels": len(self.task.test)},
            questions={k: self.questions.get(k, 0) for k in (GENERATION, MERGING, CLASSIFY)},
        )
        return MethodOutput(
            test_assignments=np.zeros(len(self.task.test), dtype=np.int64),
            clusters={0: ClusterInfo("(no labels)", "no seed and no generated label")},
            diagnostics=self.diag,
            feedback_log=self.log,
            labeled_assignments=np.full(self.task.num_labeled, -1, dtype=np.int64),
        )


# -- helpers ----------------------------------------------------------------------------------


def _placeholder(label: str) -> bool:
    key = label_key(label)
    return not key or key in FORMAT_PLACEHOLDERS or any(p in key for p in PLACEHOLDERS)


def _unique(labels: Any) -> list[str]:
    out: dict[str, str] = {}
    for label in labels:
        label = str(label).strip()
        if label and label_key(label) not in out:
            out[label_key(label)] = label
    return list(out.values())


def _collect(labels: list[str], keys: set[str], answer: Answer, dropped: Counter[str]) -> None:
    """Append the reply's labels not collected yet, dropping placeholders (paper)."""
    if not usable(answer) or not isinstance(answer.value, list):
        return
    for name in answer.value:
        name = str(name).strip()
        if _placeholder(name):
            dropped[name] += 1
        elif label_key(name) not in keys:
            keys.add(label_key(name))
            labels.append(name)


def _statuses(answers: Sequence[Answer]) -> dict[str, int]:
    return dict(sorted(Counter(a.status for a in answers).items()))


def _outcome(answer: Answer, order: np.ndarray) -> int:
    if usable(answer):
        return int(order[int(answer.value)])
    return NO_REPLY_OUTCOME if answer.status in NO_REPLY else UNSUCCESSFUL_OUTCOME


def _fit_set(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Features and label ids of the texts the LLM placed."""
    xs = [x[y >= 0] for x, y in parts if len(y)]
    ys = [y[y >= 0] for _, y in parts if len(y)]
    if not xs:
        return np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.int64)
    return np.vstack(xs), np.concatenate(ys)


def _centroid_predict(x: np.ndarray, fit_x: np.ndarray, fit_y: np.ndarray) -> np.ndarray:
    ids = np.unique(fit_y)
    centroids = l2_normalise(np.stack([fit_x[fit_y == c].mean(axis=0) for c in ids]))
    return ids[(x @ centroids.T).argmax(axis=1)]


def _predict(
    x: np.ndarray,
    fit_x: np.ndarray,
    fit_y: np.ndarray,
    label_space: np.ndarray,
    model: str,
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Label ids for ``x`` and how they were found. Without any LLM-placed text (every
    answer failed), the label name nearest the text (the encoder zero-shot)."""
    if not len(fit_y):
        return (x @ label_space.T).argmax(axis=1).astype(np.int64), "encoder-zero-shot"
    if model == "logreg" and len(np.unique(fit_y)) > 1:
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=LOGREG_C, max_iter=1000, random_state=seed).fit(fit_x, fit_y)
        return clf.predict(x).astype(np.int64), "rest-model:logreg"
    return _centroid_predict(x, fit_x, fit_y), "rest-model:centroid"


def _diverse(features: np.ndarray, m: int, seed: int, rng: np.random.Generator) -> np.ndarray:
    """The text nearest each of ``m`` K-means centres (topped up at random if clusters
    share a nearest text), sorted."""
    n = len(features)
    if m >= n:
        return np.arange(n)
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    # One thread: with hundreds of centres on a busy 2-core machine, OpenMP's spinning
    # threads made this fit 15x slower (32 s vs 2.2 s on 3,080 x 384, measured).
    with threadpool_limits(limits=1):
        fit = fit_kmeans(features, m, seed, n_init=1, max_iter=50)
    sims = features @ l2_normalise(fit.centers).T
    chosen: set[int] = set()
    for c in range(m):
        members = np.flatnonzero(fit.labels == c)
        if len(members):
            chosen.add(int(members[sims[members, c].argmax()]))
    if len(chosen) < m:
        rest = np.setdiff1d(np.arange(n), np.fromiter(chosen, dtype=np.int64))
        chosen.update(int(i) for i in rng.choice(rest, size=m - len(chosen), replace=False))
    return np.sort(np.fromiter(chosen, dtype=np.int64))


@hookimpl
def register_methods(register):
    register(LlmCluster)
