"""Class-wise top-k cosine kNN equals a brute-force reference; the linear probe learns what is linear."""
import math

import numpy as np
import pytest
import torch

from gradmix.knn import KnnConfig, class_similarity, knn_scores
from gradmix.probe import ProbeConfig, linear_probe
from gradmix.config import ConfigError


def brute_force(test, train, labels, num_classes, k, normalize=True):
    """The authors' KNN_logits written as loops: per test feature, per class, sorted cosines."""
    scores = np.zeros((len(test), num_classes))
    for i, f in enumerate(test):
        for c in range(num_classes):
            sims = sorted(float(np.dot(f, g) / np.linalg.norm(f) / np.linalg.norm(g))
                          for g, l in zip(train, labels) if l == c)
            scores[i, c] = sum(sims[-k:])
    if normalize:
        scores = scores / scores.sum(1, keepdims=True)
    return scores.max(1), scores.argmax(1), scores


@pytest.mark.parametrize("k", [1, 3, 50])
def test_knn_equals_brute_force(k):
    rng = np.random.default_rng(0)
    train = rng.random((40, 5))                 # non-negative, like post-ReLU backbone features
    labels = rng.integers(0, 4, 40)
    test = rng.random((17, 5))
    score, pred, cs = knn_scores(torch.tensor(test), torch.tensor(train), torch.tensor(labels), 4, k)
    ref_score, ref_pred, ref_cs = brute_force(test, train, labels, 4, k)
    assert np.allclose(cs.numpy(), ref_cs, atol=1e-6)
    assert np.allclose(score.numpy(), ref_score, atol=1e-6)
    assert np.array_equal(pred.numpy(), ref_pred)
    assert np.allclose(cs.sum(1).numpy(), 1.0, atol=1e-6)


def test_knn_hand_computed():
    # class 0: e1 and (1, 1)/√2; class 1: e2. Test feature e1, k = 2.
    train = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    raw = class_similarity(torch.tensor([[1.0, 0.0]]), train, labels, 2, k=2)
    s0, s1 = 1 + 1 / math.sqrt(2), 0.0          # class 1 has one feature: all of it counts
    assert torch.allclose(raw, torch.tensor([[s0, s1]]))
    score, pred, _ = knn_scores(torch.tensor([[1.0, 1.0]]), train, labels, 2, k=2)
    t0, t1 = 1 / math.sqrt(2) + 1, 1 / math.sqrt(2)
    assert pred.item() == 0 and score.item() == pytest.approx(t0 / (t0 + t1))


def test_knn_config_validates():
    with pytest.raises(ConfigError, match="backbone"):
        KnnConfig(features="logits")
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
