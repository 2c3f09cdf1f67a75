"""The paper profiles (params_paper.yaml), the cosine-with-restarts schedule, and data.dvc's offline state."""
import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from gradmix import config
from gradmix.config import ConfigError, DataConfig, TrainConfig
from gradmix.train import make_schedule

ROOT = Path(__file__).resolve().parents[1]
PROFILES = yaml.safe_load((ROOT / "params_paper.yaml").read_text())
MACHINE = {"data": {"root", "mirror", "storage"},
           "train": {"device", "threads", "progress", "checkpoint_every", "checkpoint_dir", "precision",
                     "channels_last", "compile", "max_data_fraction", "launcher", "workers", "log_dir", "slurm"}}


def with_profile(tmp_path, name, profiles=None):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"]["name"] = name
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    if profiles is None:
        shutil.copy(ROOT / "params_paper.yaml", tmp_path)
    else:
        (tmp_path / "params_paper.yaml").write_text(yaml.safe_dump(profiles))
    return tmp_path / "params.yaml"


def test_default_profile_is_params_yaml_as_written(tmp_path):
    assert PROFILES["default"] == {}
    assert config.load(with_profile(tmp_path, "default")) == config.load(ROOT / "params.yaml")


@pytest.mark.parametrize("name", [n for n in PROFILES if n.startswith("paper_")])
def test_paper_profiles_validate_and_write_every_value_out(tmp_path, name):
    cfg = config.load(with_profile(tmp_path, name))
    prof = PROFILES[name]
    for section, cls in (("data", DataConfig), ("train", TrainConfig)):
        fields = {f.name for f in dataclasses.fields(cls)} - MACHINE[section]
        assert set(prof[section]) == fields, (section, fields ^ set(prof[section]))
    assert set(prof["model"]) == {"name", "width"}
    assert cfg.data.root == "data" and cfg.train.device == "auto"       # machine settings from params.yaml
    stages = {"vgg32": ("block2", "block3"), "resnet18": ("layer3", "layer4")}[cfg.model.name]
    for m in ("gradmix", "gradmix_ce", "gradmix_random", "gradmix_partner", "gradmix_replace", "gradmix_shared"):
        assert cfg.method(m).options.stages == stages
    config.apply_smoke(cfg)                                             # notebooks' smoke runs stay valid
    # every stage a method attributes exists in the network that trains it, for both tracks
    from gradmix.contrastive.runs import encoder_config
    from gradmix.models import build_model
    from gradmix.train import check_method
    from gradmix.contrastive.runs import check_method as check_contrastive

    model = build_model(cfg.model, 3, 2)
    for m in cfg.pipeline_methods:
        check_method(cfg.method(m), model)
    encoder = build_model(encoder_config(cfg), 3, 2)
    for m in cfg.contrastive.pipeline:
        check_contrastive(cfg.contrastive.method(m), encoder)
    assert cfg.contrastive.train.encoder == "resnet18" and cfg.teacher.name == "resnet18"


def test_vaze_settings_of_the_ce_track(tmp_path):
    tin = config.load(with_profile(tmp_path, "paper_tinyimagenet"))
    assert (tin.model.name, tin.data.image_size, tin.train.optimizer, tin.train.lr) == ("vgg32", 64, "adam", 0.01)
    # Vaze's smoothing 0.9 puts 0.1 on the true class and 0.9/19 elsewhere; ours must give the same target
    eps, k = tin.train.label_smoothing, 20
    assert math.isclose(1 - eps + eps / k, 0.1) and math.isclose(eps / k, 0.9 / 19)
    c10 = config.load(with_profile(tmp_path, "paper_cifar10"))
    assert (c10.train.epochs, c10.train.schedule, c10.train.restarts, c10.train.warmup_epochs) == (600, "cosine_restarts", 2, 10)
    assert (c10.train.optimizer, c10.train.lr, c10.train.weight_decay, c10.train.batch_size) == ("sgd", 0.1, 1e-4, 128)
    rob = config.load(with_profile(tmp_path, "paper_robustness"))
    assert rob.data.known == "all" and rob.corruption.source == "cifar10c" and len(rob.corruption.corruptions) == 15
    assert rob.ood.near == ("cifar100", "tinyimagenet") and rob.ood.far == ("mnist", "svhn", "dtd", "places365")


def test_bad_profiles_fail_naming_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'paper_imagenet'.*paper_cifar10"):
        config.load(with_profile(tmp_path, "paper_imagenet"))
    with pytest.raises(ConfigError, match="cannot override \\['pipeline'\\]"):
        config.load(with_profile(tmp_path, "x", {"default": {}, "x": {"pipeline": {"methods": ["erm"]}}}))
    with pytest.raises(ConfigError, match="train.optimizer: unknown value 'lamb'"):
        config.load(with_profile(tmp_path, "x", {"default": {}, "x": {"train": {"optimizer": "lamb"}}}))
    merged = config.load(with_profile(tmp_path, "x", {"default": {}, "x": {"methods": {"mixup": {"alpha": 0.2}}}}))
    assert merged.method("mixup").options.alpha == 0.2 and merged.method("mixup").options.prob == 1.0   # deep merge


def test_cosine_restarts_schedule_follows_vaze():
    t = TrainConfig(epochs=30, schedule="cosine_restarts", restarts=2, warmup_epochs=2, min_lr_factor=1e-3, lr=1.0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_schedule(opt, t, steps_per_epoch=1)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    cyc = lambda s: 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * (s % 10) / 10))  # noqa: E731
    assert lrs[0] == pytest.approx(1e-3 + (cyc(2) - 1e-3) / 2)      # warm-up: linear from the floor ...
    assert lrs[1] == pytest.approx(cyc(2))                          # ... to the cycle's value at its end
    assert lrs[2:] == pytest.approx([cyc(s) for s in range(2, 30)])
    assert lrs[10] == pytest.approx(1.0) and lrs[20] == pytest.approx(1.0)   # restarts every 10 epochs


def test_data_dvc_tracks_the_data_folder_coherently(tmp_path, monkeypatch, capsys):
    dvc = yaml.safe_load((ROOT / "data.dvc").read_text())
    out = dvc["outs"][0]
    assert out["path"] == "data" and out["md5"].endswith(".dir")
    ignore = (ROOT / ".dvcignore").read_text()
    assert "/data/prepared/" in ignore and "/data/quarantine/" in ignore
    dvcyaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvcyaml["stages"].items():        # no stage may depend on or write into data/
        items = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", []) + stage.get("outs", [])]
        assert not any(p == "data" or p.startswith("data/") for p in items), name
    # offline, the fetch command for the embedded default downloads nothing and writes data/README.md
    from gradmix.prepare import main

    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(ROOT / "params.yaml"), "--profile", "default"]) == 0
    assert "0 file(s)" in capsys.readouterr().out
    files = sorted(p for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert [p.name for p in files] == ["README.md"]
    if out["nfiles"] == 1:   # as committed, data.dvc records exactly that folder (DVC's .dir hash)
        entry = [{"md5": hashlib.md5(files[0].read_bytes()).hexdigest(), "relpath": "README.md"}]
        assert out["md5"] == hashlib.md5(json.dumps(entry, sort_keys=True).encode()).hexdigest() + ".dir"
