"""Corruptions (closed forms, determinism), OOD metrics, and both evaluations on trained runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import archives as A
from gradmix import config, corruption as C, datasets, figures, ood, robustness, train, trainers
from gradmix.download import Resource

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_cfg():
    return config.load(ROOT / "params.yaml", smoke=True)


@pytest.fixture(scope="module")
def runs(smoke_cfg, tmp_path_factory):
    """Smoke runs (1 epoch, 192 images) of two methods on the embedded digits, split 0."""
    return trainers.train_methods(smoke_cfg, ["erm", "gradmix"], tmp_path_factory.mktemp("runs"))


def test_every_corruption_keeps_shape_range_and_is_seeded():
    x = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    for name in C.CORRUPTIONS:
        for s in (1, 5):
            y = C.corrupt(x, name, s, seed=3)
            assert y.shape == x.shape and y.dtype == x.dtype and 0 <= y.min() and y.max() <= 1, name
            assert torch.equal(y, C.corrupt(x, name, s, seed=3)), name         # same seed, same images
    assert not torch.equal(C.corrupt(x, "gaussian_noise", 3, 0), C.corrupt(x, "gaussian_noise", 3, 1))
    with pytest.raises(ValueError, match="valid: 1..5"):
        C.corrupt(x, "contrast", 6)


def test_closed_forms():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    m = x.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(C.corrupt(x, "contrast", 2), ((x - m) * 0.5 + m).clamp(0, 1))
    grey = torch.full((2, 1, 8, 8), 0.5)
    assert torch.allclose(C.corrupt(grey, "brightness", 5), torch.full_like(grey, 0.8))   # V + 0.3
    flat = torch.full((2, 3, 10, 10), 0.25)
    for name in ("gaussian_blur", "defocus_blur", "motion_blur", "zoom_blur", "pixelate"):
        assert torch.allclose(C.corrupt(flat, name, 5), flat, atol=1e-6), name        # blurs keep flat images
    rgb = torch.tensor([0.8, 0.4, 0.2]).view(1, 3, 1, 1)     # HSV: V 0.8, S 0.75
    sat = C.corrupt(rgb, "saturate", 1).flatten()             # S -> 0.3·0.75 = 0.225, hue and value kept
    assert torch.allclose(sat, torch.tensor([0.8, 0.8 - 0.4 * 0.3, 0.8 - 0.6 * 0.3]), atol=1e-6)
    assert torch.equal(C.corrupt(grey, "saturate", 4), grey)


def test_noise_grows_with_severity_and_kernels_are_normalised():
    x = torch.full((8, 3, 16, 16), 0.5)
    stds = [float((C.corrupt(x, "gaussian_noise", s) - x).std()) for s in range(1, 6)]
    assert all(a < b for a, b in zip(stds, stds[1:])) and abs(stds[-1] - 0.10) < 0.01
    frac = [float((C.corrupt(x, "impulse_noise", s) != x).float().mean()) for s in (1, 5)]
    assert abs(frac[0] - 0.01) < 0.01 and abs(frac[1] - 0.07) < 0.015
    assert abs(float(C._disk(1.5, 0.1).sum()) - 1) < 1e-6
    assert torch.allclose(C._box_matrix(32, 20).sum(1), torch.ones(20, dtype=torch.float64))


def test_ood_metrics_hand_computed():
    # one logit column: scores are the values themselves (MLS)
    lid = np.array([[4.0], [3.0], [2.0], [1.0]])
    out = ood.ood_metrics(lid, {"a": np.array([[0.0], [2.5]]), "b": np.array([[5.0], [3.0]])},
                          near=["a"], far=["b"], scores=["mls"])
    # a: pairs (id > ood): 4>0,4>2.5,3>0,3>2.5,2>0,1>0 = 6 of 8; b: 4>3 and a tie 3=3 -> (1 + 0.5)/8
    assert out["a/auroc_mls"] == pytest.approx(6 / 8) and out["b/auroc_mls"] == pytest.approx(1.5 / 8)
    # 95 % of 4 ID images -> all 4 must pass: threshold 1.0; a accepts 2.5 only, b accepts both
    assert out["a/fpr95_mls"] == 0.5 and out["b/fpr95_mls"] == 1.0
    assert out["near/auroc_mls"] == out["a/auroc_mls"] and out["far/auroc_mls"] == out["b/auroc_mls"]


def test_generated_ood_sets(smoke_cfg):
    ident = torch.rand(5, 1, 16, 16)
    rot = ood.ood_set("rotated", smoke_cfg.data, smoke_cfg.ood, ident)
    assert torch.allclose(rot, torch.rot90(ident, 1, dims=(2, 3)))
    for name in ("photo_patches", "uniform_noise"):
        x = ood.ood_set(name, smoke_cfg.data, smoke_cfg.ood, ident)
        assert x.shape == (smoke_cfg.ood.num_generated, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
        assert torch.equal(x, ood.ood_set(name, smoke_cfg.data, smoke_cfg.ood, ident))


def test_evaluations_on_trained_digit_runs(smoke_cfg, runs, tmp_path):
    smoke_cfg = config.replace(smoke_cfg, corruption={"corruptions": ["impulse_noise", "motion_blur", "contrast"]})
    o, c = robustness.run_all(runs, smoke_cfg, tmp_path, ["erm", "gradmix"])
    assert list(o["method"]) == ["erm", "gradmix"] and list(c["method"]) == ["erm", "gradmix"]
    for col in ("near/auroc_mls", "far/fpr95_msp", "rotated/auroc_msp", "uniform_noise/auroc_mls"):
        assert o[col].between(0, 1).all(), col
    row = c.iloc[0]
    cells = [row[f"{k}/s{s}"] for k in smoke_cfg.corruption.corruptions for s in smoke_cfg.corruption.severities]
    assert row["mean"] == pytest.approx(np.mean(cells))
    summary = json.loads((tmp_path / "corruption.json").read_text())
    assert summary["digits"]["erm"]["clean"]["n"] == 1
    assert summary["digits"]["gradmix"]["mean"]["mean"] == pytest.approx(c.iloc[1]["mean"])
    assert "far/auroc_mls" in json.loads((tmp_path / "ood.json").read_text())["digits"]["erm"]
    tables = robustness.tables(json.loads((tmp_path / "ood.json").read_text()), summary, smoke_cfg,
                               ["erm", "gradmix"])
    assert set(tables) == {"ood_digits", "corruption_digits"} and "near" in tables["ood_digits"]
    figures.ood_figure(o, smoke_cfg.ood)
    figures.corruption_figure(c, smoke_cfg.corruption)


def test_cifar10c_evaluation_end_to_end(tmp_path, smoke_cfg):
    """Fabricated CIFAR-10 and CIFAR-10-C on a local server -> a closed-set run -> per-severity accuracy."""
    server = A.Server()
    c10, arrays = A.cifar10_tarball()
    blobs = {"cifar10": c10, "cifar10c": A.cifar10c_tar(arrays)}
    saved = dict(datasets.RESOURCES)
    try:
        for key, blob in blobs.items():
            server.files[saved[key].filename] = blob
            datasets.RESOURCES[key] = Resource(saved[key].filename, (), md5=A.md5(blob))
        raw = smoke_cfg.to_dict()
        raw["data"].update(dataset="cifar10", root=str(tmp_path / "data"), mirror=server.url, known="all",
                           splits=[0], image_size=0, max_train=0)
        raw["corruption"].update(source="cifar10c", corruptions=["contrast"], severities=[1, 5], max_images=0)
        cfg = config.from_dict(raw)
        root = trainers.train_methods(cfg, ["erm"], tmp_path / "runs")
        c = robustness.evaluate_corruption(robustness.find_runs(root), cfg.corruption, "cpu")
        row = c.iloc[0]
        assert row["contrast/s1"] == row["clean"]                   # severity 1 rows = the clean test set
        run = robustness.find_runs(root)[0]
        model = train.load_model(run)
        d = robustness._test_set(robustness.run_config(run)[0], 0)
        black = d.normalize(torch.zeros(1, 3, 32, 32))
        pred = int(train.predict(model, black).argmax())
        assert row["contrast/s5"] == pytest.approx(float((d.y_known == pred).float().mean()))
        assert len(server.requests("CIFAR-10-C.tar")) == 1
    finally:
        datasets.RESOURCES.clear()
        datasets.RESOURCES.update(saved)
        server.close()
