"""Bad input fails before any work, naming the bad value and the valid choices."""
import pytest
import yaml

from gradmix import config
from gradmix.config import ConfigError


def raw(params_file):
    return yaml.safe_load(params_file.read_text())


def test_repository_params_validate(params_file):
    cfg = config.load(params_file)
    assert cfg.pipeline_methods and all(m in cfg.methods for m in cfg.pipeline_methods)
    smoke = config.load(params_file, smoke=True)
    assert smoke.train.epochs == 1 and smoke.data.splits == (0,)
    assert smoke.methods == cfg.methods


@pytest.mark.parametrize("section, key, value, expect", [
    ("data", "dataset", "imagenet-42", ["'imagenet-42'", "digits"]),
    ("model", "name", "vit", ["'vit'", "small_cnn", "resnet18", "vgg32"]),
    ("data", "splits", [0, 5], ["split 5", "[0, 4]"]),
    ("train", "epochs", 0, ["train.epochs", "0"]),
    ("train", "batch_size", -8, ["train.batch_size"]),
    ("train", "optimizer", "lamb", ["'lamb'", "adam", "sgd"]),
    ("train", "epochs", "ten", ["train.epochs", "integer"]),
    ("evaluate", "scores", ["msp", "energy"], ["'energy'", "mls", "msp"]),
])
def test_bad_values_name_the_valid_choices(params_file, section, key, value, expect):
    r = raw(params_file)
    r[section][key] = value
    with pytest.raises(ConfigError) as e:
        config.from_dict(r)
    for text in expect:
        assert text in str(e.value)


def test_unknown_key_lists_valid_keys(params_file):
    r = raw(params_file)
    r["train"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\].*epochs"):
        config.from_dict(r)


def test_unknown_method_and_mixer(params_file):
    r = raw(params_file)
    cfg = config.from_dict(r)
    with pytest.raises(ConfigError, match=r"unknown method 'gridmix'.*gradmix"):
        cfg.method("gridmix")
    r["methods"]["bad"] = {"mixer": "mixdown"}
    with pytest.raises(ConfigError, match=r"'mixdown'.*cutmix"):
        config.from_dict(r)
    r = raw(params_file)
    r["pipeline"]["methods"] = ["erm", "nope"]
    with pytest.raises(ConfigError, match=r"pipeline.methods.*'nope'"):
        config.from_dict(r)


def test_mixer_options_validated(params_file):
    r = raw(params_file)
    r["methods"]["gradmix"]["fill"] = "paint"
    with pytest.raises(ConfigError, match=r"gradmix.fill.*'paint'.*colocated.*noise.*partner"):
        config.from_dict(r)
    r = raw(params_file)
    r["methods"]["cutmix"]["prob"] = 1.5
    with pytest.raises(ConfigError, match="cutmix.prob"):
        config.from_dict(r)
    r = raw(params_file)
    r["methods"]["gradmix"]["lam_span"] = 0.7   # 0.5 + 0.7 > 1
    with pytest.raises(ConfigError, match="lam_span"):
        config.from_dict(r)


def test_missing_and_corrupt_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)


def test_replace_revalidates(cfg):
    assert config.replace(cfg, train={"epochs": 3}).train.epochs == 3
    with pytest.raises(ConfigError, match="train.epochs"):
        config.replace(cfg, train={"epochs": -1})


def test_unknown_stage_fails_before_training(cfg, tmp_path):
    from gradmix import train

    r = cfg.to_dict()
    r["methods"]["gradmix"]["stages"] = ["layer4"]
    bad = config.apply_smoke(config.from_dict(r))
    with pytest.raises(ConfigError, match=r"'layer4'.*stage1.*stage2.*stage3"):
        train.train_run(bad, "gradmix", 0, 0, tmp_path / "run")
    assert not any(tmp_path.iterdir()), "nothing may be written when the config is bad"
