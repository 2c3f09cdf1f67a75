"""The embedded open-set benchmark and the on-device batch pipeline."""
import pytest
import torch

from gradmix import config
from gradmix.data import augment, batches, load_openset
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
