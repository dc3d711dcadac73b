"""GLEAN and Loop (issue #5): conformance, every component switch, the paper/official variants,
the leaky option, quality filters, the feedback log, and one GLEAN round through a real LLM.

Runs go through ``gcdbench run`` with the smoke preset and the tiny random BERT, on slices of
the real BANKING data (its first classes, 24 train / 4 dev / 8 test texts each, copied from
the benchmark data folder and registered as datasets by this module), so a run takes seconds.
The weights are random, so the tests read what each switch changes in the record (questions
asked, loss terms, demonstrations, filters), never how good the clusters are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench import registry
from gcdbench.api.feedback import LOW_CONFIDENCE, OK, PARSE_FAILURE, Answer, AskingPolicy, Query
from gcdbench.api.feedback_log import CATEGORY, INSTANCE
from gcdbench.api.spec import RunSpec
from gcdbench.cli import cli
from gcdbench.data.split import build_task, make_split
from gcdbench.feedback import prompts
from gcdbench.feedback.asking import LLMOptions, build_asks
from gcdbench.llm.openai_compat import OpenAICompatibleBackend
from gcdbench.runner.context import RunContext
from gcdbench.runner.run import _novel_dev_examples
from gcdbench.testing import check_method, tiny_task
from gcdbench.training.questions import CHARACTERIZE, AskingStyle, usable
from gcdbench_builtins.glean import Glean, GleanRounds
from gcdbench_builtins.loop import Loop
from tests.banking_slices import SlicePlugin, write_slices
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)

#: slice name -> number of BANKING classes it keeps (the first ones, in sorted order)
SLICES = {"banking-slice6": 6, "banking-slice4": 4}
SLICE = "banking-slice6"
KNOWN = 3  # known classes of SLICE at --known-ratio 0.5
GLEAN_COMPONENTS = ["instance-instance", "cluster-instance", "demo", "filter", "quality", "llm"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch/OpenMP thread while this module runs: these models are tiny, and on a busy
    2-core machine two spinning threads made the conformance checks of GLEAN take 56 s
    instead of 4 s (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def slices(shared_data, tmp_path_factory) -> Path:
    """A data root holding the BANKING slices, registered while this module runs."""
    root = tmp_path_factory.mktemp("banking-slices")
    write_slices(shared_data, root, SLICES)
    registry.register_plugin(SlicePlugin(SLICES), "test-banking-slices")
    yield root
    registry.unregister_plugin("test-banking-slices")


def _options(dataset: str, root: Path, bert: Path, results: Path) -> list[str]:
    fixed = ["--dataset", dataset, "--known-ratio", "0.5", "--seed", "0", "--preset", "smoke"]
    return [*fixed, "--encoder", str(bert), "--data-dir", str(root), "--results-dir", str(results)]


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)


def _one_error_line(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def run(slices, tiny_bert, tmp_path_factory) -> Callable[..., dict[str, Any]]:  # noqa: F811
    """``run("glean --ablate demo")`` -> the record (arguments with spaces go after the
    string); each distinct run happens once per module, in its own results folder."""
    done: dict[tuple[str, ...], dict[str, Any]] = {}
    base = tmp_path_factory.mktemp("glean-loop-results")

    def go(args: str, *extra: str, dataset: str = SLICE) -> dict[str, Any]:
        key = (dataset, args, *extra)
        if key not in done:
            results = base / str(len(done))
            outcome = _invoke(
                [*args.split(), *extra, *_options(dataset, slices, tiny_bert, results)]
            )
            assert outcome.exit_code == 0, outcome.output
            (path,) = results.rglob("record.json")
            done[key] = json.loads(path.read_text())
        return done[key]

    return go


def _asked_kinds(record: dict[str, Any]) -> set[str]:
    feedback = record["feedback"]
    return set(feedback["stats"]["per_kind"]) if feedback else set()


def _losses(record: dict[str, Any]) -> set[str]:
    return {k for r in record["diagnostics"]["rounds"] for e in r["epochs"] for k in e["loss"]}


def _plan(record: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return record["diagnostics"]["rounds"][index]["plan"]


# -- 1. conformance ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", [Glean, Loop], ids=["glean", "loop"])
def test_conformance_with_the_oracle(method, tiny_bert):  # noqa: F811
    check_method(method, encoder=str(tiny_bert))


# -- 2. every component switch, with the oracle ---------------------------------------------


def test_glean_with_every_component(run):
    record = run("glean --llm oracle")
    assert record["method"]["ablated_components"] == []
    assert record["method"]["components"] == GLEAN_COMPONENTS
    assert _asked_kinds(record) == {INSTANCE, CATEGORY, CHARACTERIZE}
    plan = _plan(record)
    assert plan["anchors"] == 6  # the smoke preset's query_samples
    assert plan[INSTANCE]["asked"] == plan[CATEGORY]["asked"] == 6
    assert plan[CATEGORY]["used"] > 0 and "align" in _losses(record)
    glean = record["diagnostics"]["glean"]
    assert glean["instance_demonstrations"] == KNOWN * 1  # smoke: demos_per_class = 1
    assert glean["category_demonstrations"] == KNOWN * 2
    assert (glean["min_confidence"], glean["orderings"]) == (0.8, 2)  # the cpu default: 2 orders
    assert [c["id"] for c in record["clusters"]] == list(range(6))
    assert all(c["name"] for c in record["clusters"])  # the oracle names every cluster
    quality = record["diagnostics"]["feedback_quality"]
    assert set(quality["totals"]) == {INSTANCE, CATEGORY}
    # Only the clusters a category question offered were described.
    assert quality["descriptions"]["rounds"][0]["descriptions"] == plan["described"] <= 6


def test_glean_fusion_fits_on_labeled_questions_and_uses_every_fused_answer(run):
    record = run("glean --llm noisy-oracle:0.7 -p fusion=true")
    assert record["diagnostics"]["glean"]["fusion"] is True
    per_kind = record["feedback"]["stats"]["per_kind"]
    plan = _plan(record)
    for kind in (INSTANCE, CATEGORY):
        fusion = plan["fusion"][kind]
        # At most the smoke preset's 6 labeled anchors (an instance question needs two
        # options with a labeled member, so it may be fewer).
        assert 0 < fusion["calibration_questions"] <= 6
        assert fusion["fitted"] is True
        assert set(fusion["coefficients"]) == {
            "provider_probability",
            "log_provider_probability",
            "cosine",
            "cosine_gap",
        }
        assert 0 <= fusion["same_as_encoder"] <= plan[kind]["asked"]
        # The fused answer never abstains: every question trains, filters or not.
        assert plan[kind]["used"] == plan[kind]["asked"] == 6
        # The calibration questions are asked as the kind's own questions.
        assert per_kind[kind]["queries"] == 6 + fusion["calibration_questions"]


def test_glean_without_instance_feedback_asks_no_similar_instance(run):
    record = run("glean --llm oracle --ablate instance-instance")
    assert record["method"]["ablated_components"] == ["instance-instance"]
    assert _asked_kinds(record) == {CATEGORY, CHARACTERIZE}
    assert INSTANCE not in _plan(record) and CATEGORY in _plan(record)
    assert record["diagnostics"]["rounds"][0]["positives_overridden"] == 0
    assert set(record["diagnostics"]["feedback_quality"]["totals"]) == {CATEGORY}
    assert record["diagnostics"]["glean"]["instance_feedback"] is False
    assert "align" in _losses(record)


def test_glean_without_cluster_feedback_has_no_categories_names_or_alignment(run):
    record = run("glean --llm oracle --ablate cluster-instance")
    assert record["method"]["ablated_components"] == ["cluster-instance"]
    assert _asked_kinds(record) == {INSTANCE}
    plan = _plan(record)
    assert CATEGORY not in plan and "description_fallbacks" not in plan
    assert plan[INSTANCE]["asked"] == 6
    assert "align" not in _losses(record) and {"ncl", "ce"} <= _losses(record)
    assert record["diagnostics"]["rounds"][0]["align_targets"] == 0
    assert record["clusters"] == []
    quality = record["diagnostics"]["feedback_quality"]
    assert set(quality["totals"]) == {INSTANCE} and "descriptions" not in quality
    assert record["diagnostics"]["glean"]["cluster_feedback"] is False


@pytest.mark.parametrize(
    ("ablate", "ablated", "demos", "min_confidence"),
    [
        ("demo", ["demo"], 0, 0.8),
        ("filter", ["filter"], KNOWN, None),
        ("quality", ["demo", "filter", "quality"], 0, None),
    ],
)
def test_glean_quality_switches(run, ablate, ablated, demos, min_confidence):
    record = run(f"glean --llm oracle --ablate {ablate}")
    assert record["method"]["ablated_components"] == ablated
    glean = record["diagnostics"]["glean"]
    assert glean["instance_demonstrations"] == demos
    assert glean["category_demonstrations"] == 2 * demos
    assert glean["min_confidence"] == min_confidence
    # the questions themselves are still asked
    assert _asked_kinds(record) == {INSTANCE, CATEGORY, CHARACTERIZE}


def test_glean_without_both_feedback_kinds_never_opens_the_llm(run, slices, tiny_bert, tmp_path):  # noqa: F811
    # A model file that does not exist: opening it would fail the run, so success proves
    # the provider was never built.
    missing = str(tmp_path / "nonexistent.gguf")
    # `--ablate llm` is the group of both feedback kinds: GLEAN's matched control.
    record = run("glean --ablate llm --llm", f"llamacpp:{missing}")
    assert record["spec"]["llm"] == f"llamacpp:{missing}"
    assert record["method"]["ablated_components"] == sorted(
        ["llm", "instance-instance", "cluster-instance"]
    )
    assert record["feedback"] is None
    assert "feedback_quality" not in record["diagnostics"]
    assert record["diagnostics"]["rounds"][0]["plan"] == {}
    assert record["clusters"] == [] and "align" not in _losses(record)
    # Control: the same spec with one kind of feedback left on does open it, and fails.
    options = _options(SLICE, slices, tiny_bert, tmp_path / "r")
    failed = _invoke(
        ["glean", "--ablate", "cluster-instance", "--llm", f"llamacpp:{missing}", *options]
    )
    assert failed.exit_code == 2 and "is not a file" in _one_error_line(failed)
    assert not list((tmp_path / "r").rglob("record.json"))


def test_glean_round_without_anchors_trains_without_alignment(run):
    # Regression: a round with no usable category answer (here: no anchors at all) used to
    # stop training with "loss 'align' needs batch keys".
    record = run("glean --llm oracle -p query_samples=0")
    # No category question offers a cluster, so none is described; the final clusters are
    # still named.
    assert _plan(record) == {"anchors": 0, "description_fallbacks": 0, "described": 0}
    assert _asked_kinds(record) == {CHARACTERIZE}
    assert record["feedback"]["stats"]["per_kind"][CHARACTERIZE]["queries"] == len(
        record["clusters"]
    )
    assert "align" not in _losses(record)
    assert record["diagnostics"]["feedback_quality"]["rounds"] == []


def test_loop_with_every_component(run):
    record = run("loop --llm oracle")
    assert record["method"]["components"] == ["llm", "ce", "naming"]
    plan = _plan(record)
    assert plan[INSTANCE]["asked"] == plan["selected"] - plan["no_query"] > 0
    assert record["diagnostics"]["rounds"][0]["positives_overridden"] == plan[INSTANCE]["used"]
    assert {"ncl", "ce"} == _losses(record)
    names = [c["description"] for c in record["clusters"]]
    assert len(names) == 6 and names.count("matched to a known class") == KNOWN
    assert INSTANCE in _asked_kinds(record) and CHARACTERIZE in _asked_kinds(record)
    assert set(record["diagnostics"]["feedback_quality"]["totals"]) == {INSTANCE}


@pytest.mark.parametrize("component", ["llm", "ce", "naming"])
def test_loop_component_switches(run, component):
    record = run(f"loop --llm oracle --ablate {component}")
    assert record["method"]["ablated_components"] == [component]
    asked = _asked_kinds(record)
    if component == "llm":
        assert _plan(record) == {} and INSTANCE not in asked
        assert record["diagnostics"]["rounds"][0]["positives_overridden"] == 0
        assert "feedback_quality" not in record["diagnostics"]
        assert CHARACTERIZE in asked and len(record["clusters"]) == 6  # naming still asks
    elif component == "ce":
        assert _losses(record) == {"ncl"} and INSTANCE in asked
    else:
        assert record["clusters"] == [] and asked == {INSTANCE}


# -- 3. variants and bad switches ---------------------------------------------------------------


def test_official_variant_is_recorded_and_changes_training(run):
    paper = run("glean --llm oracle")
    official = run("glean --llm oracle --variant official")
    assert official["spec"]["params"]["variant"] == "official"
    assert paper["spec"]["params"]["variant"] == "paper"
    assert official["spec_hash"] != paper["spec_hash"]
    got = {
        key: official["diagnostics"]["glean"][key]
        for key in ("variant", "alignment_denominator", "exclude_anchor_from_candidates")
    }
    assert got == {
        "variant": "official",
        "alignment_denominator": "negatives only (official code)",
        "exclude_anchor_from_candidates": False,
    }
    assert paper["diagnostics"]["glean"]["alignment_denominator"] == "with positive"
    assert paper["diagnostics"]["glean"]["exclude_anchor_from_candidates"] is True
    # Different mining and alignment: the same seed trains to different losses.
    loss = [r["diagnostics"]["rounds"][0]["epochs"][0]["loss"] for r in (paper, official)]
    assert loss[0] != loss[1]

    loop = run("loop --llm oracle --variant official")
    assert loop["diagnostics"]["loop"] == {"variant": "official", "options": 2}


def test_variant_on_a_method_without_one_is_one_line_error(slices, tmp_path):
    where = ["--data-dir", str(slices), "--results-dir", str(tmp_path)]
    result = _invoke(["kmeans", "--variant", "official", "--dataset", SLICE, *where])
    assert result.exit_code == 2
    assert "has no paper/official variant" in _one_error_line(result)


@pytest.mark.parametrize(
    ("method", "components"),
    [
        ("glean", GLEAN_COMPONENTS),
        ("loop", ["llm", "ce", "naming"]),
    ],
)
def test_unknown_ablation_lists_the_components(slices, tmp_path, method, components):
    where = ["--dataset", SLICE, "--data-dir", str(slices), "--results-dir", str(tmp_path)]
    result = _invoke([method, "--ablate", "instance", "--llm", "oracle", *where])
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "'instance'" in line and all(c in line for c in components)


# -- 4. the leaky option ----------------------------------------------------------------------


def test_leaky_category_demos_mark_the_record(run):
    leaky = run("glean --llm oracle -p leaky_category_demos=true")
    assert leaky["provenance"]["leaks_labels"] == ["glean leaky_category_demos"]
    glean = leaky["diagnostics"]["glean"]
    assert glean["category_demonstrations_leak_novel_labels"] is True
    assert glean["category_demonstrations"] == 2 * (6 - KNOWN)  # 2 per novel class
    assert "leaks_labels" not in run("glean --llm oracle")["provenance"]
    # without demonstrations the option reads nothing, so nothing leaks
    no_demo = run("glean --llm oracle -p leaky_category_demos=true --ablate demo")
    assert "leaks_labels" not in no_demo["provenance"]


@pytest.fixture(scope="module")
def banking_rounds(shared_data, tmp_path_factory):
    """Build GleanRounds on the full BANKING split (seed 0, 25% known), as the runner does."""
    definition = registry.get("dataset", "banking")
    parts = definition.load(shared_data / "banking")
    split = make_split(parts, known_ratio=0.25, labeled_ratio=0.1, seed=0)
    task, _ = build_task(parts, split, task_word=definition.task)
    novel = {parts.label_names.get(c, c) for c in parts.classes} - set(task.known_class_names)

    def build(*ablations: str, **overrides: Any) -> tuple[GleanRounds, RunContext]:
        spec = RunSpec("glean", "banking", 0.25, 0, 0.1)
        ctx = RunContext(
            spec,
            {},
            lambda: None,
            tmp_path_factory.mktemp("ctx"),
            novel_dev_examples=lambda n: _novel_dev_examples(parts, split.known_classes, n),
        )
        params = Glean.resolve_params(None, {k: str(v) for k, v in overrides.items()})
        method = Glean(params, Glean.expand_ablations(list(ablations)))
        return GleanRounds(task, ctx, params, method), ctx

    return build, task, novel


def test_demonstrations_hold_known_classes_only_by_default(banking_rounds):
    build, task, novel = banking_rounds
    rounds, ctx = build()
    known = set(task.known_class_names)
    instance = rounds.instance_style.demonstrations
    category = rounds.category_style.demonstrations
    assert {name for _, name in instance} == known and len(instance) == 5 * len(known)
    assert {name for _, name in category} == known and len(category) == 2 * len(known)
    assert not {name for _, name in [*instance, *category]} & novel
    assert ctx.leaked == []

    leaky, ctx = build(leaky_category_demos=True)
    assert {name for _, name in leaky.category_style.demonstrations} == novel
    assert {name for _, name in leaky.instance_style.demonstrations} == known
    assert ctx.leaked == ["glean leaky_category_demos"]


def test_glean_describes_the_offered_clusters_or_all(banking_rounds, run):
    build, task, _ = banking_rounds
    candidates = np.array([[3, 5], [5, 9], [9, 3]])
    assert build()[0]._to_describe(candidates) == [3, 5, 9]
    assert build(describe="all")[0]._to_describe(candidates) == list(range(task.num_classes))

    every = run("glean --llm oracle -p describe=all -p epochs=2")
    rounds = every["diagnostics"]["rounds"]
    assert [r["plan"]["described"] for r in rounds] == [6, 6]
    assert all(
        d["descriptions"] == 6
        for d in every["diagnostics"]["feedback_quality"]["descriptions"]["rounds"]
    )
    per_kind = every["feedback"]["stats"]["per_kind"]
    assert per_kind[CHARACTERIZE]["queries"] == 2 * 6 + len(every["clusters"])
    assert every["identity"] != run("glean --llm oracle -p epochs=2")["identity"]


# -- 5. quality filters reach the provider ---------------------------------------------------


def test_asking_style_payload_and_usable():
    task, _, _ = tiny_task()
    plain = AskingStyle()
    assert plain.payload(task, "q", ["a", "b"]) == {
        "query": "q",
        "options": ["a", "b"],
        "task": task.task_word,
    }
    assert not plain.filtering
    strict = AskingStyle([("t", "lost_card")], AskingPolicy(orderings=2, min_confidence=0.8))
    payload = strict.payload(task, "q", ["a", "b"])
    # How to ask is the policy's, not the payload's: the question alone is the payload.
    assert payload["demonstrations"] == [["t", "lost_card"]] and len(payload) == 4
    assert strict.filtering and AskingStyle(policy=AskingPolicy(orderings=2)).filtering

    low = Answer(1, status=LOW_CONFIDENCE, confidence=0.3)
    assert usable(low, plain) and not usable(low, strict)
    assert usable(Answer(0, status=OK), strict)
    assert not usable(Answer(None, status=PARSE_FAILURE), plain)


def test_filters_set_by_glean_render_in_the_prompts(banking_rounds):
    build, task, _ = banking_rounds
    # a real backend object: only its capabilities are read, it is never called
    backend = OpenAICompatibleBackend("m", base_url="http://127.0.0.1:9/v1", api_key="unused")
    options = ["how do I top up", "where is my card", "close my account"]

    def asks(rounds: GleanRounds) -> list[Any]:
        style = rounds.instance_style
        payload = style.payload(task, "my card has not come", options)
        return build_asks(0, Query(INSTANCE, payload, policy=style.policy), backend, LLMOptions())

    filtered = asks(build(order_consistency=1)[0])
    assert len(filtered) == 1 and filtered[0].answer_mode == prompts.CONFIDENCE
    assert "Confidence:" in filtered[0].request.messages[-1].content
    assert "confidence" in filtered[0].request.json_schema["properties"]

    twice = asks(build()[0])  # the cpu preset asks in two orders
    assert len(twice) == 2 and twice[0].order == (0, 1, 2) and twice[1].order != twice[0].order
    assert {tuple(sorted(a.order)) for a in twice} == {(0, 1, 2)}

    unfiltered = asks(build("filter", order_consistency=2)[0])
    assert len(unfiltered) == 1 and unfiltered[0].answer_mode == prompts.PLAIN
    assert "Confidence:" not in unfiltered[0].request.messages[-1].content


# -- 6. the feedback log of a GLEAN run ------------------------------------------------------


def test_feedback_log_matches_the_round_plans(run):
    record = run("glean --llm oracle -p epochs=2")  # two rounds
    rounds = record["diagnostics"]["rounds"]
    quality = record["diagnostics"]["feedback_quality"]
    assert len(rounds) == 2
    rows = {(row["kind"], row["round"]): row for row in quality["rounds"]}
    assert set(rows) == {(kind, i) for kind in (INSTANCE, CATEGORY) for i in range(2)}
    for i, stats in enumerate(rounds):
        plan = stats["plan"]
        for kind in (INSTANCE, CATEGORY):
            row = rows[(kind, i)]
            assert row["asked"] == plan["anchors"] == plan[kind]["asked"] == 6
            assert row["used"] == plan[kind]["used"]
            assert {s: n for s, n in row["statuses"].items() if n} == plan[kind]["statuses"]
        assert stats["positives_overridden"] == plan[INSTANCE]["used"]
        assert stats["align_targets"] == plan[CATEGORY]["used"]
    for kind in (INSTANCE, CATEGORY):
        assert quality["totals"][kind]["asked"] == sum(rows[(kind, i)]["asked"] for i in range(2))
    described = quality["descriptions"]["rounds"]
    assert [d["round"] for d in described] == [0, 1]
    assert [d["descriptions"] for d in described] == [r["plan"]["described"] for r in rounds]
    assert [d["fallbacks"] for d in described] == [
        r["plan"]["description_fallbacks"] for r in rounds
    ]
    per_kind = record["feedback"]["stats"]["per_kind"]
    assert per_kind[INSTANCE]["queries"] == per_kind[CATEGORY]["queries"] == 12
    assert per_kind[CHARACTERIZE]["queries"] == sum(r["plan"]["described"] for r in rounds) + len(
        record["clusters"]
    )


# -- 7. one GLEAN round through a real local LLM --------------------------------------------


def test_glean_round_through_a_local_llm_then_from_the_ledger(run, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional dependency")
    ledger = str(tmp_path / "ledger.sqlite")
    # One thread: on a busy 2-core machine llama.cpp's spinning threads slow a question from
    # about 2 s to over 40 s (measured); the answers do not depend on it.
    llm = "--llm llamacpp:smollm2-135m --llm-option n_threads=1"
    args = f"glean {llm} -p query_samples=2 -p representatives=3"
    first = run(args, "--ledger", ledger, dataset="banking-slice4")
    feedback = first["feedback"]
    assert feedback["provider"] == "llm" and feedback["simulated"] is False
    assert "SmolLM2-135M" in feedback["backend"]["model"]
    per_kind = feedback["stats"]["per_kind"]
    assert set(per_kind) == {INSTANCE, CATEGORY, CHARACTERIZE}
    for kind, stats in per_kind.items():
        assert stats["backend_requests"] > 0 and stats["ledger_hits"] == 0, kind
        assert sum(stats["statuses"].values()) == stats["queries"], kind
    plan = _plan(first)
    for kind in (INSTANCE, CATEGORY):
        assert sum(plan[kind]["statuses"].values()) == plan[kind]["asked"] == 2
    quality = first["diagnostics"]["feedback_quality"]
    assert set(quality["totals"]) == {INSTANCE, CATEGORY}
    assert quality["descriptions"]["rounds"][0]["descriptions"] == plan["described"] <= 4
    assert len(first["clusters"]) == 4
    for cluster in first["clusters"]:
        assert isinstance(cluster["name"], str)
        assert isinstance(cluster["description"], str) and cluster["description"].strip()

    # The same run again, offline: every answer must come from the ledger.
    again = run(f"{args} --llm-offline", "--ledger", ledger, dataset="banking-slice4")
    total = again["feedback"]["stats"]["total"]
    assert total["backend_requests"] == 0
    # Every distinct request is replayed (two option orders of a question can render the same
    # prompt, e.g. two clusters described alike: one request, one ledger entry).
    assert total["ledger_hits"] == feedback["stats"]["total"]["backend_requests"] > 0
    assert again["clusters"] == first["clusters"] and again["metrics"] == first["metrics"]
    assert again["spec_hash"] == first["spec_hash"]
