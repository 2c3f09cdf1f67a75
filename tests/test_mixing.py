"""Invariants of the mixers: soft labels, λ = mixed area, boxes on the peak, purity, determinism."""
import dataclasses

import pytest
import torch

from gradmix.mixing import CutMixOptions, GradMixOptions, MixupOptions, cutmix, gradmix, mixup
from gradmix.mixing.boxes import box_bounds, box_mask, mask_area, mask_bounds, resized_into_boxes
from gradmix.models import SmallCNN

K = 5


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 16, 16, generator=g)
    y = torch.randint(0, K, (12,), generator=g)
    return x, y


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SmallCNN(3, K, width=4)


def all_mixers(model):
    base = GradMixOptions(stages=("stage2", "stage3"))
    yield "mixup", lambda x, y, g: mixup(x, y, num_classes=K, generator=g, options=MixupOptions())
    yield "cutmix", lambda x, y, g: cutmix(x, y, num_classes=K, generator=g, options=CutMixOptions(prob=1.0))
    yield "cutmix_ps", lambda x, y, g: cutmix(x, y, num_classes=K, generator=g,
                                              options=CutMixOptions(prob=1.0, per_sample=True))
    for fill in ("noise", "partner", "colocated"):
        for centre in ("peak", "random"):
            o = dataclasses.replace(base, fill=fill, centre=centre)
            yield f"gradmix_{fill}_{centre}", (lambda o: lambda x, y, g: gradmix(
                x, y, num_classes=K, generator=g, options=o, model=model))(o)


def test_targets_are_distributions_with_at_most_two_labels(batch, model):
    x, y = batch
    for name, mix in all_mixers(model):
        m = mix(x, y, torch.Generator().manual_seed(0))
        assert torch.allclose(m.target.sum(1), torch.ones(len(x))), name
        assert (m.target >= 0).all(), name
        assert ((m.target > 0).sum(1) <= 2).all(), name
        # own label keeps weight λ (more when the partner has the same label)
        assert (m.target[torch.arange(len(y)), y] >= m.lam - 1e-6).all(), name


def test_lambda_equals_unmixed_area(batch, model):
    x, y = batch
    for name, mix in all_mixers(model):
        if name == "mixup":
            continue
        m = mix(x, y, torch.Generator().manual_seed(0))
        changed = (m.x != x).any(1, keepdim=True)
        assert not (changed & ~m.mask).any(), f"{name}: pixels outside the box changed"
        assert torch.allclose(m.lam, 1 - mask_area(m.mask)), name
        assert (m.mask.flatten(1).any(1)).all(), f"{name}: empty box"


def test_partner_labels_weighted_by_exact_area(batch, model):
    x, y = batch
    o = GradMixOptions(stages=("stage3",), fill="colocated")
    m = gradmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(3), options=o, model=model)
    # identify each sample's partner from the pasted pixels, then check the two-hot weights
    for i in range(len(x)):
        inside = m.mask[i, 0]
        j = next(j for j in range(len(x)) if torch.equal(m.x[i][:, inside], x[j][:, inside]))
        expect = torch.zeros(K)
        expect[y[i]] += m.lam[i]
        expect[y[j]] += 1 - m.lam[i]
        assert torch.allclose(m.target[i], expect, atol=1e-6)


def test_noise_fill_keeps_label_and_weights_by_unmasked_area(batch, model):
    x, y = batch
    m = gradmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(0),
                options=GradMixOptions(stages=("stage3",)), model=model)
    assert torch.equal(m.target.argmax(1), y) and torch.equal(m.target.max(1).values, torch.ones(len(y)))
    assert torch.allclose(m.weight, m.lam)
    assert ((m.lam >= 0.5 - 1e-6) & (m.lam < 1)).all(), "box covers at most 50% (λ >= 0.5)"
    one = gradmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(0),
                  options=GradMixOptions(stages=("stage3",), weight="one"), model=model)
    assert torch.equal(one.weight, torch.ones(len(y)))


def test_box_is_centred_on_the_attribution_peak(batch):
    x, y = batch
    n = len(x)
    maps = torch.rand(n, 16, 16) * 0.5
    peaks = torch.tensor([[8, 8], [5, 9], [10, 6], [7, 7]] * 3)
    maps[torch.arange(n), peaks[:, 0], peaks[:, 1]] = 1.0
    o = GradMixOptions(stages=("stage3",), lam_low=0.75, lam_span=0.0)   # side int(16·0.5) = 8
    m = gradmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=o, maps=maps)
    y1, y2, x1, x2 = mask_bounds(m.mask)
    assert torch.equal(y1, peaks[:, 0] - 4) and torch.equal(y2, peaks[:, 0] + 4)
    assert torch.equal(x1, peaks[:, 1] - 4) and torch.equal(x2, peaks[:, 1] + 4)
    assert torch.allclose(m.lam, torch.full((n,), 1 - 64 / 256))


def test_box_is_clipped_at_the_border_and_lambda_follows():
    cy, cx = torch.tensor([0, 15]), torch.tensor([0, 8])
    side = torch.tensor([8, 8])
    mask = box_mask(box_bounds(cy, cx, side, side, 16, 16), 16, 16)
    # rows [-4, 4) -> [0, 4), cols [0, 4): 16 px; rows [11, 19) -> [11, 16), cols [4, 12): 40 px
    assert torch.allclose(mask_area(mask), torch.tensor([16 / 256, 40 / 256]))


def test_cutmix_is_one_box_per_batch_and_prob_zero_is_identity(batch):
    x, y = batch
    m = cutmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=CutMixOptions(prob=1.0))
    assert (m.mask == m.mask[:1]).all()
    off = cutmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=CutMixOptions(prob=0.0))
    assert torch.equal(off.x, x) and torch.equal(off.lam, torch.ones(len(x)))


def test_mixup_is_the_convex_combination_its_target_states(batch):
    x, y = batch
    y = torch.arange(len(x)) % K
    m = mixup(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=MixupOptions(alpha=0.4))
    lam = m.lam[0]
    assert torch.all(m.lam == lam)
    # recover each partner from x̃ = λx + (1-λ)x_j and check the target matches it
    for i in range(len(x)):
        errs = torch.stack([(m.x[i] - lam * x[i] - (1 - lam) * x[j]).abs().max() for j in range(len(x))])
        j = int(errs.argmin())
        assert errs[j] < 1e-5
        expect = torch.zeros(K)
        expect[y[i]] += lam
        expect[y[j]] += 1 - lam
        assert torch.allclose(m.target[i], expect, atol=1e-6)


def test_resized_partner_fills_the_box_with_the_whole_partner():
    src = torch.arange(16.0).view(1, 1, 4, 4)
    full = (torch.tensor([0]), torch.tensor([4]), torch.tensor([0]), torch.tensor([4]))
    assert torch.allclose(resized_into_boxes(src, full, 4, 4), src, atol=1e-5)
    half = (torch.tensor([0]), torch.tensor([2]), torch.tensor([2]), torch.tensor([4]))
    out = resized_into_boxes(torch.ones(1, 1, 8, 8) * 7, half, 8, 8)
    assert torch.allclose(out, torch.full_like(out, 7.0))


def test_pure_and_deterministic(batch, model):
    x, y = batch
    x0, y0 = x.clone(), y.clone()
    for name, mix in all_mixers(model):
        a = mix(x, y, torch.Generator().manual_seed(5))
        b = mix(x, y, torch.Generator().manual_seed(5))
        assert torch.equal(x, x0) and torch.equal(y, y0), f"{name} modified its input"
        assert torch.equal(a.x, b.x) and torch.equal(a.target, b.target), f"{name} not deterministic"
        c = mix(x, y, torch.Generator().manual_seed(6))
        assert not torch.equal(a.x, c.x), f"{name} ignores its generator"
