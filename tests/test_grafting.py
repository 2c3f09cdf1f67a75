"""Saliency Grafting: calibrated labels equal the saliency ratio, Bernoulli sampling, closed forms."""
import math

import pytest
import torch

from gradmix.config import ConfigError
from gradmix.mixing import MIXERS, GraftingOptions, grafting
from gradmix.mixing.grafting import graft_probabilities, grafting_parts
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
    for source in ("input", "stage2"):
        for seed in range(4):
            m = grafting(x, y, num_classes=K, generator=torch.Generator().manual_seed(seed),
                         options=GraftingOptions(source=source), model=model)
            assert torch.allclose(m.target.sum(1), torch.ones(len(x)))
            assert (m.target >= 0).all() and ((m.target > 0).sum(1) <= 2).all()
            assert (m.target[torch.arange(len(y)), y] >= m.lam - 1e-6).all()


def test_label_weights_equal_the_saliency_ratio(batch):
    """λ_src = (source saliency under the grafted cells) / (that + target saliency outside them),
    each image's 4x4 cell saliency normalised to sum 1; recomputed here cell by cell."""
    x, y = batch
    sal = torch.rand(8, 16, 16, generator=torch.Generator().manual_seed(2)) ** 3
    for seed in range(6):
        p = grafting_parts(x, y, num_classes=K, generator=torch.Generator().manual_seed(seed),
                           options=GraftingOptions(grid=4), saliency=sal)
        m, j, cells = p["mixed"], p["partner"], p["cell_mask"]
        for i in range(8):
            s_src = sal[j[i]].view(4, 4, 4, 4).mean((1, 3))             # 4x4 cells of 4x4 pixels
            s_tgt = sal[i].view(4, 4, 4, 4).mean((1, 3))
            s_src, s_tgt = s_src / s_src.sum(), s_tgt / s_tgt.sum()
            grafted = float(sum(s_src[a, b] for a in range(4) for b in range(4) if cells[i, a, b]))
            kept = float(sum(s_tgt[a, b] for a in range(4) for b in range(4) if not cells[i, a, b]))
            lam = grafted / (grafted + kept)
            if j[i] != i:
                assert m.target[i, y[j[i]]].item() == pytest.approx(lam, abs=1e-5)
                assert m.target[i, y[i]].item() == pytest.approx(1 - lam, abs=1e-5)
            # the image: the source's pixels exactly where the sampled cells are
            pix = cells[i].repeat_interleave(4, 0).repeat_interleave(4, 1)
            assert torch.equal(m.mask[i, 0], pix)
            assert torch.equal(m.x[i], torch.where(pix, x[j[i]], x[i]))


def test_calibrated_label_differs_from_area_and_area_option_is_area(batch):
    x, y = batch
    sal = torch.rand(8, 16, 16, generator=torch.Generator().manual_seed(2)) ** 3
    cal = grafting_parts(x, y, num_classes=K, generator=torch.Generator().manual_seed(0),
                         options=GraftingOptions(), saliency=sal)
    area = grafting_parts(x, y, num_classes=K, generator=torch.Generator().manual_seed(0),
                          options=GraftingOptions(label="area"), saliency=sal)
    assert torch.equal(cal["mask"], area["mask"])
    assert torch.allclose(area["lam_source"], area["mask"].flatten(1).float().mean(1))
    assert not torch.allclose(cal["lam_source"], area["lam_source"])


def test_probabilities_closed_form():
    """s̃ = s/max s; p = exp((s̃ - 1)/T), truncated below the threshold."""
    cells = torch.tensor([[[4.0, 2.0], [1.0, 0.0]]])
    p = graft_probabilities(cells, temperature=0.25, threshold=0.1)
    # s̃ = 1, 0.5, 0.25, 0 -> exp(0), exp(-2) = 0.135, exp(-3) = 0.050 -> 0, exp(-4) -> 0
    assert torch.allclose(p, torch.tensor([[[1.0, math.exp(-2)], [0.0, 0.0]]]))
    assert torch.allclose(graft_probabilities(cells, 1e6, 0.0), torch.ones(1, 2, 2), atol=1e-5)
    assert graft_probabilities(cells, 1e-3, 0.0).flatten().tolist() == [1.0, 0.0, 0.0, 0.0]


def test_cells_are_bernoulli_draws_of_the_sources_probabilities():
    """Over many batches the frequency of each grafted cell matches the source's p (4096 draws)."""
    n, counts, hits = 8, torch.zeros(8, 2, 2), 0
    sal = torch.tensor([[[4.0, 2.0], [3.0, 1.0]]]).repeat_interleave(2, 1).repeat_interleave(2, 2).expand(n, 4, 4)
    o = GraftingOptions(grid=2, temperature=0.5, threshold=0.0)
    x, y = torch.zeros(n, 1, 4, 4), torch.arange(n)
    gen = torch.Generator().manual_seed(0)
    for _ in range(512):
        p = grafting_parts(x, y, num_classes=K, generator=gen, options=o, saliency=sal)
        counts += p["cell_mask"].float()
        hits += n
    expect = graft_probabilities(torch.tensor([[[4.0, 2.0], [3.0, 1.0]]]), 0.5, 0.0)[0]
    assert torch.allclose(counts.sum(0) / hits, expect, atol=0.03)


def test_no_parameter_grads_deterministic_pure(batch, model):
    x, y = batch
    x0 = x.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = grafting(x, y, num_classes=K, generator=torch.Generator().manual_seed(3), options=GraftingOptions(),
                 model=model)
    b = grafting(x, y, num_classes=K, generator=torch.Generator().manual_seed(3), options=GraftingOptions(),
                 model=model)
    c = grafting(x, y, num_classes=K, generator=torch.Generator().manual_seed(4), options=GraftingOptions(),
                 model=model)
    assert torch.equal(x, x0) and torch.equal(a.x, b.x) and torch.equal(a.target, b.target)
    assert not torch.equal(a.x, c.x)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "bn 'batch' keeps running stats"
    assert MIXERS["grafting"].needs_model


def test_options_and_stage_fail_fast(tmp_path):
    from gradmix import config, train

    with pytest.raises(ConfigError, match=r"grafting.label.*'mass'.*area.*saliency"):
        GraftingOptions(label="mass")
    with pytest.raises(ConfigError, match="grafting.temperature"):
        GraftingOptions(temperature=0.0)
    cfg = config.load(config.Path(__file__).resolve().parents[1] / "params.yaml", smoke=True)
    r = cfg.to_dict()
    r["methods"]["grafting"]["source"] = "layer9"
    bad = config.apply_smoke(config.from_dict(r))
    with pytest.raises(ConfigError, match=r"'layer9'.*stage1.*stage2.*stage3"):
        train.train_run(bad, "grafting", 0, 0, tmp_path / "run")
    assert not any(tmp_path.iterdir())
