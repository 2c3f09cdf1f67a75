"""Invariants of the mixers: soft labels, λ = mixed area, boxes on the peak, purity, determinism;
the area-matched random centre, degenerate attribution maps and input types."""
import copy
import dataclasses

import pytest
import torch

from gradmix.attribution import degenerate, peak
from gradmix.mixing import (CutMixOptions, GradMixOptions, GraftingOptions, MixupOptions, RMixOptions, cutmix,
                            gradmix, grafting, mixup, rmix)
from gradmix.mixing.boxes import (box_bounds, box_mask, inside_centres, mask_area, mask_bounds, masked_fraction,
                                  resized_into_boxes, sample_beta)
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


# ----------------------------------------------------------------------------- area-matched ablation

def _nominal_area(o: GradMixOptions, lam0: torch.Tensor, s: int = 16) -> torch.Tensor:
    """The unclipped box [c - side//2, c + side//2)² of λ0: (2·(side//2))² / S²."""
    side = (s * torch.sqrt(1 - lam0)).long()
    return (2 * (side // 2)).float() ** 2 / s ** 2


def test_random_centre_masks_the_area_of_a_peak_box_away_from_the_border():
    n, draws = 64, 60
    x, y = torch.zeros(n, 1, 16, 16), torch.zeros(n, dtype=torch.long)
    maps = torch.zeros(n, 16, 16)
    maps[:, 8, 8] = 1.0                                    # peak in the middle: the peak box is never clipped
    frac = {c: [] for c in ("peak", "random", "random_clipped")}
    for seed in range(draws):
        for centre in frac:
            o = GradMixOptions(centre=centre, per_sample=True)
            m = gradmix(x, y, num_classes=2, generator=torch.Generator().manual_seed(seed), options=o, maps=maps)
            frac[centre].append(masked_fraction(m))
            if centre == "random":                         # in-image: every box whole, inside the image
                y1, y2, x1, x2 = mask_bounds(m.mask)
                assert (y1 >= 0).all() and (y2 <= 16).all() and (x1 >= 0).all() and (x2 <= 16).all()
                lam0 = 0.5 + 0.4 * sample_beta(1.0, 1.0, n, torch.Generator().manual_seed(seed))
                assert torch.allclose(masked_fraction(m), _nominal_area(o, lam0))
    mean = {c: torch.cat(v).mean().item() for c, v in frac.items()}
    assert abs(mean["random"] - mean["peak"]) <= 0.02 * mean["peak"]
    # the old rule (CutMix's clipping) masks clearly less: the bias the ablation had
    assert mean["random_clipped"] < 0.9 * mean["peak"]


def test_random_centre_is_uniform_over_the_in_image_range():
    cut = torch.full((20000,), 8)                         # half side 4: centres in [4, 12)
    cy, cx = inside_centres(cut, cut, 16, 16, torch.Generator().manual_seed(0), "cpu")
    assert cy.min() == 4 and cy.max() == 11 and cx.min() == 4 and cx.max() == 11
    counts = torch.bincount(cy - 4, minlength=8).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    # a box the size of the image: the only centre that keeps it inside
    cy, _ = inside_centres(torch.tensor([16]), torch.tensor([16]), 16, 16, torch.Generator(), "cpu")
    assert cy.item() == 8


def test_cutmix_keeps_its_clipping_rule(batch):
    x, y = batch
    clipped = 0
    for seed in range(40):
        m = cutmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(seed), options=CutMixOptions(prob=1.0))
        lam0 = sample_beta(1.0, 1.0, 1, torch.Generator().manual_seed(seed))
        clipped += int(masked_fraction(m)[0] < _nominal_area(CutMixOptions(), lam0)[0] - 1e-6)
    assert clipped > 5, "CutMix draws centres over the whole image and clips (official rand_bbox)"


def test_masked_fraction_of_every_mixer(batch, model):
    x, y = batch
    for name, mix in all_mixers(model):
        m = mix(x, y, torch.Generator().manual_seed(0))
        f = masked_fraction(m)
        if name == "mixup":
            assert f is None
        else:
            assert f.shape == (len(x),) and torch.allclose(f, m.mask.flatten(1).float().mean(1))
    for fn, o in ((rmix, RMixOptions()), (grafting, GraftingOptions())):
        m = fn(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=o, model=model)
        assert torch.allclose(masked_fraction(m), m.mask.flatten(1).float().mean(1)) and masked_fraction(m).sum() > 0
        off = fn(x, y, num_classes=K, generator=torch.Generator(), options=dataclasses.replace(o, prob=0.0), model=model)
        assert torch.equal(masked_fraction(off), torch.zeros(len(x)))
    # a blending method has no mask whether or not the batch was mixed
    for seed in range(6):
        assert masked_fraction(mixup(x, y, num_classes=K, generator=torch.Generator().manual_seed(seed),
                                     options=MixupOptions(prob=0.5))) is None
    assert torch.equal(masked_fraction(cutmix(x, y, num_classes=K, generator=torch.Generator(),
                                              options=CutMixOptions(prob=0.0))), torch.zeros(len(x)))


# ----------------------------------------------------------------------------- degenerate maps

def test_all_zero_map_falls_back_to_a_random_in_image_box():
    # regression: an all-zero map used to put the box at pixel (0, 0), clipped to a quarter
    m = gradmix(torch.zeros(1, 1, 16, 16), torch.tensor([0]), num_classes=2,
                generator=torch.Generator().manual_seed(0), options=GradMixOptions(), maps=torch.zeros(1, 16, 16))
    corner = torch.zeros(16, 16, dtype=torch.bool)
    corner[0:4, 0:4] = True
    assert not torch.equal(m.mask[0, 0], corner)
    assert m.fallback.tolist() == [True]
    lam0 = 0.5 + 0.4 * sample_beta(1.0, 1.0, 1, torch.Generator().manual_seed(0))
    assert torch.allclose(masked_fraction(m), _nominal_area(GradMixOptions(), lam0))   # whole, unclipped
    # over many draws the fallback centres spread over the in-image range, as the ablation's
    rows = set()
    for seed in range(30):
        m = gradmix(torch.zeros(1, 1, 16, 16), torch.tensor([0]), num_classes=2,
                    generator=torch.Generator().manual_seed(seed), options=GradMixOptions(lam_low=0.75, lam_span=0.0),
                    maps=torch.zeros(1, 16, 16))
        rows.add(int(mask_bounds(m.mask)[0]))
    assert rows == set(range(0, 8))                     # side 8: top rows 0..7, all of them reached


@pytest.mark.parametrize("kind", ["constant", "nan_pixel", "all_nan", "inf"])
def test_degenerate_maps_fall_back_and_the_others_keep_their_peak(batch, kind):
    x, y = batch
    n = len(x)
    maps = torch.rand(n, 16, 16, generator=torch.Generator().manual_seed(2)) * 0.5
    maps[:, 10, 6] = 1.0
    bad = torch.zeros(n, dtype=torch.bool)
    bad[[1, 4]] = True
    if kind == "constant":
        maps[bad] = 0.7
    elif kind == "nan_pixel":
        maps[1, 0, 0] = float("nan")
        maps[4, 3, 3] = float("nan")
    elif kind == "all_nan":
        maps[bad] = float("nan")
    else:
        maps[1, 2, 2] = float("inf")
        maps[4, 5, 5] = -float("inf")
    o = GradMixOptions(lam_low=0.75, lam_span=0.0)           # side 8
    m = gradmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=o, maps=maps)
    assert torch.equal(m.fallback, bad)
    y1, y2, x1, x2 = mask_bounds(m.mask)
    good = ~bad
    assert (y1[good] == 6).all() and (x1[good] == 2).all()          # the peak (10, 6), box [6, 14) x [2, 10)
    assert torch.allclose(m.lam, torch.full((n,), 0.75))            # every box whole: no corner quarter
    assert torch.isfinite(m.x).all()


def test_gradcam_with_all_negative_weights_falls_back_on_a_real_model(batch):
    # Grad-CAM's known failure: with every channel weight negative, ReLU(Σ w_k A_k) = 0 everywhere.
    # logits = fc(mean_hw(stage3)) with fc ≤ 0 makes dlogit_y/dA_k = fc[y, k]/(h·w) < 0 for every channel.
    x, y = batch
    torch.manual_seed(0)
    net = SmallCNN(3, K, width=4)
    with torch.no_grad():
        net.fc.weight.fill_(-1.0)
        net.fc.bias.zero_()
    o = GradMixOptions(attribution="gradcam", stages=("stage3",), objective="gt_logit")
    m = gradmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=o, model=net)
    assert m.fallback.all()
    y1, _, x1, _ = mask_bounds(m.mask)
    assert not ((y1 == 0) & (x1 == 0)).all()
    lam0 = 0.5 + 0.4 * sample_beta(1.0, 1.0, 1, torch.Generator().manual_seed(0))
    assert torch.allclose(masked_fraction(m), _nominal_area(o, lam0).expand(len(x)))
    # the same model with LayerCAM (ReLU of the gradients) also gives empty maps: the same fallback
    m2 = gradmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(0),
                 options=dataclasses.replace(o, attribution="layercam"), model=net)
    assert m2.fallback.all()


def test_fallback_field_only_where_a_map_was_used(batch, model):
    x, y = batch
    base = GradMixOptions(stages=("stage2", "stage3"))
    m = gradmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=base, model=model)
    assert m.fallback is not None and m.fallback.dtype == torch.bool and not m.fallback.any()
    for o in (dataclasses.replace(base, centre="random"), dataclasses.replace(base, prob=0.0)):
        assert gradmix(x, y, num_classes=K, generator=torch.Generator(), options=o, model=model).fallback is None
    assert cutmix(x, y, num_classes=K, generator=torch.Generator(), options=CutMixOptions(prob=1.0)).fallback is None


def test_peak_refuses_non_finite_maps():
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 1] = 1.0
    assert [t.tolist() for t in peak(maps)] == [[1, 0], [1, 0]]
    assert degenerate(maps).tolist() == [False, True]
    maps[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        peak(maps)


# ----------------------------------------------------------------------------- input types

LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
IMAGE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def every_mixer():
    yield "mixup", mixup, MixupOptions()
    yield "cutmix", cutmix, CutMixOptions(prob=1.0)
    for fill in ("noise", "partner", "colocated"):
        yield f"gradmix_{fill}", gradmix, GradMixOptions(fill=fill)
    yield "gradmix_random", gradmix, GradMixOptions(centre="random", fill="partner")
    yield "rmix", rmix, RMixOptions()
    yield "grafting", grafting, GraftingOptions()


@pytest.mark.parametrize("image_dtype", IMAGE_DTYPES, ids=str)
def test_every_mixer_takes_any_integer_labels_and_keeps_the_image_dtype(batch, model, image_dtype):
    x, y = batch
    x = x.to(image_dtype)
    net = copy.deepcopy(model).to(image_dtype)               # the attribution-guided mixers run the model on x
    for name, fn, o in every_mixer():
        ref = fn(x, y, num_classes=K, generator=torch.Generator().manual_seed(3), options=o, model=net)
        assert ref.x.dtype == image_dtype and ref.x.device == x.device, f"{name}: {ref.x.dtype}"
        assert ref.target.dtype == torch.float32 and torch.allclose(ref.target.sum(1), torch.ones(len(x)))
        for dt in LABEL_DTYPES:
            m = fn(x, y.to(dt), num_classes=K, generator=torch.Generator().manual_seed(3), options=o, model=net)
            assert torch.equal(m.x, ref.x) and torch.equal(m.target, ref.target), f"{name} with {dt} labels"
            assert m.x.dtype == image_dtype


def test_mixers_reject_labels_and_images_they_cannot_mean(batch, model):
    x, y = batch
    for name, fn, o in every_mixer():
        with pytest.raises(TypeError, match="integer class indices"):
            fn(x, y.float(), num_classes=K, generator=torch.Generator(), options=o, model=model)
        with pytest.raises(TypeError, match="floating-point"):
            fn((x * 10).long(), y, num_classes=K, generator=torch.Generator(), options=o, model=model)


def test_int32_labels_reach_the_losses_the_mixers_feed(batch, model):
    from gradmix.losses import soft_cross_entropy

    x, y = batch
    for name, fn, o in every_mixer():
        m = fn(x, y.int(), num_classes=K, generator=torch.Generator().manual_seed(0), options=o, model=model)
        loss = (m.weight * soft_cross_entropy(model(m.x), m.target)).mean()
        assert torch.isfinite(loss), name
