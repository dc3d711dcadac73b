"""The SILR refiner (plugins/gcdbench_builtins/silr.py, docs/methods/silr.md): the robust UU
loss, the prior estimation, the degenerate cases, determinism, and ``--refine silr`` through
the CLI on BANKING with the test-only pseudo-labeller tests/plugins/noisy_labeller.py.

The CLI runs use the bag-of-words encoder (no model to load); what SILR does to noisy labels
with real sentence embeddings is measured in docs/methods/silr.md §5, not asserted here.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.api import MethodOutput
from gcdbench.cli import cli
from gcdbench.testing import BagOfWordsEncoder, _context, tiny_task
from gcdbench_builtins import silr

sys.path.insert(0, str(Path(__file__).parent / "plugins"))
import noisy_labeller

BANKING = ["--dataset", "banking", "--known-ratio", "0.25", "--seed", "0"]
BOW = ["--encoder", "bag-of-words"]


@pytest.fixture(scope="module")
def labeller():
    registry.register_plugin(noisy_labeller, "test-noisy-labeller")
    yield
    registry.unregister_plugin("test-noisy-labeller")


def _invoke(tmp_path, shared_data, *args):
    argv = ["run", *args, "--results-dir", str(tmp_path / "r"), "--data-dir", str(shared_data)]
    return CliRunner().invoke(cli, [*argv, "-q"])


def _records(tmp_path) -> list[dict]:
    """Every record written, with its run id (the folder it lies in)."""
    return [
        {**json.loads(p.read_text()), "run_id": p.parent.name}
        for p in (tmp_path / "r").rglob("record.json")
    ]


def _one_error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert len(errors) == 1, result.output
    return errors[0]


# -- the loss ------------------------------------------------------------------------------------


def test_the_generalized_leaky_relu_flips_the_gradient_of_a_negative_risk():
    x = torch.tensor([2.0, -3.0], requires_grad=True)
    out = silr.generalized_leaky_relu(x, -0.001)
    assert torch.allclose(out, torch.tensor([2.0, 0.003]))
    out.sum().backward()
    # A negative partial risk is pushed back up (gradient ascent on it), at |γ| the speed.
    assert torch.allclose(x.grad, torch.tensor([1.0, -0.001]))


def _batch(seed: int = 0, n: int = 60, classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, classes, generator=gen) * 2
    labels = torch.randint(classes, (n,), generator=gen)
    member = torch.nn.functional.one_hot(labels, classes).float()
    return scores, member, member.mean(0)


@pytest.mark.parametrize("loss", ["sigmoid", "logistic"])
def test_with_clean_labels_the_uu_risk_is_the_supervised_risk(loss):
    scores, member, share = _batch()
    ones, zeros = torch.ones(4), torch.zeros(4)
    got = silr.robust_uu_loss(scores, member, share, share, ones, zeros, -0.001, loss=loss)
    if loss == "sigmoid":
        pos, neg = torch.sigmoid(-scores), torch.sigmoid(scores)
    else:
        pos, neg = torch.nn.functional.softplus(-scores), torch.nn.functional.softplus(scores)
    # θ1 = 1, θ2 = 0, π = the share: one-vs-rest risk under the labels, averaged over classes.
    supervised = (member * pos + (1 - member) * neg).mean(0).mean()
    assert torch.allclose(got, supervised, atol=1e-6)


def test_the_uu_risk_matches_its_formula_and_prefers_the_labels_side():
    scores, member, share = _batch(1, classes=3)
    theta1, theta2 = torch.tensor([0.8, 0.7, 0.9]), torch.tensor([0.05, 0.1, 0.02])
    pi = share * theta1 + (1 - share) * theta2  # consistent with the shares
    got = silr.robust_uu_loss(scores, member, share, pi, theta1, theta2, -0.001)
    u, v = member, 1 - member
    lp, ln = torch.sigmoid(-scores), torch.sigmoid(scores)
    e = {
        "u+": (u * lp).sum(0) / u.sum(0),
        "v+": (v * lp).sum(0) / v.sum(0),
        "u-": (u * ln).sum(0) / u.sum(0),
        "v-": (v * ln).sum(0) / v.sum(0),
    }
    gap = theta1 - theta2
    r_pos = ((1 - theta2) * pi * e["u+"] - (1 - theta1) * pi * e["v+"]) / gap
    r_neg = (theta1 * (1 - pi) * e["v-"] - theta2 * (1 - pi) * e["u-"]) / gap
    f = lambda x: torch.where(x > 0, x, -0.001 * x)  # noqa: E731
    assert torch.allclose(got, (f(r_pos) + f(r_neg)).mean(), atol=1e-6)
    agree = (2 * member - 1) * 4  # positive where pseudo-labelled, negative elsewhere
    low = silr.robust_uu_loss(agree, member, share, pi, theta1, theta2, -0.001)
    high = silr.robust_uu_loss(-agree, member, share, pi, theta1, theta2, -0.001)
    assert low < high


def test_a_negative_partial_risk_is_clamped():
    # θ1 = 0.6, θ2 = 0.3: a head sure of the pseudo-labels drives both partial risks below 0.
    member = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    share = member.mean(0)
    theta1, theta2 = torch.tensor([0.6]), torch.tensor([0.3])
    pi = share * theta1 + (1 - share) * theta2
    scores = torch.tensor([[8.0], [8.0], [-8.0], [-8.0]], requires_grad=True)
    plain = silr.robust_uu_loss(scores, member, share, pi, theta1, theta2, 1.0)  # f(x) = x
    plain.backward()
    unclamped = scores.grad.clone()
    scores.grad = None
    robust = silr.robust_uu_loss(scores, member, share, pi, theta1, theta2, -0.001)
    robust.backward()
    assert plain < 0 < robust
    # Descent on the plain risk would push further (overfitting); the clamp turns it into a
    # small ascent: the gradient is γ times the plain one.
    assert torch.allclose(scores.grad, -0.001 * unclamped)
    assert (unclamped[:2] < 0).all() and (unclamped[2:] > 0).all()


# -- priors --------------------------------------------------------------------------------------


def _simulated_labeller(seed: int = 0):
    """Four classes (3 known, 1 novel) with priors .4/.3/.2/.1; the labeller's recall .75
    for every class, its misses spread evenly (so every class's texts land in a wrong
    cluster at the same rate, the assumption the estimate rests on); cluster ids permuted."""
    rng = np.random.default_rng(seed)
    priors, recall = np.array([0.4, 0.3, 0.2, 0.1]), np.full(4, 0.75)

    def label(y):
        miss = rng.random(len(y)) >= recall[y]
        other = (y + rng.integers(1, 4, len(y))) % 4
        return np.where(miss, other, y)

    test_y = rng.choice(4, 40_000, p=priors)
    known_y = np.repeat(np.arange(3), 2000)
    perm = np.array([2, 0, 3, 1])  # gold class -> cluster code
    return test_y, perm[label(test_y)], known_y, perm[label(known_y)], perm, priors, recall


def test_priors_recover_a_constructed_labeller():
    test_y, test_lab, known_y, known_lab, perm, priors, _ = _simulated_labeller()
    est = silr.estimate_priors(test_lab, known_lab, known_y, 4, 3, 0.0, "measured")
    assert est.summary["matched_known"] == 3 and est.summary["novel_pooled"] == 1
    true = silr.gold_priors(test_lab, test_y, 4)  # P(y | ŷ) counted with gold labels
    for k in range(4):  # the novel class too: its rates are the pooled ones
        c = perm[k]
        assert abs(est.pi[c] - priors[k]) < 0.01
        assert abs(est.theta1[c] - true.theta1[c]) < 0.02
        assert abs(est.theta2[c] - true.theta2[c]) < 0.01
    share = np.bincount(test_lab, minlength=4) / len(test_lab)
    # Bayes keeps the three consistent: q θ1 + (1 − q) θ2 = π.
    assert np.allclose(share * est.theta1 + (1 - share) * est.theta2, est.pi)
    assert est.active.all() and not est.reasons
    summed = silr.estimate_priors(test_lab, known_lab, known_y, 4, 3, 0.0, "sum-to-one")
    assert summed.pi.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(summed.pi[perm] - priors).max() < 0.01


def test_priors_do_not_depend_on_how_the_labeled_texts_were_drawn():
    # The released code reads P(y | ŷ) off a class-balanced sample; P(ŷ | y) and Bayes do
    # not care how many labeled texts each class has (silr.md §6).
    _, test_lab, known_y, known_lab, *_ = _simulated_labeller()
    skewed = np.concatenate([np.flatnonzero(known_y == 0)[:200], np.flatnonzero(known_y > 0)])
    a = silr.estimate_priors(test_lab, known_lab, known_y, 4, 3, 0.0, "measured")
    b = silr.estimate_priors(test_lab, known_lab[skewed], known_y[skewed], 4, 3, 0.0, "measured")
    assert np.abs(a.pi - b.pi).max() < 0.01 and np.abs(a.theta1 - b.theta1).max() < 0.02


def test_the_sum_to_one_false_positive_rate_spreads_misses_evenly():
    share = np.array([0.5, 0.3, 0.2])
    f = silr.sum_to_one_false_positive(share, np.full(3, 0.8))
    assert f == pytest.approx(0.2 / 2)


def test_degenerate_clusters_keep_their_pseudo_labels():
    rng = np.random.default_rng(0)
    known_y = np.repeat(np.arange(3), 30)
    # Cluster 2 takes a third of every class's texts, its own no more than the others': it
    # says nothing about class 2 (recall = false-positive rate). Clusters 0 and 1 do.
    labeled = np.where(np.arange(90) % 3 == 0, 2, np.where(known_y < 2, known_y, np.arange(90) % 2))
    labeled[:5] = -1  # not labelled (a budget cut)
    test = rng.integers(0, 3, 300)
    est = silr.estimate_priors(test, labeled, known_y, 3, 3, 0.0, "measured")
    assert est.active[:2].all() and not est.active[2]
    assert est.reasons[2].startswith("theta1 - theta2")
    none = silr.estimate_priors(test, np.full(90, -1), known_y, 3, 3, 5.0)
    assert not none.active.any() and "no labeled text" in none.reasons[0]
    empty = silr.estimate_priors(np.zeros(10, dtype=int), labeled, known_y, 3, 3, 0.0)
    assert empty.reasons[1] == "empty cluster"
    scores = np.array([[0.0, 1.0, 9.0], [5.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    # A text labelled with a frozen cluster keeps it; the others go to the best active one,
    # never into a frozen cluster (text 2 scores cluster 2 highest).
    got = silr.relabel(scores, np.array([2, 1, 0]), np.array([True, True, False]))
    assert got.tolist() == [2, 0, 0]


# -- the refiner on the tiny task ---------------------------------------------------------------


def _refine(params: dict, labeled_all_unlabelled: bool = False, seed: int = 0):
    task, gold, parts = tiny_task(seed)
    rng = np.random.default_rng(seed)
    noisy = np.where(
        rng.random(len(gold.test_y)) < 0.3, rng.integers(0, 6, len(gold.test_y)), gold.test_y
    )
    labeled = gold.train_y[: task.num_labeled].copy()
    if labeled_all_unlabelled:
        labeled[:] = -1
    output = MethodOutput(
        test_assignments=(noisy + 10).astype(np.int64),  # ids need not be 0..K-1
        labeled_assignments=np.where(labeled >= 0, labeled + 10, -1).astype(np.int64),
        diagnostics={"labeller": "hand-made"},
    )
    refiner = silr.Silr(silr.Silr.resolve_params(params))
    method_cls = registry.get("method", "kmeans")
    with tempfile.TemporaryDirectory() as tmp:
        params_ = method_cls.resolve_params(None, {})
        ctx = _context(method_cls, params_, seed, parts, BagOfWordsEncoder(), Path(tmp), gold, "")
        return refiner.refine(task, ctx, output), output


def test_refine_is_deterministic_and_leaves_global_state_alone():
    np.random.seed(7)
    random.seed(7)
    torch.manual_seed(7)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    torch_state, threads = torch.random.get_rng_state().clone(), torch.get_num_threads()
    first, given = _refine({"iterations": 2, "epochs": 3})
    second, _ = _refine({"iterations": 2, "epochs": 3})
    assert np.array_equal(first.test_assignments, second.test_assignments)
    assert set(first.test_assignments) <= set(given.test_assignments)
    assert first.diagnostics["labeller"] == "hand-made"  # the method's diagnostics are kept
    rounds = first.diagnostics["refine"]["iterations"]
    assert [r["iteration"] for r in rounds] == [0, 1]
    assert {"changed", "agreement", "mean_pi", "mean_theta1", "mean_theta2", "skipped"} <= set(
        rounds[0]
    )
    assert first.labeled_assignments is not None and (first.labeled_assignments >= 10).all()
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert torch.get_num_threads() == threads


def test_the_supervised_ablation_trusts_the_labels():
    refined, _ = _refine({"iterations": 1, "epochs": 3, "risk": "supervised"})
    [round_] = refined.diagnostics["refine"]["iterations"]
    assert round_["mean_theta1"] == 1.0 and round_["mean_theta2"] == 0.0
    assert round_["sum_pi"] == pytest.approx(1.0) and "labelled_accuracy" in round_


def test_without_labelled_labeled_texts_the_labels_stay():
    refined, given = _refine({"iterations": 3}, labeled_all_unlabelled=True)
    assert np.array_equal(refined.test_assignments, given.test_assignments)
    diag = refined.diagnostics["refine"]
    assert diag["rounds_run"] == 0 and "every cluster frozen" in diag["iterations"][0]["stopped"]
    assert diag["labeller_accuracy_on_labeled"] is None


# -- through the CLI ---------------------------------------------------------------------------


def test_refine_silr_through_the_cli(tmp_path, shared_data, labeller):
    plain = _invoke(tmp_path, shared_data, "noisy-labeller", *BANKING)
    assert plain.exit_code == 0, plain.output
    # Fewer rounds and epochs than the defaults, for time; the path is the same.
    quick = ["--refine-param", "iterations=2", "--refine-param", "epochs=10"]
    refined = _invoke(
        tmp_path, shared_data, "noisy-labeller", *BANKING, *BOW, "--refine", "silr", *quick
    )
    assert refined.exit_code == 0, refined.output
    [before] = [r for r in _records(tmp_path) if not r["spec"].get("refine")]
    [after] = [r for r in _records(tmp_path) if r["spec"].get("refine")]
    assert after["run_id"] != before["run_id"]
    assert after["method"]["refiner"]["name"] == "silr"
    assert after["method"]["refiner"]["params"]["iterations"] == 2
    assert after["encoder"]["name"] == "bag-of-words"  # the refiner's encoder, not the method's
    diag = after["diagnostics"]["refine"]
    assert diag["refiner"] == "silr" and diag["variant"] == "paper"
    # The unrefined metrics are the plain run's, and SILR changed labels.
    assert diag["before"]["acc"] == pytest.approx(before["metrics"]["acc"])
    assert diag["changed"] > 0 and len(diag["iterations"]) == 2
    # Measured on the labeled texts, the labeller's accuracy is near its 0.6.
    assert 0.45 < diag["labeller_accuracy_on_labeled"] < 0.75
    # The labeller reads gold (and says so); the paper variant of SILR does not.
    assert not [why for why in after["provenance"]["leaks_labels"] if "silr" in why]
    print(
        f"\nbag-of-words, 0.6 uniform noise: ACC {diag['before']['acc']:.2f} -> "
        f"{after['metrics']['acc']:.2f}"
    )


def test_refine_needs_a_pseudo_labelling_method(tmp_path, shared_data):
    result = _invoke(tmp_path, shared_data, "kmeans", *BANKING, "--refine", "silr")
    assert result.exit_code == 2
    assert "does not assign labels text by text" in _one_error_line(result)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["iterations=0"], "refiner 'silr': parameter iterations"),
        (["head=cnn"], "e.g. --refine-param head="),
        (["nope=1"], "nope"),
        (["variant=official", "risk=supervised"], "drop one of them"),
    ],
)
def test_a_bad_refine_param_is_one_line(tmp_path, shared_data, labeller, params, message):
    given = [arg for param in params for arg in ("--refine-param", param)]
    result = _invoke(tmp_path, shared_data, "noisy-labeller", *BANKING, "--refine", "silr", *given)
    assert result.exit_code == 2
    assert message in _one_error_line(result)
    assert not (tmp_path / "r").exists()


def test_the_official_variant_marks_the_record(tmp_path, shared_data, labeller):
    common = ["noisy-labeller", *BANKING, *BOW, "--refine", "silr"]
    quick = ["--refine-param", "iterations=1", "--refine-param", "epochs=3"]
    for variant in ("paper", "official"):
        result = _invoke(
            tmp_path, shared_data, *common, *quick, "--refine-param", f"variant={variant}"
        )
        assert result.exit_code == 0, result.output
    by_variant = {r["method"]["refiner"]["params"]["variant"]: r for r in _records(tmp_path)}
    # The labeller's own reads are there in both; SILR's only in the official variant.
    leaks = {v: r["provenance"]["leaks_labels"] for v, r in by_variant.items()}
    assert not [why for why in leaks["paper"] if "silr" in why]
    assert [why for why in leaks["official"] if "silr" in why] == [silr._LEAK_WHY]
    official = by_variant["official"]["diagnostics"]["refine"]["iterations"][0]
    assert official["gold_accuracy"] == pytest.approx(0.6, abs=0.05)
