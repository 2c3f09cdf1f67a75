"""Open-set metrics. Known test samples are the positive class throughout.

Notation: K = known test set, U = unknown test set, s = known-ness score (higher = more known),
ŷ = closed-set prediction, y = label.

Every metric checks its input first and raises ValueError naming the metric when a score is NaN or
infinite (a diverged run would otherwise get a plausible number, e.g. an OSCR of 1.0 for
``[nan, 1.0]``) or when a side it needs is empty (no known or no unknown test images). A closed-set
run (``data.known: all``) has no unknown side: :func:`openset_metrics` then reports the open-set
metrics as NaN (absent), never as a number.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def check_scores(metric: str, side: str, values) -> np.ndarray:
    """``values`` as a 1-D float64 array; ValueError naming ``metric`` and ``side`` if empty or not finite."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size == 0:
        hint = " (a closed-set run, data.known: all, has none)" if side == "unknown" else ""
        raise ValueError(f"{metric}: the {side} test set is empty{hint}; the metric needs at least one "
                         f"{side} test sample")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{metric}: {int(bad.sum())} of {a.size} {side} scores are NaN or infinite "
                         f"(a diverged run or broken scores); the metric needs finite scores")
    return a


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Closed-set top-1 accuracy on the known test set: mean(ŷ = y). Raises ValueError for an empty
    known test set or predictions and labels of different lengths."""
    pred, labels = np.asarray(pred).reshape(-1), np.asarray(labels).reshape(-1)
    if pred.size == 0:
        raise ValueError("accuracy: the known test set is empty; the metric needs at least one known test sample")
    if pred.shape != labels.shape:
        raise ValueError(f"accuracy: {pred.size} predictions for {labels.size} labels")
    return float(np.mean(pred == labels))


def _labels_scores(metric: str, s_known, s_unknown):
    s_known, s_unknown = check_scores(metric, "known", s_known), check_scores(metric, "unknown", s_unknown)
    s = np.concatenate([s_known, s_unknown])
    t = np.concatenate([np.ones(len(s_known)), np.zeros(len(s_unknown))])
    return t, s


def auroc(s_known: np.ndarray, s_unknown: np.ndarray) -> float:
    """P(s_k > s_u) + ½·P(s_k = s_u) over pairs (k ∈ K, u ∈ U): area under the ROC, known positive."""
    return float(roc_auc_score(*_labels_scores("auroc", s_known, s_unknown)))


def roc(s_known: np.ndarray, s_unknown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the ROC curve with known as positive (for plotting)."""
    fpr, tpr, _ = roc_curve(*_labels_scores("roc", s_known, s_unknown))
    return fpr, tpr


def fpr_at_tpr(s_known: np.ndarray, s_unknown: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of unknowns accepted at the largest threshold θ that keeps ≥ ``tpr`` of knowns.

    θ* = max{θ : |{k : s_k ≥ θ}| / |K| ≥ tpr};  FPR = |{u : s_u ≥ θ*}| / |U|.
    This is the classic definition (Hendrycks & Gimpel 2017; Liang et al. 2018) with known as the
    positive class. OpenOOD and pytorch-ood report the mirror image (unknown positive).
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"fpr_at_tpr: tpr={tpr}; valid: 0 < tpr <= 1")
    k = np.sort(check_scores("fpr_at_tpr", "known", s_known))[::-1]
    s_unknown = check_scores("fpr_at_tpr", "unknown", s_unknown)
    need = int(np.ceil(tpr * len(k) - 1e-12))        # knowns that must score ≥ θ*
    theta = k[max(need, 1) - 1]
    return float(np.mean(s_unknown >= theta))


def oscr(s_known: np.ndarray, correct: np.ndarray, s_unknown: np.ndarray) -> float:
    """Open-Set Classification Rate (Dhamija et al., NeurIPS 2018), from its definition.

    For every threshold θ: CCR(θ) = |{x ∈ K : ŷ = y, s ≥ θ}| / |K| and FPR(θ) = |{u ∈ U : s_u ≥ θ}| / |U|.
    OSCR is the area under CCR against FPR, θ swept over all scores, from (0, 0) to
    (1, closed-set accuracy), by the trapezoid rule. Tied scores move both rates in one step.

    Against the ARPL / Vaze et al. implementation (``compute_oscr`` of gary23ai/ARPL, copied by
    sgvaze/osr_closed_set_all_you_need and the GradMix code) this is higher by about 13/|U| points
    (+0.13 with 100 unknown test images, +0.06 with 217, +0.01 with 1000; mean over 200 synthetic
    score sets). The cause is their counting offset: at each cut-off the correct knowns are counted
    from the next sample on (``s_k_target[k+1:]``) but the unknowns from the current one
    (``s_u_target[k:]``), gary23ai/ARPL#15; fixing that alone removes the gap. Their other
    difference, ending the curve at CCR = 1 instead of the accuracy when FPR = 1
    (sgvaze/osr_closed_set_all_you_need#28), moves the value by under 0.01 point.
    """
    s_known = check_scores("oscr", "known", s_known)
    s_unknown = check_scores("oscr", "unknown", s_unknown)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if correct.shape != s_known.shape:
        raise ValueError(f"oscr: {correct.size} correctness flags for {s_known.size} known scores")
    thresholds = np.unique(np.concatenate([s_known, s_unknown]))[::-1]          # descending
    # counts with score >= θ for each θ, by binary search in the sorted scores
    k_sorted = np.sort(s_known[correct])
    u_sorted = np.sort(s_unknown)
    ccr = (len(k_sorted) - np.searchsorted(k_sorted, thresholds, side="left")) / len(s_known)
    fpr = (len(u_sorted) - np.searchsorted(u_sorted, thresholds, side="left")) / len(s_unknown)
    ccr = np.concatenate([[0.0], ccr])
    fpr = np.concatenate([[0.0], fpr])
    return float(np.trapezoid(ccr, fpr))


OPENSET = ("auroc", "oscr", "fpr95")     # the open-set metrics reported per score, e.g. ``auroc_mls``


def score_metrics(name: str, s_known: np.ndarray, pred: np.ndarray, labels: np.ndarray,
                  s_unknown: np.ndarray) -> dict[str, float]:
    """``accuracy`` and ``auroc_<name>``, ``oscr_<name>``, ``fpr95_<name>`` of one known-ness score.

    s_known, pred, labels: (N,) for the known test set; s_unknown: (M,). M = 0 (a closed-set run,
    ``data.known: all``) gives NaN for the three open-set metrics, which tables show as absent;
    N = 0 or non-finite scores raise ValueError naming the metric and the side.
    """
    out = {"accuracy": accuracy(pred, labels)}
    s_known = check_scores(f"{name} score", "known", s_known)
    if len(np.asarray(s_unknown).reshape(-1)) == 0:
        return {**out, **{f"{m}_{name}": float("nan") for m in OPENSET}}
    out[f"auroc_{name}"] = auroc(s_known, s_unknown)
    out[f"oscr_{name}"] = oscr(s_known, np.asarray(pred) == np.asarray(labels), s_unknown)
    out[f"fpr95_{name}"] = fpr_at_tpr(s_known, s_unknown, 0.95)
    return out


def openset_metrics(logits_known: np.ndarray, labels_known: np.ndarray, logits_unknown: np.ndarray,
                    scores=("msp", "mls")) -> dict[str, float]:
    """Accuracy plus AUROC, OSCR and FPR@95%TPR for each score name, e.g. ``auroc_mls``
    (:func:`score_metrics` of each score of :mod:`gradmix.scores`).

    logits_known (N, K) with labels (N,), logits_unknown (M, K). M = 0 (a closed-set run) gives NaN
    for every open-set metric; N = 0 and non-finite logits raise ValueError naming the side.
    """
    from .scores import SCORES

    for side, z in (("known", logits_known), ("unknown", logits_unknown)):
        z = np.asarray(z, dtype=np.float64)
        if side == "known" and z.size == 0:
            raise ValueError("openset_metrics: the known test set is empty; accuracy and the open-set "
                             "metrics need at least one known test sample")
        if not np.isfinite(z).all():
            raise ValueError(f"openset_metrics: {int((~np.isfinite(z)).sum())} {side} logits are NaN or "
                             f"infinite (a diverged run?); the metrics need finite logits")
    out: dict[str, float] = {}
    for name in scores:
        s_k, pred = SCORES[name](logits_known)
        s_u = SCORES[name](logits_unknown)[0] if len(logits_unknown) else np.zeros(0)
        out.update(score_metrics(name, s_k, pred, labels_known, s_u))
    return out
