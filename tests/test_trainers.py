"""gradmix.trainers: one entry point trains any method by name, each with its own trainer."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from gradmix import config, teacher, train, trainers
from gradmix.config import ConfigError
from gradmix.contrastive import runs as contrastive_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    cfg = config.load(ROOT / "params.yaml", smoke=True)
    return config.replace(cfg, data={"max_train": 96, "image_size": 12}, teacher={"dir": "", "width": 4},
                          contrastive={"train": {"batch_size": 32}, "probe": {"epochs": 2}})


def scores(run_dir):
    z = np.load(run_dir / "scores.npz")
    return {k: z[k] for k in z.files}


def test_tracks_of_the_repository_methods(tiny):
    assert trainers.track(tiny, "erm") == "ce" and trainers.track(tiny, "gradmix") == "ce"
    assert trainers.track(tiny, "asymkd") == "distill"
    assert trainers.track(tiny, "supcon_gradmix") == "contrastive"
    assert trainers.method_names(tiny) == list(tiny.methods) + list(tiny.contrastive.methods)
    with pytest.raises(ConfigError, match=r"unknown method 'supcon'; valid methods: \[.*'asymkd'.*'supcon_none'"):
        trainers.track(tiny, "supcon")


def test_each_track_runs_its_own_trainer(tiny, tmp_path):
    ce = trainers.train_run(tiny, "erm", 0, 0, tmp_path / "erm")
    direct = train.train_run(tiny, "erm", 0, 0, tmp_path / "erm_direct")
    assert all(np.array_equal(v, scores(direct)[k]) for k, v in scores(ce).items())

    student = trainers.train_run(tiny, "asymkd", 0, 0, tmp_path / "asymkd")
    hooked = train.train_run(tiny, "asymkd", 0, 0, tmp_path / "hooked",
                             loss=teacher.student_loss(tiny, tiny.method("asymkd")))
    assert np.array_equal(scores(student)["logits_known"], scores(hooked)["logits_known"])
    assert not np.allclose(scores(student)["logits_known"], scores(ce)["logits_known"])  # not plain CE

    cl = trainers.train_run(tiny, "supcon_none", 0, 0, tmp_path / "supcon_none")
    assert json.loads((cl / "config.json").read_text())["run"]["track"] == contrastive_runs.TRACK
    assert "score_knn_known" in scores(cl) and "logits_known" not in scores(cl)


def test_the_trainer_refuses_a_student_without_its_loss(tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"methods.asymkd: kind 'distill'.*gradmix.trainers"):
        train.train_run(tiny, "asymkd", 0, 0, tmp_path / "run")
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="kind 'ce'; a student needs kind 'distill'"):
        teacher.train_student(tiny, "erm", 0, 0, tmp_path / "run")


def test_every_method_is_checked_before_the_first_run(tiny, tmp_path):
    r = tiny.to_dict()
    r["contrastive"]["methods"]["supcon_gradmix"]["options"]["stages"] = ["layer4"]
    bad = config.from_dict(r)
    with pytest.raises(ConfigError, match=r"supcon_gradmix.options.stages: 'layer4'.*stage1"):
        trainers.train_methods(bad, ["erm", "supcon_gradmix"], tmp_path)
    r = tiny.to_dict()
    r["methods"]["gradmix"]["stages"] = ["block3"]
    with pytest.raises(ConfigError, match=r"methods.gradmix.stages: 'block3'.*stage1"):
        trainers.train_methods(config.from_dict(r), ["erm", "gradmix"], tmp_path)
    missing = config.replace(tiny, teacher={"dir": str(tmp_path / "no-teachers")})
    with pytest.raises(FileNotFoundError, match="no trained teacher"):
        trainers.train_methods(missing, ["erm", "asymkd"], tmp_path)
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        trainers.train_methods(tiny, ["erm", "nope"], tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_name_in_both_tracks_is_refused():
    r = yaml.safe_load((ROOT / "params.yaml").read_text())
    r["contrastive"]["methods"]["erm"] = {"gamma": 1.0, "mu": 1.0, "view": "none"}
    with pytest.raises(ConfigError, match=r"methods and contrastive.methods both define \['erm'\]"):
        config.from_dict(r)
