"""Open-set metrics. Known test samples are the positive class throughout.

Notation: K = known test set, U = unknown test set, s = known-ness score (higher = more known),
ŷ = closed-set prediction, y = label.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Closed-set top-1 accuracy on the known test set: mean(ŷ = y)."""
    return float(np.mean(np.asarray(pred) == np.asarray(labels)))


def _labels_scores(s_known, s_unknown):
    s = np.concatenate([s_known, s_unknown]).astype(np.float64)
    t = np.concatenate([np.ones(len(s_known)), np.zeros(len(s_unknown))])
    return t, s


def auroc(s_known: np.ndarray, s_unknown: np.ndarray) -> float:
    """P(s_k > s_u) + ½·P(s_k = s_u) over pairs (k ∈ K, u ∈ U): area under the ROC, known positive."""
    return float(roc_auc_score(*_labels_scores(s_known, s_unknown)))


def roc(s_known: np.ndarray, s_unknown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the ROC curve with known as positive (for plotting)."""
    fpr, tpr, _ = roc_curve(*_labels_scores(s_known, s_unknown))
    return fpr, tpr


def fpr_at_tpr(s_known: np.ndarray, s_unknown: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of unknowns accepted at the largest threshold θ that keeps ≥ ``tpr`` of knowns.

    θ* = max{θ : |{k : s_k ≥ θ}| / |K| ≥ tpr};  FPR = |{u : s_u ≥ θ*}| / |U|.
    This is the classic definition (Hendrycks & Gimpel 2017; Liang et al. 2018) with known as the
    positive class. OpenOOD and pytorch-ood report the mirror image (unknown positive).
    """
    k = np.sort(np.asarray(s_known, dtype=np.float64))[::-1]
    need = int(np.ceil(tpr * len(k) - 1e-12))        # knowns that must score ≥ θ*
    theta = k[max(need, 1) - 1]
    return float(np.mean(np.asarray(s_unknown, dtype=np.float64) >= theta))


def oscr(s_known: np.ndarray, correct: np.ndarray, s_unknown: np.ndarray) -> float:
    """Open-Set Classification Rate (Dhamija et al., NeurIPS 2018), from its definition.

    For every threshold θ: CCR(θ) = |{x ∈ K : ŷ = y, s ≥ θ}| / |K| and FPR(θ) = |{u ∈ U : s_u ≥ θ}| / |U|.
    OSCR is the area under CCR against FPR, θ swept over all scores, from (0, 0) to
    (1, closed-set accuracy), by the trapezoid rule. Tied scores move both rates in one step.
    Unlike the ARPL/Vaze implementation (sgvaze/osr_closed_set_all_you_need#28), the curve ends at
    CCR = accuracy, not 1, when FPR = 1.
    """
    s_known = np.asarray(s_known, dtype=np.float64)
    s_unknown = np.asarray(s_unknown, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    thresholds = np.unique(np.concatenate([s_known, s_unknown]))[::-1]          # descending
    # counts with score >= θ for each θ, by binary search in the sorted scores
    k_sorted = np.sort(s_known[correct])
    u_sorted = np.sort(s_unknown)
    ccr = (len(k_sorted) - np.searchsorted(k_sorted, thresholds, side="left")) / len(s_known)
    fpr = (len(u_sorted) - np.searchsorted(u_sorted, thresholds, side="left")) / len(s_unknown)
    ccr = np.concatenate([[0.0], ccr])
    fpr = np.concatenate([[0.0], fpr])
    return float(np.trapezoid(ccr, fpr))


def openset_metrics(logits_known: np.ndarray, labels_known: np.ndarray, logits_unknown: np.ndarray,
                    scores=("msp", "mls")) -> dict[str, float]:
    """Accuracy plus AUROC, OSCR and FPR@95%TPR for each score name, e.g. ``auroc_mls``."""
    from .scores import SCORES

    out: dict[str, float] = {}
    for name in scores:
        s_k, pred = SCORES[name](logits_known)
        out["accuracy"] = accuracy(pred, labels_known)
        if len(logits_unknown) == 0:           # closed set (data.known=all): no open-set metrics
            out.update({f"{m}_{name}": float("nan") for m in ("auroc", "oscr", "fpr95")})
            continue
        s_u, _ = SCORES[name](logits_unknown)
        out[f"auroc_{name}"] = auroc(s_k, s_u)
        out[f"oscr_{name}"] = oscr(s_k, pred == labels_known, s_u)
        out[f"fpr95_{name}"] = fpr_at_tpr(s_k, s_u, 0.95)
    return out
