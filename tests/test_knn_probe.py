"""Class-wise top-k cosine kNN equals a brute-force reference; the linear probe learns what is linear."""
import math

import numpy as np
import pytest
import torch

from gradmix.knn import KnnConfig, class_similarity, knn_scores
from gradmix.probe import ProbeConfig, linear_probe
from gradmix.config import ConfigError


def brute_force(test, train, labels, num_classes, k, normalize=True, similarity="shifted"):
    """The authors' KNN_logits written as loops (per test feature, per class, sorted similarities),
    with cos mapped to (1 + cos)/2 for ``shifted``."""
    scores = np.zeros((len(test), num_classes))
    for i, f in enumerate(test):
        for c in range(num_classes):
            sims = sorted(float(np.dot(f, g) / np.linalg.norm(f) / np.linalg.norm(g))
                          for g, l in zip(train, labels) if l == c)
            top = sims[-k:]
            scores[i, c] = sum((1 + v) / 2 for v in top) if similarity == "shifted" else sum(top)
    if normalize:
        scores = scores / scores.sum(1, keepdims=True)
    return scores.max(1), scores.argmax(1), scores


@pytest.mark.parametrize("similarity", ["shifted", "cosine"])
@pytest.mark.parametrize("k", [1, 3, 50])
def test_knn_equals_brute_force(k, similarity):
    rng = np.random.default_rng(0)
    train = rng.random((40, 5))                 # non-negative, like post-ReLU backbone features
    labels = rng.integers(0, 4, 40)
    test = rng.random((17, 5))
    score, pred, cs = knn_scores(torch.tensor(test), torch.tensor(train), torch.tensor(labels), 4, k,
                                 similarity=similarity)
    ref_score, ref_pred, ref_cs = brute_force(test, train, labels, 4, k, similarity=similarity)
    assert np.allclose(cs.numpy(), ref_cs, atol=1e-6)
    assert np.allclose(score.numpy(), ref_score, atol=1e-6)
    assert np.array_equal(pred.numpy(), ref_pred)
    assert np.allclose(cs.sum(1).numpy(), 1.0, atol=1e-6)


def test_knn_hand_computed():
    # class 0: e1 and (1, 1)/√2; class 1: e2. Test feature e1, k = 2.
    train = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    raw = class_similarity(torch.tensor([[1.0, 0.0]]), train, labels, 2, k=2, similarity="cosine")
    s0, s1 = 1 + 1 / math.sqrt(2), 0.0          # class 1 has one feature: all of it counts
    assert torch.allclose(raw, torch.tensor([[s0, s1]]))
    shifted = class_similarity(torch.tensor([[1.0, 0.0]]), train, labels, 2, k=2)
    assert torch.allclose(shifted, torch.tensor([[1 + (1 + 1 / math.sqrt(2)) / 2, 0.5]]))
    score, pred, _ = knn_scores(torch.tensor([[1.0, 1.0]]), train, labels, 2, k=2, similarity="cosine")
    t0, t1 = 1 / math.sqrt(2) + 1, 1 / math.sqrt(2)
    assert pred.item() == 0 and score.item() == pytest.approx(t0 / (t0 + t1))


def test_knn_scores_stay_bounded_with_negative_similarities():
    # test feature e1; class 0: e1 and (e1 + e2)/√2 (cos 1, 1/√2); class 1: -e1 and e2 (cos -1, 0); k = 2
    train = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[1.0, 0.0]])
    s0 = 1.0 + (1 + 1 / math.sqrt(2)) / 2          # (1 + 1)/2 + (1 + 1/√2)/2
    s1 = 0.0 + 0.5                                  # (1 - 1)/2 + (1 + 0)/2
    score, pred, cs = knn_scores(test, train, labels, 2, k=2)
    assert torch.allclose(cs, torch.tensor([[s0 / (s0 + s1), s1 / (s0 + s1)]]))
    assert pred.item() == 0 and score.item() == pytest.approx(s0 / (s0 + s1))        # 0.7876
    # the raw cosines (authors' formula) give 1.707 / 0.707 = 2.41 here: outside [0, 1]
    with pytest.raises(ValueError, match="shifted"):
        knn_scores(test, train, labels, 2, k=2, similarity="cosine")
    # the old blow-up: raw sums 1 and -(1 - 5e-7) nearly cancel, 1/5e-7 = 2e6 (1e11 on real data)
    near = torch.tensor([[1.0, 0.0], [-1.0, 1e-3]])
    raw = class_similarity(test, near, torch.tensor([0, 1]), 2, k=1, similarity="cosine")
    assert raw[0, 0] / raw.sum() > 1e5
    score, _, cs = knn_scores(test, near, torch.tensor([0, 1]), 2, k=1)
    assert torch.allclose(cs, torch.tensor([[1.0, 2.5e-7]]), atol=1e-6) and score.item() <= 1.0
    # a feature at cosine -1 to every neighbour: all sums 0 -> uniform 1/K, not 0/0
    score, _, cs = knn_scores(-test, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]), 2, k=1)
    assert torch.equal(cs, torch.full((1, 2), 0.5)) and score.item() == 0.5


def test_knn_scores_in_range_on_head_like_features():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(300, 8, generator=g)           # projection-head-like: cosines of both signs
    labels = torch.randint(0, 6, (300,), generator=g)
    test = torch.randn(500, 8, generator=g)
    for k in (1, 3, 20):
        score, pred, cs = knn_scores(test, train, labels, 6, k)
        assert (cs >= 0).all() and (cs <= 1).all() and torch.allclose(cs.sum(1), torch.ones(500))
        assert (score >= 1 / 6 - 1e-6).all() and (score <= 1).all()
        raw, _, _ = knn_scores(test, train, labels, 6, k, normalize=False)
        assert (raw >= 0).all() and (raw <= k).all()
    empty = knn_scores(test[:0], train, labels, 6)      # the unknown test set of a closed-set run
    assert empty[0].shape == (0,) and empty[2].shape == (0, 6)


def test_knn_config_validates():
    assert KnnConfig().features == "head" and KnnConfig().similarity == "shifted"
    with pytest.raises(ConfigError, match="backbone"):
        KnnConfig(features="logits")
    with pytest.raises(ConfigError, match="shifted"):
        KnnConfig(similarity="cosine")                  # with the default head features
    assert KnnConfig(features="backbone", similarity="cosine").similarity == "cosine"
    with pytest.raises(ConfigError, match="contrastive.knn.k"):
        KnnConfig(k=0)


def test_linear_probe_separable_and_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3) * 4
    y = torch.arange(3).repeat(40)
    x = centres[y] + 0.3 * torch.randn(len(y), 3, generator=g)
    cfg = ProbeConfig(epochs=30, batch_size=16, lr=0.05, milestones=(20,))
    acc, layer = linear_probe(x[:90], y[:90], x[90:], y[90:], 3, cfg, seed=1)
    acc2, layer2 = linear_probe(x[:90], y[:90], x[90:], y[90:], 3, cfg, seed=1)
    assert acc == 1.0 and acc2 == acc
    assert torch.equal(layer.weight, layer2.weight)


def test_probe_config_validates():
    with pytest.raises(ConfigError, match="milestones"):
        ProbeConfig(milestones=(10, 5))
