"""Open-set metrics against hand-computed cases."""
import numpy as np
import pytest

from gradmix.metrics import accuracy, auroc, fpr_at_tpr, openset_metrics, oscr
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
