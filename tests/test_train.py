"""The trainer: the run directory contract, determinism, loss composition, checkpoints."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradmix
from gradmix import config, evaluate, train, trainers
from gradmix.mixing.boxes import Mixed


@pytest.fixture(scope="module")
def tiny(cfg):
    return config.replace(cfg, data={"max_train": 96, "image_size": 12}, train={"epochs": 2, "batch_size": 32})


def test_run_directory_contract(tiny, tmp_path):
    d = train.train_run(tiny, "gradmix", 0, 0, tmp_path / "gradmix" / "split0-seed0")
    assert sorted(p.name for p in d.iterdir()) == sorted([*train.RUN_FILES, "complete.json", "dvclive"])
    assert not (tmp_path / "gradmix" / "split0-seed0.tmp").exists()
    info = json.loads((d / "config.json").read_text())["run"]
    assert (info["method"], info["split"], info["seed"]) == ("gradmix", 0, 0)
    assert info["device"] == "cpu" and info["threads"] == torch.get_num_threads() and info["torch"] == torch.__version__
    assert info["host"] and "git_commit" in info and "git_dirty" in info and info["segments"][0]["from_epoch"] == 1
    assert info["gradmix"] == gradmix.__version__
    log = np.genfromtxt(d / "log.csv", delimiter=",", names=True)
    assert list(log["epoch"]) == [1, 2] and np.all((log["masked_fraction"] > 0) & (log["masked_fraction"] < 1))
    z = np.load(d / "scores.npz")
    assert z["logits_known"].shape[1] == 6 and len(z["logits_known"]) == len(z["labels_known"])
    # the checkpoint reproduces the stored logits
    model = train.load_model(d)
    cfg, _ = evaluate.run_config(d)
    from gradmix.data import load_openset
    data = load_openset(cfg.data, 0)
    assert np.allclose(train.predict(model, data.x_known).numpy(), z["logits_known"], atol=1e-5)
    row = evaluate.evaluate_run(d)
    assert 0 <= row["auroc_mls"] <= 1 and row["method"] == "gradmix"


@pytest.mark.parametrize("method", ["erm", "gradmix"])
def test_same_seed_same_result(tiny, tmp_path, method):
    a = train.train_run(tiny, method, 1, 3, tmp_path / "a")
    b = train.train_run(tiny, method, 1, 3, tmp_path / "b")
    c = train.train_run(tiny, method, 1, 4, tmp_path / "c")
    za, zb, zc = (np.load(d / "scores.npz") for d in (a, b, c))
    assert np.array_equal(za["logits_known"], zb["logits_known"])
    assert not np.array_equal(za["logits_known"], zc["logits_known"])


def test_training_loss_replace_and_extra():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    xm = torch.randn(5, 4)
    target = F.softmax(torch.randn(5, 3), 1)
    w = torch.rand(5)

    def mixer(x_, y_, **kw):
        return Mixed(xm, target, 1 - w, w)

    def ce(logits, t):
        return -(t * F.log_softmax(logits, 1)).sum(1)

    g = torch.Generator()
    replace = train.training_loss(model, mixer, "replace", x, y, 3, g)
    assert replace.item() == pytest.approx((w * ce(model(xm), target)).mean().item(), rel=1e-6)
    extra = train.training_loss(model, mixer, "extra", x, y, 3, g)
    clean = F.cross_entropy(model(x), y)
    assert extra.item() == pytest.approx((clean + (w * ce(model(xm), target)).mean()).item(), rel=1e-6)
    erm = train.training_loss(model, None, "replace", x, y, 3, g, label_smoothing=0.1)
    assert erm.item() == pytest.approx(F.cross_entropy(model(x), y, label_smoothing=0.1).item(), rel=1e-6)


def test_cosine_schedule_with_warmup():
    t = config.TrainConfig(epochs=4, warmup_epochs=1, lr=1.0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = train.make_schedule(opt, t, steps_per_epoch=2)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[2:] == sorted(lrs[2:], reverse=True) and lrs[-1] > 0


def test_unfinished_run_dirs_fail_clearly(tiny, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a finished run: it has no complete.json"):
        train.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        evaluate.read_run(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"erm: no runs in"):
        evaluate.find_runs(tmp_path, ["erm"])


def test_train_methods_validates_every_name_first(tiny, tmp_path):
    with pytest.raises(config.ConfigError, match="unknown method 'nope'"):
        trainers.train_methods(tiny, ["erm", "nope"], tmp_path)
    assert not any(tmp_path.iterdir())
