"""The embedded open-set benchmark and the on-device batch pipeline."""
import numpy as np
import pytest
import torch

from gradmix import config
from gradmix.data import augment, batches, load_openset, stratified_subset
from gradmix.splits import OSR_SPLITS, known_classes


def test_split_lists_are_the_standard_protocol():
    assert OSR_SPLITS["mnist"][0] == [2, 4, 5, 9, 8, 3]
    assert OSR_SPLITS["cifar-10-10"][0] == [0, 6, 4, 9, 1, 7]
    assert OSR_SPLITS["tinyimagenet"][4][-1] == 169
    assert all(len(s) == 6 for s in OSR_SPLITS["svhn"])
    assert all(len(s) == 50 and len(set(s)) == 50 for s in OSR_SPLITS["cifar-10-100-50"])
    with pytest.raises(ValueError, match="split 5 out of range.*0..4"):
        known_classes("mnist", 5)


@pytest.mark.parametrize("split", range(5))
def test_digits_open_set_split(split):
    cfg = config.DataConfig(image_size=12)
    d = load_openset(cfg, split)
    assert d.known == OSR_SPLITS["mnist"][split]
    unknown = set(range(10)) - set(d.known)
    assert set(d.y_unknown.tolist()) == unknown
    assert set(d.y_train.tolist()) == set(range(6)) and set(d.y_known.tolist()) == set(range(6))
    assert len(d.x_known) == len(d.x_unknown)                   # balanced open-set test set
    assert d.x_train.shape[1:] == (1, 12, 12)
    # normalised with the training set's statistics
    assert d.x_train.mean().abs() < 1e-4 and (d.x_train.std() - 1).abs() < 1e-2


def test_split_is_deterministic_and_seeded():
    a = load_openset(config.DataConfig(), 0)
    b = load_openset(config.DataConfig(), 0)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_unknown, b.y_unknown)
    c = load_openset(config.DataConfig(split_seed=1), 0)
    assert not torch.equal(a.y_train, c.y_train)


def test_max_train_caps_the_training_set():
    d = load_openset(config.DataConfig(max_train=50), 1)
    assert len(d.x_train) == 50
    full = torch.bincount(load_openset(config.DataConfig(), 1).y_train).double()
    share = 50 * full / full.sum()                                      # stratified: ⌊share⌋ or ⌊share⌋ + 1
    got = torch.bincount(d.y_train).double()
    assert ((got - share.floor() >= 0) & (got - share.floor() <= 1)).all()


def test_max_train_keeps_every_class_seeded():
    # regression: a small cap drew without stratification and dropped whole classes
    for cap in (6, 7, 13):
        d = load_openset(config.DataConfig(max_train=cap), 0)
        counts = torch.bincount(d.y_train, minlength=6)
        assert len(d.x_train) == cap and (counts >= 1).all() and counts.max() - counts.min() <= 1
    a, b = (load_openset(config.DataConfig(max_train=13), 0) for _ in range(2))
    assert torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, load_openset(config.DataConfig(max_train=13, split_seed=1), 0).x_train)
    with pytest.raises(config.ConfigError, match="data.max_train: 5 training images cannot hold the 6 known"):
        load_openset(config.DataConfig(max_train=5), 0)


def test_stratified_subset_shares_match_sklearn_and_keep_rare_classes():
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [500, 300, 150, 50])
    for cap in (20, 101, 400):
        pick = stratified_subset(labels, cap, np.random.default_rng(1))
        assert len(pick) == cap and len(set(pick)) == cap and np.all(np.diff(pick) > 0)
        ours = np.bincount(labels[pick], minlength=4)
        ref, _ = train_test_split(labels, train_size=cap, stratify=labels, random_state=0)
        assert np.abs(ours - np.bincount(ref, minlength=4)).max() <= 1       # the library's class shares
    # a rare class: scikit-learn drops it (1000·3/1002 rounds to 0), ours keeps one of each
    labels = np.repeat(np.arange(3), [500, 500, 2])
    ref, _ = train_test_split(labels, train_size=3, stratify=labels, random_state=0)
    assert 2 not in ref
    assert np.bincount(labels[stratified_subset(labels, 3, rng)]).tolist() == [1, 1, 1]


def test_batches_cover_each_index_once():
    g = torch.Generator().manual_seed(0)
    idx = torch.cat(list(batches(100, 32, g)))
    assert len(idx) == 96 and len(set(idx.tolist())) == 96       # last partial batch dropped
    assert len(torch.cat(list(batches(10, 32, g)))) == 10        # a single small batch is kept


def test_augment_crops_are_shifts_and_seeded():
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    a = augment(x, torch.Generator().manual_seed(0), crop_padding=1)
    b = augment(x, torch.Generator().manual_seed(0), crop_padding=1)
    assert torch.equal(a, b)
    for i in range(2):           # every output is x[i] shifted by (dy, dx) in [-1, 1]², zero-filled
        ok = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = torch.zeros(1, 6, 6)
                src = x[i][:, max(0, dy):6 + min(0, dy), max(0, dx):6 + min(0, dx)]
                shifted[:, max(0, -dy):6 - max(0, dy), max(0, -dx):6 - max(0, dx)] = src
                ok |= torch.equal(a[i], shifted)
        assert ok
    flipped = augment(x, torch.Generator().manual_seed(3), hflip=True)
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(2)) for f, o in zip(flipped, x))
