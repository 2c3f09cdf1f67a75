"""R-Mix and the shared gradient saliency: labels are the mixed areas, closed forms, no side effects."""
import pytest
import torch
import torch.nn.functional as F

from gradmix.config import ConfigError
from gradmix.mixing import MIXERS, RMixOptions, rmix
from gradmix.mixing.rmix import rmix_parts
from gradmix.mixing.saliency import gradient_saliency
from gradmix.models import SmallCNN

K = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SmallCNN(2, K, width=4)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 2, 16, 16, generator=g), torch.arange(8)        # every label distinct


def test_targets_are_distributions_with_two_labels(batch, model):
    x, y = batch
    for seed in range(5):
        m = rmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(seed), options=RMixOptions(),
                 model=model)
        assert torch.allclose(m.target.sum(1), torch.ones(len(x)))
        assert (m.target >= 0).all() and ((m.target > 0).sum(1) <= 2).all()
        own = m.target[torch.arange(len(y)), y]
        paired = m.partner != torch.arange(len(y))              # a self-paired image is all its own
        assert torch.allclose(own[paired], m.lam[paired]) and (own >= m.lam - 1e-6).all()


def test_label_weights_are_the_mixed_areas(batch):
    """With constant images v_i, each pixel of x̃_i is A·v_i + (1-A)·v_partner; the label weight of
    y_i must be the mean of A over the pixels, the partner's the mean of 1 - A."""
    x, y = batch
    v = torch.arange(1.0, 9.0) * 3.0
    const = v[:, None, None, None].expand_as(x).clone()
    sal = torch.rand(8, 16, 16, generator=torch.Generator().manual_seed(2))
    for seed in range(6):
        p = rmix_parts(const, y, num_classes=K, generator=torch.Generator().manual_seed(seed),
                       options=RMixOptions(), saliency=sal)
        m, j = p["mixed"], p["partner"]
        for i in range(8):
            if j[i] == i:
                continue
            share = (m.x[i] - v[j[i]]) / (v[i] - v[j[i]])                # A per pixel and channel
            assert torch.allclose(share[0], share[1])
            assert m.target[i, y[i]].item() == pytest.approx(share.mean().item(), abs=1e-5)
            assert m.target[i, y[j[i]]].item() == pytest.approx(1 - share.mean().item(), abs=1e-5)
        # the three regions partition the image and follow the salient masks
        assert torch.equal(p["blend"] | p["own"] | p["other"], torch.ones_like(p["blend"]))
        assert not (p["blend"] & p["own"]).any() and not (p["own"] & p["other"]).any()
        assert torch.equal(p["own"], p["salient"] & ~p["salient"][j])
        assert torch.equal(m.mask, p["other"])


def test_region_composition_on_random_images(batch):
    x, y = batch
    sal = torch.rand(8, 16, 16, generator=torch.Generator().manual_seed(3))
    p = rmix_parts(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=RMixOptions(),
                   saliency=sal)
    m, j, w1 = p["mixed"], p["partner"], p["w1"]
    expect = torch.where(p["blend"], w1 * x + (1 - w1) * x[j], torch.where(p["own"], x, x[j]))
    assert torch.allclose(m.x, expect)


def test_quantile_zero_makes_everything_salient_so_rmix_is_mixup(batch):
    x, y = batch
    o = RMixOptions(q_levels=1, q_max=0.0)                  # q = 0: every cell >= the minimum
    p = rmix_parts(x, y, num_classes=K, generator=torch.Generator().manual_seed(0), options=o,
                   saliency=torch.rand(8, 16, 16))
    w1, j = p["w1"], p["partner"]
    assert p["salient"].all() and p["blend"].all()
    assert torch.allclose(p["mixed"].x, w1 * x + (1 - w1) * x[j])
    assert torch.allclose(p["mixed"].target, w1 * F.one_hot(y, K) + (1 - w1) * F.one_hot(y[j], K))


def test_threshold_is_each_images_own_quantile():
    """4 cells with saliency 1, 2, 3, 4 (2x2 grid on 2x2 pixels): q = 0.5 keeps the two top cells."""
    sal = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[4.0, 3.0], [2.0, 1.0]]])
    x, y = torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])
    o = RMixOptions(grids=(2,), q_levels=2, q_max=0.5)     # q in {0, 0.5}
    for seed in range(8):
        p = rmix_parts(x, y, num_classes=2, generator=torch.Generator().manual_seed(seed), options=o, saliency=sal)
        for i in range(2):
            n_salient = int(p["salient"][i].sum())
            assert n_salient == (4 if p["q"][i] == 0 else 2)
            if p["q"][i] == 0.5:
                top = sal[i] >= 2.5
                assert torch.equal(p["salient"][i, 0], top)


def test_input_saliency_closed_form_for_a_linear_model():
    """f(x) = W·vec(x): ∂CE/∂x = Wᵀ(softmax(f) - e_y); saliency = RMS over channels."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(2 * 3 * 3, 4)
    net = torch.nn.Sequential(torch.nn.Flatten(), lin)
    x, y = torch.randn(5, 2, 3, 3), torch.tensor([0, 1, 2, 3, 0])
    sal = gradient_saliency(net, x, y, "input", "eval")
    p = F.softmax(lin(x.flatten(1)), 1) - F.one_hot(y, 4)
    g = (p @ lin.weight).view(5, 2, 3, 3)
    assert torch.allclose(sal, g.pow(2).mean(1).sqrt(), atol=1e-6)


def test_saliency_pass_leaves_grads_and_modes_and_documents_bn(batch):
    x, y = batch
    torch.manual_seed(0)
    net = SmallCNN(2, K, width=4)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for bn in ("batch", "eval"):
        gradient_saliency(net, x, y, "input", bn)
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), bn
    gradient_saliency(net, x, y, "stage2", "batch")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert net.training and all(m.training for m in net.modules())
    # bn "train" (official R-Mix): BN running statistics move with the clean batch
    gradient_saliency(net, x, y, "input", "train")
    assert not torch.equal(before["body.stage1.1.running_mean"], net.state_dict()["body.stage1.1.running_mean"])
    assert all(p.grad is None for p in net.parameters())
    net.eval()
    gradient_saliency(net, x, y, "input", "train")
    assert not net.training and not any(m.training for m in net.modules()), "mode restored"


def test_pure_deterministic_and_through_the_trainer_loss(batch, model):
    from gradmix.train import training_loss

    x, y = batch
    x0 = x.clone()
    a = rmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(4), options=RMixOptions(bn="batch"),
             model=model)
    b = rmix(x, y, num_classes=K, generator=torch.Generator().manual_seed(4), options=RMixOptions(bn="batch"),
             model=model)
    assert torch.equal(x, x0) and torch.equal(a.x, b.x) and torch.equal(a.target, b.target)
    mixer = lambda *args, **kw: rmix(*args, options=RMixOptions(), **kw)  # noqa: E731
    loss = training_loss(model, mixer, "replace", x, y, K, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    assert "rmix" in MIXERS and MIXERS["rmix"].needs_model


def test_options_fail_fast():
    with pytest.raises(ConfigError, match=r"rmix.bn.*'frozen'.*batch.*eval.*train"):
        RMixOptions(bn="frozen")
    with pytest.raises(ConfigError, match="rmix.grids"):
        RMixOptions(grids=())
    with pytest.raises(ConfigError, match="rmix.q_max"):
        RMixOptions(q_max=1.5)
    with pytest.raises(ValueError, match="rmix.grids: 32 cells"):
        rmix(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), num_classes=2, generator=torch.Generator(),
             options=RMixOptions(grids=(32,)), saliency=torch.rand(2, 8, 8))
