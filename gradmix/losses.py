"""Losses of the cross-entropy track.

Every loss runs in float32 with autocast off (:func:`full_precision`), whatever the dtype of the
logits (``train.precision`` bf16 / fp16 makes them half precision): log-softmax, Pearson correlations
and their sums lose too much in 8 or 11 bits of mantissa.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def full_precision(t: torch.Tensor):
    """A context with autocast off on ``t``'s device (losses: compute in float32 inside it)."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample cross-entropy (N,), float32, against soft targets (N, K), with optional label smoothing.

    Smoothing mixes the target with the uniform distribution: (1 - ε)·t + ε/K, as
    ``F.cross_entropy(label_smoothing=ε)`` does for hard labels.
    """
    if label_smoothing:
        target = (1.0 - label_smoothing) * target + label_smoothing / target.shape[1]
    with full_precision(logits):
        return -(target * F.log_softmax(logits.float(), dim=1)).sum(1)


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of a, b (N, K) -> (N,): the cosine of the mean-centred rows.

    ``eps`` in the denominator, as in the DIST code, makes a constant row correlate 0, not NaN.
    """
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(z_s: torch.Tensor, z_t: torch.Tensor, beta: float = 1.0, gamma: float = 1.0,
              tau: float = 1.0, select: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher"): a scalar.

    With p = softmax(z/τ) for student logits z_s and teacher logits z_t (N, K):
    inter = 1 - mean_i ρ(p_s[i, :], p_t[i, :]) (each sample's class distribution),
    intra = 1 - mean_k ρ(p_s[:, k], p_t[:, k]) (each class's distribution over the batch),
    DIST = τ²·(β·inter + γ·intra), ρ the Pearson correlation (:func:`pearson`). As in the official
    DIST code and the Asymmetric-Distillation code's ``my_loss_function.DIST``.

    ``select`` (N,) bool: DIST of the selected samples only, i.e. ``dist_loss(z_s[select],
    z_t[select])``, computed with masks instead of indexing (boolean indexing reads the number of
    selected samples on the host: a synchronisation on a GPU); 0 when nothing is selected.
    """
    with full_precision(z_s):
        p_s = F.softmax(z_s.float() / tau, dim=1)
        p_t = F.softmax(z_t.float() / tau, dim=1)
        if select is None:
            inter = 1.0 - pearson(p_s, p_t, eps).mean()
            intra = 1.0 - pearson(p_s.t(), p_t.t(), eps).mean()
            return tau ** 2 * (beta * inter + gamma * intra)
        m = select.float()
        count = m.sum()
        inter = 1.0 - (m * pearson(p_s, p_t, eps)).sum() / count.clamp_min(1)
        mu_s = (m[:, None] * p_s).sum(0) / count.clamp_min(1)        # per-class means over the selection
        mu_t = (m[:, None] * p_t).sum(0) / count.clamp_min(1)
        a, b = (p_s - mu_s) * m[:, None], (p_t - mu_t) * m[:, None]
        intra = 1.0 - ((a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0) + eps)).mean()
        return (count > 0).float() * tau ** 2 * (beta * inter + gamma * intra)
