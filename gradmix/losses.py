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
