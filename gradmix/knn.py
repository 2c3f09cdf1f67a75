"""Class-wise top-k kNN similarity: the open-set score of the contrastive track.

Follows the GradMix authors' ``main_testing.py`` (``KNN_logits`` / ``KNN_classifier``, K = 3): for a
test feature f and each known class c,

    s_c(f) = sum of the k largest sim(f, g) over the training features g of class c,
    p_c(f) = s_c(f) / sum_c' s_c'(f)           (``normalize: true``, the authors' normalisation),

the known-ness score is max_c p_c(f) and the closed-set prediction argmax_c p_c(f). A class with
fewer than k training features contributes all of them (as ``np.argsort(...)[-K:]`` does).

**Which features** (``features``):

* ``head`` (default): the L2-normalised projection-head output. The authors' ``main_testing.py``
  scores these at its first commit (ac15c89, 2025-12-01) and again from 2026-08-04 to its current
  HEAD (864d605): ``KNN_classifier(features_testing_known_head, ...)``.
* ``backbone``: the encoder features (after ReLU and average pooling). An interim version of the
  script (commits 70ba781, 2026-03-30, to c4774d3, 2026-07-31) scored these.

**Which similarity** (``similarity``), so that every score stays in a known range:

* ``shifted`` (default): sim = (1 + cos)/2 in [0, 1]. The authors sum raw cosines; with head
  features cosines are often negative (classes spread over the sphere), a class's top-k sum can be
  ≤ 0, and their normalisation then divides by a sum near zero: a score can reach 1e11 or be
  negative. The affine map keeps the order of the similarities, so the top-k neighbours are the
  authors' and, when every class has ≥ k training features, s_c = (k + raw sum)/2 gives the
  prediction of the raw sums; each s_c is a sum of k values in [0, 1].
* ``cosine``: the authors' raw cosines, exact for features that are never negative (``backbone``:
  post-ReLU, so every cosine is ≥ 0). Refused with ``head`` features; a negative class sum at
  scoring time raises ValueError.

**Ranges.** With ``normalize: true`` every p_c lies in [0, 1] and the p_c of a test feature sum
to 1, so the known-ness score lies in [1/K, 1] (K known classes). A test feature whose class sums
are all 0 (possible only for a zero feature with ``cosine`` or a feature at cosine −1 to every
neighbour with ``shifted``) gets the uniform 1/K. With ``normalize: false`` the scores are the sums
s_c themselves, in [0, k] (``cosine`` refuses negative sums, so likewise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checks import ConfigError, check_choice, check_range

FEATURES = ("head", "backbone")
SIMILARITIES = ("shifted", "cosine")


@dataclass(frozen=True)
class KnnConfig:
    k: int = 3                      # top-k similarities summed per class (authors: --K 3)
    features: str = "head"          # head (authors' main_testing.py, first commit and HEAD) | backbone (interim)
    similarity: str = "shifted"     # shifted: (1 + cos)/2, bounded | cosine (authors; backbone features only)
    normalize: bool = True          # divide the class scores by their sum (authors)

    def __post_init__(self):
        check_range("contrastive.knn.k", self.k, 1)
        check_choice("contrastive.knn.features", self.features, FEATURES)
        check_choice("contrastive.knn.similarity", self.similarity, SIMILARITIES)
        if self.similarity == "cosine" and self.features == "head":
            raise ConfigError("contrastive.knn.similarity: 'cosine' with features 'head' can give negative class "
                              "sums and unbounded normalised scores; valid with head features: shifted")


def class_similarity(test: torch.Tensor, train: torch.Tensor, train_labels: torch.Tensor,
                     num_classes: int, k: int = 3, chunk: int = 1024, similarity: str = "shifted") -> torch.Tensor:
    """Per-class sums of the top-k similarities: test (N, D), train (M, D), labels (M,) -> (N, K) float32.

    ``similarity``: ``shifted`` sums (1 + cos)/2, each sum in [0, min(k, n_c)]; ``cosine`` sums the
    raw cosines, in [-min(k, n_c), min(k, n_c)]. Raises ValueError for a known class without
    training features.
    """
    check_choice("kNN similarity", similarity, SIMILARITIES)
    train_n = F.normalize(train.float(), dim=1)
    out = torch.zeros(len(test), num_classes, dtype=torch.float32, device=test.device)
    for c in range(num_classes):
        members = train_n[train_labels == c]
        if len(members) == 0:
            raise ValueError(f"kNN: known class {c} has no training features")
        kk = min(k, len(members))
        for i in range(0, len(test), chunk):
            sims = F.normalize(test[i:i + chunk].float(), dim=1) @ members.T
            top = sims.topk(kk, dim=1).values
            out[i:i + chunk, c] = ((1 + top) / 2 if similarity == "shifted" else top).sum(1)
    return out


def knn_scores(test: torch.Tensor, train: torch.Tensor, train_labels: torch.Tensor, num_classes: int,
               k: int = 3, normalize: bool = True,
               similarity: str = "shifted") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(known-ness score (N,), prediction (N,), class scores (N, K)); see the module docstring for the
    definitions and ranges. N may be 0 (empty outputs). Raises ValueError when ``cosine`` meets a
    negative class sum (features that can point away from each other: use ``shifted``)."""
    s = class_similarity(test, train, train_labels, num_classes, k, similarity=similarity)
    if similarity == "cosine" and bool((s < 0).any()):
        raise ValueError("kNN similarity 'cosine': negative class similarity sums (features with negative "
                         "cosines, e.g. projection-head outputs); normalised scores would be unbounded. "
                         "Use contrastive.knn.similarity: shifted")
    if normalize:
        total = s.sum(1, keepdim=True)
        s = torch.where(total > 0, s / total.clamp_min(torch.finfo(s.dtype).tiny),
                        torch.full_like(s, 1.0 / num_classes))
    score, pred = s.max(1)
    return score, pred, s
