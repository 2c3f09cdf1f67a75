"""Class-wise top-k cosine kNN: the open-set score of the contrastive track.

Follows the GradMix authors' ``main_testing.py`` (``KNN_logits`` / ``KNN_classifier``, K = 3;
shared/research/methods.md §1.12): for a test feature f and each known class c,

    s_c(f) = sum of the k largest cos(f, g) over the training features g of class c,
    p_c(f) = s_c(f) / sum_c' s_c'(f)           (normalised to sum to 1 over classes),

the known-ness score is max_c p_c(f) and the closed-set prediction argmax_c p_c(f). A class with
fewer than k training features contributes all of them (as ``np.argsort(...)[-K:]`` does).

Which features: the authors' latest ``main_testing.py`` scores the encoder ("backbone") features,
not the projection-head output (``features: backbone | head`` in params.yaml). Backbone features come
after ReLU and average pooling, so every cosine is >= 0 and the normalisation is a proper
distribution; head features can give negative sums, which the authors' normalisation does not guard.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checks import check_choice, check_range

FEATURES = ("backbone", "head")


@dataclass(frozen=True)
class KnnConfig:
    k: int = 3                      # top-k similarities summed per class (authors: --K 3)
    features: str = "backbone"      # backbone (encoder, authors' main_testing.py) | head (projection)
    normalize: bool = True          # divide the class scores by their sum (authors)

    def __post_init__(self):
        check_range("contrastive.knn.k", self.k, 1)
        check_choice("contrastive.knn.features", self.features, FEATURES)


def class_similarity(test: torch.Tensor, train: torch.Tensor, train_labels: torch.Tensor,
                     num_classes: int, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """Per-class sums of the top-k cosine similarities: test (N, D), train (M, D), labels (M,) -> (N, K)."""
    train_n = F.normalize(train.float(), dim=1)
    out = torch.zeros(len(test), num_classes, dtype=torch.float32, device=test.device)
    for c in range(num_classes):
        members = train_n[train_labels == c]
        if len(members) == 0:
            raise ValueError(f"kNN: known class {c} has no training features")
        kk = min(k, len(members))
        for i in range(0, len(test), chunk):
            sims = F.normalize(test[i:i + chunk].float(), dim=1) @ members.T
            out[i:i + chunk, c] = sims.topk(kk, dim=1).values.sum(1)
    return out


def knn_scores(test: torch.Tensor, train: torch.Tensor, train_labels: torch.Tensor, num_classes: int,
               k: int = 3, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(known-ness score (N,), prediction (N,), class scores (N, K)); see the module docstring."""
    s = class_similarity(test, train, train_labels, num_classes, k)
    if normalize:
        s = s / s.sum(1, keepdim=True).clamp_min(1e-12)
    score, pred = s.max(1)
    return score, pred, s
