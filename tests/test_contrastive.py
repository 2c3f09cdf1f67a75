"""The contrastive track: losses against hand-computed values, the λ' weighting of the extra view,
attribution hygiene, config validation and the run-directory contract shared with evaluate."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from gradmix import config, contrastive, evaluate, figures, report, train, trainers
from gradmix.contrastive import runs
from gradmix.config import ConfigError
from gradmix.contrastive import (ContrastiveMethod, ContrastiveNet, ContrastiveTrainConfig, ViewConfig,
                                 extra_view, loss_from_views, ntxent, supcon_loss)
from gradmix.mixing import CutMixOptions, GradMixOptions, MixupOptions, cutmix, mixup
from gradmix.mixing.boxes import masked_fraction
from gradmix.models import SmallCNN

ROOT = Path(__file__).resolve().parents[1]
E = math.e
UNIT = dict(temperature=1.0, base_temperature=1.0)


@pytest.fixture(scope="module")
def params():
    return config.load(ROOT / "params.yaml", smoke=True)


# ----------------------------------------------------------------------------- losses

def pairs():
    """Two images, two views each, every view of image 0 is e1 and of image 1 is e2 (view-major)."""
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    return torch.stack([e1, e2, e1, e2])


def test_ntxent_hand_computed():
    # anchor e1: positive e1 (cos 1); others e2, e1, e2 -> ℓ = -(1 - log(e^0 + e^1 + e^0)) for all four
    assert ntxent(pairs(), **UNIT).item() == pytest.approx(math.log(E + 2) - 1, abs=1e-6)
    # τ = 0.5: ℓ = -(2 - log(e^2 + 2)); τ_base = 0.25 multiplies by τ/τ_base = 2
    assert ntxent(pairs(), temperature=0.5, base_temperature=0.5).item() == pytest.approx(math.log(E**2 + 2) - 2, abs=1e-6)
    assert ntxent(pairs(), temperature=0.5, base_temperature=0.25).item() == pytest.approx(2 * (math.log(E**2 + 2) - 2), abs=1e-6)


def test_supcon_hand_computed():
    z = pairs()
    # one class: anchor e1 has positives e2, e1, e2 -> -(0 + 1 + 0)/3 + log(e + 2)
    assert supcon_loss(z, torch.tensor([0, 0]), **UNIT).item() == pytest.approx(math.log(E + 2) - 1 / 3, abs=1e-6)
    # distinct classes: SupCon is NT-Xent
    assert supcon_loss(z, torch.tensor([3, 5]), **UNIT).item() == pytest.approx(ntxent(z, **UNIT).item(), abs=1e-7)


def test_extra_positives_hand_computed():
    z = pairs()
    q = z.clone()
    q[0] = torch.tensor([0.0, 1.0])   # the extra view of image 0's view 1 points at e2
    # anchor 2 (view 2 of image 0) now has positive q[0] = e2 (cos 0): ℓ = log(e + 2); the others as before
    per_anchor = ntxent(z, positives=q, reduction="none", **UNIT)
    expect = torch.tensor([math.log(E + 2) - 1, math.log(E + 2) - 1, math.log(E + 2), math.log(E + 2) - 1])
    assert torch.allclose(per_anchor, expect, atol=1e-6)
    assert ntxent(z, positives=q, **UNIT).item() == pytest.approx(math.log(E + 2) - 0.75, abs=1e-6)


def test_anchors_without_a_positive_are_left_out():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # one view; class 0 twice (e1, e1), class 1 once (e2): anchor 2 has no positive.
    # anchors 0 and 1: positive e1 (cos 1), denominator e^1 + e^0 -> ℓ = log(e + 1) - 1
    z = torch.stack([e1, e1, e2]).requires_grad_(True)
    loss = supcon_loss(z, torch.tensor([0, 0, 1]), views=1, **UNIT)
    assert loss.item() == pytest.approx(math.log(E + 1) - 1, abs=1e-6)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    per = supcon_loss(z.detach(), torch.tensor([0, 0, 1]), views=1, reduction="none", **UNIT)
    assert torch.allclose(per, torch.tensor([math.log(E + 1) - 1] * 2 + [0.0]), atol=1e-6)
    # every anchor a singleton (all-distinct labels, or SimCLR with one view): 0 with a zero gradient
    for labels in (torch.tensor([0, 1, 2]), None):
        z = torch.stack([e1, e2, (e1 + e2) / math.sqrt(2)]).requires_grad_(True)
        loss = supcon_loss(z, labels, views=1, **UNIT)
        loss.backward()
        assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))
    # two views always give each anchor its other view: unchanged, bit for bit
    z = pairs()
    assert supcon_loss(z, torch.tensor([3, 5]), **UNIT).item() == pytest.approx(math.log(E + 2) - 1, abs=1e-6)


def reference_supcon(z, labels, positives, tau, base):
    """SupContrast's SupConLoss (contrast_mode 'all') written with loops and the max-subtraction trick."""
    n = len(z)
    b = n // 2
    ids = list(labels.tolist()) * 2 if labels is not None else list(range(b)) * 2
    q = positives if positives is not None else z
    out = []
    for i in range(n):
        logits = [float(z[i] @ z[a]) / tau for a in range(n)]
        m = max(logits)
        denom = sum(math.exp(l - m) for a, l in enumerate(logits) if a != i)
        terms = [float(z[i] @ q[p]) / tau - m - math.log(denom) for p in range(n) if p != i and ids[p] == ids[i]]
        out.append(-(tau / base) * sum(terms) / len(terms))
    return float(np.mean(out))


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("with_positives", [True, False])
def test_supcon_equals_loop_reference(labelled, with_positives):
    g = torch.Generator().manual_seed(0)
    z = nn.functional.normalize(torch.randn(12, 5, generator=g), dim=1)
    q = nn.functional.normalize(torch.randn(12, 5, generator=g), dim=1) if with_positives else None
    y = torch.tensor([0, 1, 0, 2, 1, 1]) if labelled else None
    got = supcon_loss(z, y, positives=q, temperature=0.1, base_temperature=0.07).item()
    assert got == pytest.approx(reference_supcon(z, y, q, 0.1, 0.07), rel=1e-5)


# ----------------------------------------------------------------------------- extra view

@pytest.fixture
def setup():
    torch.manual_seed(0)
    net = ContrastiveNet(SmallCNN(1, 4, width=6), feat_dim=8)
    net.train()
    x = torch.randn(6, 1, 16, 16)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    net(x)                              # non-trivial BatchNorm running statistics
    return net, x, y


def method(view, options=None, **kw):
    return ContrastiveMethod(name=f"t_{view}", view=view, options=options, **kw)


def ccfg():
    return contrastive.ContrastiveConfig(train=ContrastiveTrainConfig(temperature=0.2, base_temperature=0.2))


def test_gradmix_view_weight_is_unmasked_fraction(setup):
    net, x, y = setup
    gen = torch.Generator().manual_seed(0)
    v1, v2 = x + 0.1, x - 0.1
    # λ fixed at 0.75: side int(16·√0.25) = 8; the peak at (8, 8) gives the box [4, 12)² (unclipped)
    o = GradMixOptions(stages=("stage2", "stage3"), lam_low=0.75, lam_span=0.0)
    maps = torch.zeros(6, 16, 16)
    maps[:, 8, 8] = 1.0
    xe, w = extra_view(net, method("gradmix", o), x, v1, v2, y, num_classes=4, generator=gen, cfg=ccfg(), maps=maps)
    changed = (xe != v1)[:, 0]
    assert torch.equal(changed[:, 4:12, 4:12], torch.ones(6, 8, 8, dtype=torch.bool))
    assert changed.sum() == 6 * 64 and torch.equal(xe[:, :, :4], v1[:, :, :4])
    assert torch.allclose(w, torch.full((6,), 0.75))                # λ' = 1 - 64/256
    _, w_one = extra_view(net, method("gradmix", o, weight="one"), x, v1, v2, y, num_classes=4,
                          generator=gen, cfg=ccfg(), maps=maps)
    assert torch.equal(w_one, torch.ones(6))


def test_baseline_views_are_the_mixers_weighted_by_their_lambda(setup):
    net, x, y = setup
    v1, v2 = x + 0.1, x - 0.1
    for view, options, fn in (("mixup", MixupOptions(), mixup), ("cutmix", CutMixOptions(prob=1.0), cutmix)):
        xe, w = extra_view(net, method(view, options), x, v1, v2, y, num_classes=4,
                           generator=torch.Generator().manual_seed(5), cfg=ccfg())
        ref = fn(v1, y, num_classes=4, generator=torch.Generator().manual_seed(5), options=options)
        assert torch.equal(xe, ref.x) and torch.equal(w, ref.lam) and (w < 1).all()
    assert torch.allclose(w, 1 - ref.mask.flatten(1).float().mean(1))     # CutMix: λ = unmixed area
    gen = torch.Generator().manual_seed(0)
    xe, w = extra_view(net, method("aug", weight="one"), x, v1, v2, y, num_classes=4, generator=gen, cfg=ccfg())
    assert xe.shape == x.shape and torch.equal(w, torch.ones(6))
    assert extra_view(net, method("none"), x, v1, v2, y, num_classes=4, generator=gen, cfg=ccfg()) == (None, None)


@pytest.mark.parametrize("supcon_extra", [False, True])
def test_loss_is_clean_plus_lambda_weighted_extra(setup, supcon_extra):
    net, x, y = setup
    t = ccfg().train
    kw = dict(temperature=t.temperature, base_temperature=t.base_temperature)
    v1, v2, xe = x + 0.1, x - 0.1, x * 0.5
    w = torch.tensor([0.75, 0.75, 0.6, 0.75, 0.9, 0.75])
    m = method("gradmix", GradMixOptions(stages=("stage3",)), gamma=0.7, mu=1.3, supcon_extra=supcon_extra)
    loss, parts = loss_from_views(net, m, v1, v2, y, t, xe, w)
    z = net(torch.cat([v1, v2, xe]))            # the same single forward (BatchNorm batch statistics)
    zc, za = z[:12], torch.cat([z[12:], z[6:12]])
    wa = w.repeat(2)
    ssl = ntxent(zc, **kw) + (wa * ntxent(zc, positives=za, reduction="none", **kw)).mean()
    sup = supcon_loss(zc, y, **kw)
    if supcon_extra:
        sup = sup + (wa * supcon_loss(zc, y, positives=za, reduction="none", **kw)).mean()
    assert loss.item() == pytest.approx(0.7 * sup.item() + 1.3 * ssl.item(), rel=1e-5)
    # with one λ' for the whole batch (the authors' scalar) the extra term is exactly λ'·L_extra
    loss_s, parts_s = loss_from_views(net, m, v1, v2, y, t, xe, torch.full((6,), 0.75))
    parts_s = {k: v.item() for k, v in parts_s.items()}      # detached device scalars (no sync in a step)
    clean = 0.7 * parts_s["supcon"] + 1.3 * parts_s["simclr"]
    if not supcon_extra:
        assert loss_s.item() == pytest.approx(clean + 1.3 * 0.75 * parts_s["extra"], rel=1e-5)
    assert parts_s["lam"] == pytest.approx(0.75)


def test_attribution_pass_leaves_grads_and_batchnorm_untouched(setup):
    net, x, y = setup
    params = list(net.parameters())
    for i, p in enumerate(params):          # half with existing grads, half without
        p.grad = torch.full_like(p, 0.5) if i % 2 else None
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    m = method("gradmix", GradMixOptions(stages=("stage2", "stage3")))
    gen = torch.Generator().manual_seed(0)
    xe, w = extra_view(net, m, x, x + 0.1, x - 0.1, y, num_classes=4, generator=gen, cfg=ccfg())
    assert not xe.requires_grad and (w < 1).all()
    for i, p in enumerate(params):
        assert torch.equal(p.grad, torch.full_like(p, 0.5)) if i % 2 else p.grad is None
    for k, v in net.named_buffers():
        assert torch.equal(v, buffers[k]), f"buffer {k} changed"
    assert net.training and all(mod.training for mod in net.modules())


def test_attribution_pass_adds_nothing_to_the_update(setup):
    """Gradients of a full step (attribution pass + loss) equal those of the loss alone on the same views."""
    net, x, y = setup
    t = ccfg().train
    m = method("gradmix", GradMixOptions(stages=("stage2", "stage3")))
    v1, v2 = x + 0.1, x - 0.1
    net.zero_grad(set_to_none=True)
    xe, w = extra_view(net, m, x, v1, v2, y, num_classes=4, generator=torch.Generator().manual_seed(0), cfg=ccfg())
    loss_from_views(net, m, v1, v2, y, t, xe, w)[0].backward()
    full = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad(set_to_none=True)
    loss_from_views(net, m, v1, v2, y, t, xe, w)[0].backward()
    alone = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    assert len(full) == len(alone) and all(torch.allclose(a, b) for a, b in zip(full, alone))


def test_contrastive_maps_peak_places_the_box(setup):
    net, x, y = setup
    m = method("gradmix", GradMixOptions(stages=("stage2", "stage3"), lam_low=0.75, lam_span=0.0))
    v1, v2 = x + 0.1, x - 0.1
    maps = contrastive.contrastive_maps(net, torch.cat([v1, v2]), y, m, ccfg().train)
    assert maps.shape == (12, 16, 16) and maps.min() >= 0
    xe, _ = extra_view(net, m, x, v1, v2, y, num_classes=4, generator=torch.Generator().manual_seed(0), cfg=ccfg())
    flat = maps[:6].flatten(1).argmax(1)
    for i, (r, c) in enumerate(zip((flat // 16).tolist(), (flat % 16).tolist())):
        assert xe[i, 0, r, c] != v1[i, 0, r, c]          # the peak of view 1's map is inside the box


def test_gradmix_view_falls_back_to_a_random_in_image_box_on_degenerate_maps(setup):
    net, x, y = setup
    o = GradMixOptions(stages=("stage3",), lam_low=0.75, lam_span=0.0)      # side 8: a whole box masks 1/4
    v1, v2 = x + 0.1, x - 0.1
    maps = torch.zeros(6, 16, 16)
    maps[2:, 8, 8] = 1.0
    maps[1, 3, 3] = float("nan")
    xe, w, mixed = contrastive.extra_mixed(net, method("gradmix", o), x, v1, v2, y, num_classes=4,
                                           generator=torch.Generator().manual_seed(0), cfg=ccfg(), maps=maps)
    assert mixed.fallback.tolist() == [True, True, False, False, False, False]
    assert torch.allclose(masked_fraction(mixed), torch.full((6,), 0.25))  # not the clipped corner quarter (1/16)
    assert torch.allclose(w, torch.full((6,), 0.75)) and torch.isfinite(xe).all()
    # a real attribution pass whose stage is dead (BatchNorm scale and shift 0: A = ReLU(0) = 0): every map is 0
    bn = net.encoder.body.stage3[-2]
    saved = bn.weight.detach().clone(), bn.bias.detach().clone()
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()
    try:
        _, _, mixed = contrastive.extra_mixed(net, method("gradmix", o), x, v1, v2, y, num_classes=4,
                                              generator=torch.Generator().manual_seed(0), cfg=ccfg())
    finally:
        with torch.no_grad():
            bn.weight.copy_(saved[0])
            bn.bias.copy_(saved[1])
    assert mixed.fallback.all() and torch.allclose(masked_fraction(mixed), torch.full((6,), 0.25))
    # the baseline views report their mask (CutMix) or none (Mixup), and no fallback
    _, _, cm = contrastive.extra_mixed(net, method("cutmix", CutMixOptions(prob=1.0)), x, v1, v2, y, num_classes=4,
                                       generator=torch.Generator().manual_seed(0), cfg=ccfg())
    assert cm.fallback is None and masked_fraction(cm).shape == (6,)
    _, _, mu = contrastive.extra_mixed(net, method("mixup", MixupOptions()), x, v1, v2, y, num_classes=4,
                                       generator=torch.Generator().manual_seed(0), cfg=ccfg())
    assert masked_fraction(mu) is None


# ----------------------------------------------------------------------------- views

def test_views_seeded_shape_preserving_and_off_means_crop_only():
    x = torch.randn(5, 1, 12, 12)
    cfg = ViewConfig()
    a = contrastive.view(x, torch.Generator().manual_seed(3), cfg)
    b = contrastive.view(x, torch.Generator().manual_seed(3), cfg)
    c = contrastive.view(x, torch.Generator().manual_seed(4), cfg)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    plain = ViewConfig(crop_padding=0, rotation=0.0, scale=0.0, brightness=0.0, contrast=0.0)
    assert torch.equal(contrastive.view(x, torch.Generator().manual_seed(0), plain), x)
    jitter = ViewConfig(crop_padding=0, rotation=0.0, scale=0.0, brightness=0.5, contrast=0.0)
    d = contrastive.view(x, torch.Generator().manual_seed(0), jitter) - x    # a constant shift per image
    assert torch.allclose(d, d[:, :, :1, :1].expand_as(d), atol=1e-6) and d.abs().max() <= 0.5


# ----------------------------------------------------------------------------- config

def raw_params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_params_contrastive_section(params):
    c = params.contrastive
    assert c.train.epochs == 1 and c.knn.k == 3 and c.train.temperature == 0.05 and c.train.feat_dim == 128
    assert {"supcon_none", "supcon_gradmix"} <= set(c.pipeline) and all(m in c.methods for m in c.pipeline)
    assert c.method("simclr_gradmix").gamma == 0.0 and c.method("supcon_gradmix").view == "gradmix"
    assert config.from_dict(params.to_dict()).contrastive == c         # run config.json round trip


@pytest.mark.parametrize("path, value, expect", [
    (("methods", "supcon_gradmix", "view"), "mosaic", ["'mosaic'", "gradmix", "cutmix"]),
    (("methods", "supcon_gradmix", "options", "fill"), "zeros", ["'zeros'", "noise", "partner"]),
    (("methods", "supcon_gradmix", "options", "objective"), "ce", ["objective", "belong to the cross-entropy"]),
    (("methods", "supcon_gradmix", "objective"), "gt_logit", ["'gt_logit'", "simclr", "supcon"]),
    (("methods", "supcon_none", "options"), {}, ["unknown key(s) ['options']", "view 'none'"]),
    (("methods", "supcon_gradmix", "mu"), 0.0, ["mu is 0"]),
    (("methods", "simclr_gradmix", "mu"), 0.0, ["both 0"]),
    (("methods", "simclr_gradmix", "objective"), "supcon", ["uses labels"]),
    (("train", "head"), "mlp3", ["'mlp3'", "linear", "mlp"]),
    (("knn", "features"), "logits", ["'logits'", "backbone", "head"]),
    (("pipeline",), ["supcon_none", "nope"], ["'nope'", "supcon_gradmix"]),
])
def test_bad_contrastive_values_name_the_valid_choices(path, value, expect):
    r = raw_params()
    node = r["contrastive"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as e:
        config.from_dict(r)
    for text in expect:
        assert text in str(e.value)


def test_override_and_missing_section(params):
    c = config.replace(params, contrastive={"train": {"epochs": 3}, "knn": {"k": 5}})
    assert c.contrastive.train.epochs == 3 and c.contrastive.knn.k == 5 and c.contrastive.methods == params.contrastive.methods
    with pytest.raises(ConfigError, match="contrastive.train.epochs"):
        config.replace(params, contrastive={"train": {"epochs": 0}})
    r = raw_params()
    del r["contrastive"]
    r["smoke"].pop("contrastive")
    bare = config.from_dict(r)
    assert bare.contrastive is None and "contrastive" not in bare.to_dict()
    with pytest.raises(ConfigError, match="no 'contrastive' section"):
        trainers.train_method(bare, "supcon_none", "/nonexistent")


def test_unknown_stage_fails_before_training(params, tmp_path):
    bad = raw_params()
    bad["contrastive"]["methods"]["supcon_gradmix"]["options"]["stages"] = ["layer4"]
    cfg = config.from_dict(bad)
    with pytest.raises(ConfigError, match="'layer4'.*stage1"):
        trainers.train_methods(cfg, ["supcon_none", "supcon_gradmix"], tmp_path)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def tiny(params):
    return config.replace(params, data={"max_train": 96, "image_size": 12},
                          contrastive={"train": {"epochs": 2, "batch_size": 32}, "probe": {"epochs": 5}})


def test_run_directory_contract_and_evaluation(tiny, tmp_path):
    d = runs.train_run(tiny, "supcon_gradmix", 0, 0, tmp_path / "supcon_gradmix" / "split0-seed0")
    assert sorted(p.name for p in d.iterdir()) == sorted([*train.RUN_FILES, "complete.json", "dvclive"])
    info = json.loads((d / "config.json").read_text())["run"]
    assert (info["method"], info["track"], info["split"]) == ("supcon_gradmix", "contrastive", 0)
    z = np.load(d / "scores.npz")
    assert len(z["score_knn_known"]) == len(z["labels_known"]) and 0 <= z["metric_probe_accuracy"] <= 1
    # the checkpoint reproduces the stored kNN scores
    cfg, _ = evaluate.run_config(d)
    from gradmix.data import load_openset
    data = load_openset(cfg.data, 0)
    again = runs.evaluate_net(runs.load_net(d), data, cfg.contrastive, 0)
    assert np.allclose(again["score_knn_known"], z["score_knn_known"], atol=1e-5)
    assert again["metric_probe_accuracy"] == pytest.approx(float(z["metric_probe_accuracy"]), abs=1e-6)
    assert isinstance(train.load_model(d), SmallCNN)     # the encoder loads like a cross-entropy model
    row = evaluate.evaluate_run(d)
    assert row["track"] == "contrastive" and "auroc_mls" not in row
    assert row["accuracy"] == pytest.approx(float(np.mean(z["pred_knn_known"] == z["labels_known"])))
    assert 0 <= row["auroc_knn"] <= 1 and 0 <= row["oscr_knn"] <= row["accuracy"] + 1e-9
    assert row["probe_accuracy"] == pytest.approx(float(z["metric_probe_accuracy"]))


def test_same_seed_same_run(tiny, tmp_path):
    a = runs.train_run(tiny, "simclr_gradmix", 1, 3, tmp_path / "a")
    b = runs.train_run(tiny, "simclr_gradmix", 1, 3, tmp_path / "b")
    c = runs.train_run(tiny, "simclr_gradmix", 1, 4, tmp_path / "c")
    za, zb, zc = (np.load(d / "scores.npz") for d in (a, b, c))
    assert np.array_equal(za["score_knn_known"], zb["score_knn_known"])
    assert not np.array_equal(za["score_knn_known"], zc["score_knn_known"])


def test_tracks_side_by_side_in_metrics_and_tables(tiny, tmp_path):
    train.train_run(tiny, "erm", 0, 0, tmp_path / "erm" / "split0-seed0")
    runs.train_run(tiny, "supcon_none", 0, 0, tmp_path / "supcon_none" / "split0-seed0")
    summary = evaluate.evaluate(tmp_path, tmp_path / "out", ["erm", "supcon_none"])
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["digits"]
    assert rows == summary["digits"]
    assert "auroc_mls" in rows["erm"] and "auroc_knn" not in rows["erm"] and "probe_accuracy" not in rows["erm"]
    assert {"accuracy", "auroc_knn", "oscr_knn", "fpr95_knn", "probe_accuracy"} == set(rows["supcon_none"])
    table = report.results_table(summary, "digits", ["erm", "supcon_none"], ("accuracy", "auroc_mls", "auroc_knn"))
    lines = table.splitlines()
    assert lines[2].endswith("| – |") and "| – |" in lines[3]
    s_k, s_u, _ = figures._scores(tmp_path / "supcon_none" / "split0-seed0", "knn")   # figures read kNN scores
    assert np.array_equal(s_k, np.load(tmp_path / "supcon_none" / "split0-seed0" / "scores.npz")["score_knn_known"])


def test_closed_set_runs_report_accuracy_and_mark_open_set_metrics_absent(tiny, tmp_path):
    # regression: data.known: all trained fully, then crashed in embed on the empty unknown set
    closed = config.replace(tiny, data={"known": "all", "splits": [0]})
    d = runs.train_run(closed, "supcon_gradmix", 0, 0, tmp_path / "supcon_gradmix" / "split0-seed0")
    z = np.load(d / "scores.npz")
    assert len(z["score_knn_unknown"]) == 0 and len(z["score_knn_known"]) > 0
    train.train_run(closed, "erm", 0, 0, tmp_path / "erm" / "split0-seed0")      # the cross-entropy path
    for run in ("supcon_gradmix", "erm"):
        row = evaluate.evaluate_run(tmp_path / run / "split0-seed0")
        assert 0 <= row["accuracy"] <= 1
        score = "knn" if run == "supcon_gradmix" else "mls"
        assert all(np.isnan(row[f"{m}_{score}"]) for m in ("auroc", "oscr", "fpr95")), run
    assert 0 <= row["accuracy"] <= 1
    summary = evaluate.evaluate(tmp_path, tmp_path / "out", ["erm", "supcon_gradmix"])
    rows = summary["digits"]
    mixing = {"masked_fraction", "fallback_fraction"}                     # descriptive, from log.csv
    assert set(rows["supcon_gradmix"]) - mixing == {"accuracy", "probe_accuracy"} and set(rows["erm"]) == {"accuracy"}
    lines = report.results_table(summary, "digits", ["erm", "supcon_gradmix"],
                                 ("accuracy", "auroc_mls", "auroc_knn", "fpr95_knn", "probe_accuracy")).splitlines()
    assert lines[2].endswith("| – | – | – | – |") and lines[3].count("| – ") == 3
    assert "nan" not in "\n".join(lines).lower()


def test_table_bolds_the_lowest_knn_fpr_and_dashes_missing_metrics():
    cell = lambda v: {"mean": v, "std": 0.0, "n": 5}  # noqa: E731
    summary = {"digits": {"erm": {"accuracy": cell(0.9), "auroc_mls": cell(0.8)},
                          "a": {"accuracy": cell(0.95), "auroc_knn": cell(0.7), "fpr95_knn": cell(0.4)},
                          "b": {"accuracy": cell(0.5), "auroc_knn": cell(0.9), "fpr95_knn": cell(0.2)}}}
    rows = report.results_table(summary, "digits", ["erm", "a", "b"], ("accuracy", "auroc_knn", "fpr95_knn")).splitlines()
    assert rows[2] == "| erm | 90.0 ± 0.0 | – | – |"
    assert rows[3] == "| a | **95.0 ± 0.0** | 70.0 ± 0.0 | 40.0 ± 0.0 |"
    assert rows[4] == "| b | 50.0 ± 0.0 | **90.0 ± 0.0** | **20.0 ± 0.0** |"
