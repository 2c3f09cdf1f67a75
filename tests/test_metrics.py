"""Open-set metrics against hand-computed cases."""
import numpy as np
import pytest

from gradmix.metrics import accuracy, auroc, fpr_at_tpr, openset_metrics, oscr, roc, score_metrics
from gradmix.scores import mls, msp


def test_auroc_counts_pairs_and_half_ties():
    # pairs (k, u): (3,1) (3,2) (3,3) (2,1) (2,2) (2,3) -> wins 1,1,½,1,½,0 = 4/6
    assert auroc(np.array([3.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(4 / 6)
    assert auroc(np.array([5.0, 6.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([2.0])) == 0.0


def test_oscr_hand_computed():
    # known scores 3 (correct), 2 (wrong), 1 (correct); unknown 2.5, 0.5
    # (FPR, CCR): (0,0) (0,1/3) (.5,1/3) (.5,1/3) (.5,2/3) (1,2/3) -> area .5·1/3 + .5·2/3 = .5
    assert oscr(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 1], bool), np.array([2.5, 0.5])) == pytest.approx(0.5)


def test_oscr_ends_at_accuracy_not_one():
    # every known above every unknown: CCR rises to accuracy at FPR 0, stays there -> OSCR = accuracy
    s_k = np.array([5.0, 4.0, 3.0, 2.0])
    correct = np.array([1, 1, 0, 1], bool)
    assert oscr(s_k, correct, np.array([1.0, 0.0])) == pytest.approx(0.75)


def test_oscr_equals_auroc_when_classification_is_perfect():
    rng = np.random.default_rng(0)
    s_k, s_u = rng.normal(1, 1, 50), rng.normal(0, 1, 40)
    assert oscr(s_k, np.ones(50, bool), s_u) == pytest.approx(auroc(s_k, s_u))


def test_oscr_ties_move_both_rates_at_once():
    # one known (correct) and one unknown at the same score: a diagonal from (0,0) to (1,1) -> ½
    assert oscr(np.array([1.0]), np.array([True]), np.array([1.0])) == pytest.approx(0.5)


def test_fpr_at_95_known_positive():
    s_k = np.arange(100.0)                       # keep 95 knowns -> θ* = 5
    assert fpr_at_tpr(s_k, np.array([4.5, 5.0, 6.0, 50.0])) == pytest.approx(0.75)
    assert fpr_at_tpr(np.array([10.0, 9.0]), np.array([1.0, 2.0])) == 0.0
    # 20 knowns: 95% = 19 must be accepted -> θ* = 2nd smallest = 1
    s_k = np.arange(20.0)
    assert fpr_at_tpr(s_k, np.array([0.5, 1.0, 1.5])) == pytest.approx(2 / 3)


def test_scores_and_accuracy():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 3.0 - np.log(3)]])
    s, pred = mls(logits)
    assert np.allclose(s, [2, 1, 3]) and list(pred) == [0, 1, 0]
    p, _ = msp(logits)
    assert p[2] == pytest.approx(0.75)
    assert accuracy(pred, np.array([0, 1, 1])) == pytest.approx(2 / 3)


def test_openset_metrics_row():
    lk = np.array([[5.0, 0.0], [0.0, 4.0], [3.0, 0.0]])
    lu = np.array([[1.0, 0.0], [0.0, 3.5]])
    row = openset_metrics(lk, np.array([0, 1, 1]), lu, ("mls",))
    assert row["accuracy"] == pytest.approx(2 / 3)
    assert row["auroc_mls"] == pytest.approx(auroc(np.array([5, 4, 3.0]), np.array([1, 3.5])))
    assert set(row) == {"accuracy", "auroc_mls", "oscr_mls", "fpr95_mls"}


# ----------------------------------------------------------------------------- non-finite scores

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("metric, call", [
    ("oscr", lambda k, u: oscr(k, np.ones(len(k), bool), u)),
    ("fpr_at_tpr", lambda k, u: fpr_at_tpr(k, u)),
    ("auroc", auroc),
    ("roc", roc),
])
def test_every_metric_rejects_non_finite_scores_naming_itself(metric, call):
    # regression: OSCR of [nan, 1.0] used to be 1.0, FPR@95 a plausible number
    for k, u, side in (([NAN, 1.0], [0.5, 0.2], "known"), ([0.9, 1.0], [0.5, INF], "unknown"),
                       ([-INF, 1.0], [0.5], "known")):
        with pytest.raises(ValueError, match=rf"^{metric}: 1 of \d+ {side} scores are NaN or infinite"):
            call(np.array(k), np.array(u))


def test_openset_and_ood_metrics_reject_non_finite_logits():
    from gradmix.ood import ood_metrics

    lk, lu = np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[1.0, NAN]])
    with pytest.raises(ValueError, match="openset_metrics: 1 unknown logits are NaN"):
        openset_metrics(lk, np.array([0, 1]), lu)
    with pytest.raises(ValueError, match=r"ood_metrics \(svhn logits\): 1 of 2 OOD scores"):
        ood_metrics(lk, {"rotated": lk, "svhn": lu}, ["rotated"], ["svhn"])
    with pytest.raises(ValueError, match=r"ood_metrics \(in-distribution logits\)"):
        ood_metrics(lk + INF, {"rotated": lk}, ["rotated"], [])


# ----------------------------------------------------------------------------- empty sets

@pytest.mark.parametrize("metric, call", [
    ("fpr_at_tpr", lambda k, u: fpr_at_tpr(k, u)),
    ("oscr", lambda k, u: oscr(k, np.ones(len(k), bool), u)),
    ("auroc", auroc),
    ("roc", roc),
])
def test_metrics_given_an_empty_side_name_it(metric, call):
    # regression: fpr_at_tpr on an empty known set raised a bare IndexError
    with pytest.raises(ValueError, match=rf"^{metric}: the known test set is empty"):
        call(np.array([]), np.array([0.3, 0.5]))
    with pytest.raises(ValueError, match=rf"^{metric}: the unknown test set is empty \(a closed-set run"):
        call(np.array([0.3, 0.5]), np.array([]))


def test_accuracy_of_an_empty_known_set_is_an_error():
    with pytest.raises(ValueError, match="accuracy: the known test set is empty"):
        accuracy(np.array([], int), np.array([], int))
    with pytest.raises(ValueError, match="openset_metrics: the known test set is empty"):
        openset_metrics(np.zeros((0, 3)), np.zeros(0, int), np.ones((2, 3)))


def test_closed_set_reports_accuracy_with_open_set_metrics_absent():
    lk = np.array([[5.0, 0.0], [0.0, 4.0], [3.0, 0.0]])
    row = openset_metrics(lk, np.array([0, 1, 1]), np.zeros((0, 2)), ("msp", "mls"))
    assert row["accuracy"] == pytest.approx(2 / 3)
    assert all(np.isnan(row[f"{m}_{s}"]) for m in ("auroc", "oscr", "fpr95") for s in ("msp", "mls"))
    # precomputed scores (the contrastive track's kNN) take the same path
    row = score_metrics("knn", np.array([0.9, 0.8]), np.array([0, 1]), np.array([0, 0]), np.array([]))
    assert row["accuracy"] == 0.5 and np.isnan(row["auroc_knn"]) and np.isnan(row["fpr95_knn"])
    with pytest.raises(ValueError, match="knn score: 1 of 2 known scores"):
        score_metrics("knn", np.array([NAN, 0.8]), np.array([0, 1]), np.array([0, 0]), np.array([0.1]))


def test_tables_mark_absent_metrics_and_never_print_nan():
    from gradmix.report import results_table

    summary = {"digits": {
        "erm": {"accuracy": {"mean": 0.9, "std": 0.01, "n": 2}},                        # closed set: left out
        "cl": {"accuracy": {"mean": 0.8, "std": 0.0, "n": 1},
               "auroc_mls": {"mean": NAN, "std": NAN, "n": 1}},                          # NaN: absent too
        "open": {"accuracy": {"mean": 0.7, "std": 0.0, "n": 1}, "auroc_mls": {"mean": 0.6, "std": 0.0, "n": 1}}}}
    md = results_table(summary, "digits", ["erm", "cl", "open"], ("accuracy", "auroc_mls"))
    lines = md.splitlines()
    assert lines[2] == "| erm | **90.0 ± 1.0** | – |"
    assert lines[3] == "| cl | 80.0 ± 0.0 | – |"
    assert lines[4] == "| open | 70.0 ± 0.0 | **60.0 ± 0.0** |"
    assert "nan" not in md.lower()
    only_open = results_table(summary, "digits", ["erm", "cl"], ("auroc_mls",), "tex")
    assert "nan" not in only_open.lower() and only_open.count("–") == 2
    with pytest.raises(KeyError, match="no results for method"):
        results_table(summary, "digits", ["erm", "gradmix"])


def arpl_oscr(s_known, s_unknown, correct, offset=True):
    """gary23ai/ARPL core/evaluation.py compute_oscr (as Vaze et al. and the GradMix code use it);
    ``offset=False`` counts the unknowns from the next sample too (gary23ai/ARPL#15)."""
    k_target = np.concatenate((correct.astype(float), np.zeros(len(s_unknown))))
    u_target = np.concatenate((np.zeros(len(s_known)), np.ones(len(s_unknown))))
    predict = np.concatenate((s_known, s_unknown))
    n = len(predict)
    ccr, fpr = [0.0] * (n + 2), [0.0] * (n + 2)
    idx = predict.argsort()
    sk, su = k_target[idx], u_target[idx]
    for k in range(n - 1):
        ccr[k] = sk[k + 1:].sum() / len(s_known)
        fpr[k] = su[k + (0 if offset else 1):].sum() / len(s_unknown)
    ccr[n + 1], fpr[n + 1] = 1.0, 1.0
    pts = sorted(zip(fpr, ccr), reverse=True)
    return sum((pts[j][0] - pts[j + 1][0]) * (pts[j][1] + pts[j + 1][1]) / 2 for j in range(n + 1))


def test_oscr_differs_from_arpl_by_their_counting_offset():
    """The docstring's claim: ours is about 13/|U| points above ARPL's value, and their counting
    offset, not the CCR = 1 end point, is why."""
    rng = np.random.default_rng(0)
    gaps, offset_fixed = [], []
    for _ in range(50):
        s_k, s_u = rng.normal(3, 1, 217), rng.normal(1.2, 1, 217)
        correct = rng.random(217) < 0.99
        ours = oscr(s_k, correct, s_u)
        gaps.append(100 * (ours - arpl_oscr(s_k, s_u, correct)))
        offset_fixed.append(100 * abs(ours - arpl_oscr(s_k, s_u, correct, offset=False)))
    assert 0.04 < np.mean(gaps) < 0.08 and min(gaps) > 0          # +0.06 points with 217 unknowns
    assert max(offset_fixed) < 0.02                                # the end point: under 0.02 point
