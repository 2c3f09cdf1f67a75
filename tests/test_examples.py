"""The examples of docs/extending.md run, and what they show holds: a new mixer keeps the Mixed contract
and trains through the registry and the trainer; a wrapped torchvision backbone keeps CAM's closed form,
gives LayerCAM maps and trains GradMix; the ImageFolder entry point writes its tree."""
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from gradmix import config, evaluate, train
from gradmix.attribution import class_objective, stage_maps
from gradmix.checks import ConfigError
from gradmix.mixing import MIXERS, make_mixer, register_mixer
from gradmix.models import MODELS, register_model

ROOT = Path(__file__).resolve().parents[1]


def example(name: str) -> dict:
    return runpy.run_path(str(ROOT / "examples" / f"{name}.py"))


@pytest.fixture
def registries():
    """Leave MIXERS and MODELS as they were, whatever an example registers."""
    mixers, models = dict(MIXERS), dict(MODELS)
    yield
    MIXERS.clear(), MIXERS.update(mixers), MODELS.clear(), MODELS.update(models)


def test_stripemix_keeps_the_mixed_contract(gen):
    ex = example("add_mixer")
    x = torch.arange(2 * 1 * 4 * 3, dtype=torch.float32).reshape(2, 1, 4, 3)
    x0, y = x.clone(), torch.tensor([0, 1])
    m = ex["stripemix"](x, y, num_classes=3, generator=gen, options=ex["StripeMixOptions"]())
    rows = int(m.mask[0, 0, :, 0].sum())
    assert torch.equal(x, x0) and m.mask[:, :, 4 - rows:].all() and not m.mask[:, :, :4 - rows].any()
    assert torch.equal(m.x[:, :, 4 - rows:], x[m.partner][:, :, 4 - rows:]) and torch.equal(m.x[:, :, :4 - rows],
                                                                                          x[:, :, :4 - rows])
    assert torch.allclose(m.lam, torch.full((2,), 1 - rows / 4))          # the share of rows each image keeps
    expect = m.lam[:, None] * F.one_hot(y, 3) + (1 - m.lam[:, None]) * F.one_hot(y[m.partner], 3)
    assert torch.allclose(m.target, expect) and torch.allclose(m.target.sum(1), torch.ones(2))
    again = ex["stripemix"](x, y, num_classes=3, generator=torch.Generator().manual_seed(0),
                            options=ex["StripeMixOptions"]())
    assert torch.equal(again.x, m.x) and torch.equal(again.partner, m.partner)
    off = ex["stripemix"](x, y, num_classes=3, generator=gen, options=ex["StripeMixOptions"](prob=0.0))
    assert torch.equal(off.x, x) and off.partner is None and torch.equal(off.lam, torch.ones(2))


def test_add_mixer_registers_validates_and_trains(registries, tmp_path):
    ex = example("add_mixer")
    ex["register"]()
    assert MIXERS["stripemix"].fn is ex["stripemix"] and make_mixer("stripemix", ex["StripeMixOptions"]())
    with pytest.raises(ValueError, match="already registered"):
        register_mixer("stripemix", ex["StripeMixOptions"], ex["stripemix"])
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["methods"]["bad"] = {"mixer": "stripemix", "alpha": 0.0}
    with pytest.raises(ConfigError, match=r"stripemix.alpha: 0.0 is out of range"):
        config.from_dict(raw)
    raw["methods"]["bad"] = {"mixer": "stripemix", "beta": 1.0}
    with pytest.raises(ConfigError, match=r"methods.bad: unknown key\(s\) \['beta'\]; valid keys: \['alpha', 'prob'\]"):
        config.from_dict(raw)
    run = ex["main"](tmp_path)
    assert sorted(p.name for p in run.iterdir()) == sorted([*train.RUN_FILES, "complete.json", "dvclive"])
    stored = json.loads((run / "config.json").read_text())
    assert stored["methods"]["stripemix"] == {"mixer": "stripemix", "use": "replace", "alpha": 1.0, "prob": 1.0}
    row = evaluate.evaluate_run(run)
    assert row["method"] == "stripemix" and 0 <= row["auroc_mls"] <= 1


def test_wrapped_torchvision_backbone_keeps_the_cam_contract():
    ex = example("own_model")
    torch.manual_seed(0)
    model = ex["TorchvisionResNet18"](3, 5).eval()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    assert model.stages == ("stem", "layer1", "layer2", "layer3", "layer4") and model.feat_dim == 512
    a4 = model.body(x)                                                   # (4, 512, 2, 2): 1/32 resolution
    assert a4.shape == (4, 512, 2, 2)
    assert torch.allclose(model(x), model.fc(a4.mean((2, 3))), atol=1e-5)
    assert torch.allclose(model.features(x), a4.mean((2, 3)), atol=1e-6)
    # Grad-CAM of the ground-truth logit on the last stage is CAM: ReLU(sum_k W[y, k] A_k) / (h·w)
    maps = stage_maps(model, x, class_objective("gt_logit", y), ["layer4"], "gradcam", bn="eval")["layer4"]
    cam = torch.einsum("nk,nkhw->nhw", model.fc.weight[y], a4).clamp_min(0) / 4
    assert torch.allclose(maps, cam, atol=1e-5)
    lc = ex["layercam_maps"](model, x, y)
    assert lc.shape == (4, 64, 64) and (lc >= 0).all() and lc.amax() > 0
    grey = ex["TorchvisionResNet18"](1, 5)
    assert grey.body.stem[0].in_channels == 1 and grey(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_own_model_registers_and_trains_gradmix(registries, tmp_path):
    ex = example("own_model")
    run = ex["main"](tmp_path)
    cfg, info = evaluate.run_config(run)
    assert cfg.model.name == "tv_resnet18" and cfg.method("gradmix").options.stages == ("layer2", "layer3")
    model = train.load_model(run)                                        # rebuilt through the registry
    assert isinstance(model, ex["TorchvisionResNet18"])
    from gradmix.data import load_openset

    d = load_openset(cfg.data, info["split"])
    stored = np.load(run / "scores.npz")["logits_known"]
    assert np.allclose(train.predict(model, d.x_known).numpy(), stored, atol=1e-4)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tv_resnet18", ex["TorchvisionResNet18"])


def test_imagefolder_entry_point_writes_the_tree(tmp_path, capsys):
    ex = example("imagefolder")
    root = ex["main"]([str(tmp_path / "shapes"), "--train", "3", "--test", "2"])
    for split, n in (("train", 3), ("test", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == list(ex["CLASSES"])
        assert all(len(list((root / split / c).glob("*.png"))) == n for c in ex["CLASSES"])
    assert "data.dataset=imagefolder" in capsys.readouterr().out
    with pytest.raises(FileExistsError):
        ex["build_tree"](root)
