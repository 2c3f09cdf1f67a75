"""Losses of the cross-entropy track."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample cross-entropy (N,) against soft targets (N, K), with optional label smoothing.

    Smoothing mixes the target with the uniform distribution: (1 - ε)·t + ε/K, as
    ``F.cross_entropy(label_smoothing=ε)`` does for hard labels.
    """
    if label_smoothing:
        target = (1.0 - label_smoothing) * target + label_smoothing / target.shape[1]
    return -(target * F.log_softmax(logits, dim=1)).sum(1)


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of a, b (N, K) -> (N,): the cosine of the mean-centred rows.

    ``eps`` in the denominator, as in the DIST code, makes a constant row correlate 0, not NaN.
    """
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(z_s: torch.Tensor, z_t: torch.Tensor, beta: float = 1.0, gamma: float = 1.0,
              tau: float = 1.0) -> torch.Tensor:
    """DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher"): a scalar.

    With p = softmax(z/τ) for student logits z_s and teacher logits z_t (N, K):
    inter = 1 - mean_i ρ(p_s[i, :], p_t[i, :]) (each sample's class distribution),
    intra = 1 - mean_k ρ(p_s[:, k], p_t[:, k]) (each class's distribution over the batch),
    DIST = τ²·(β·inter + γ·intra), ρ the Pearson correlation (:func:`pearson`). As in the official
    DIST code and the Asymmetric-Distillation code's ``my_loss_function.DIST``.
    """
    p_s = F.softmax(z_s / tau, dim=1)
    p_t = F.softmax(z_t / tau, dim=1)
    inter = 1.0 - pearson(p_s, p_t).mean()
    intra = 1.0 - pearson(p_s.t(), p_t.t()).mean()
    return tau ** 2 * (beta * inter + gamma * intra)
