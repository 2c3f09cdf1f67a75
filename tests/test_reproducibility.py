"""Numbers that reproduce (issue 8 §6): the thread count pinned by every stage and recorded with the CPU
and library versions in each run; fresh metrics compared with committed ones within a measured
tolerance (gradmix.reproduce, `gradmix check-results`, `make check-results`)."""
import json
import math

import pytest
import torch

from gradmix import cli, config, reproduce, train

from conftest import ROOT

REFERENCE = ROOT / "tests" / "reference" / "tiny_metrics.json"


def test_load_pins_the_thread_count_of_params(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cfg = config.load(ROOT / "params.yaml")
        assert cfg.train.threads == 2 and torch.get_num_threads() == 2
        config.load(ROOT / "params.yaml", overrides=["train.threads=1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(config.ConfigError, match=r"train.threads: 0 is out of range"):
        config.replace(cfg, train={"threads": 0})


def test_a_run_records_threads_cpu_and_library_versions(tmp_path):
    cfg = config.replace(config.load(ROOT / "params.yaml", smoke=True), data={"max_train": 48, "image_size": 8},
                         train={"threads": 1})
    torch.set_num_threads(2)                     # the trainer pins train.threads itself
    run = train.train_run(cfg, "erm", 0, 0, tmp_path / "erm" / "split0-seed0")
    info = json.loads((run / "config.json").read_text())["run"]
    assert info["threads"] == 1 and torch.get_num_threads() == 1
    assert info["cpu"] and info["python"] and info["torch"] == torch.__version__
    libs = info["libraries"]
    assert {"torch", "torchvision", "numpy", "scikit-learn", "scipy", "kornia", "pillow"} <= set(libs)
    assert libs["numpy"] and libs["scikit-learn"] and libs["torch"]


def metrics(mean, n=5, **extra):
    return {"digits": {"erm": {"auroc_mls": {"mean": mean, "std": 0.1, "n": n},
                               "accuracy": {"mean": 0.99, "std": 0.0, "n": n}, **extra}}}


def test_compare_hand_made():
    ref = metrics(0.930)                     # std 0.1 over n = 5: standard error 0.0447, allowed 3 x that
    assert reproduce.allowed(ref["digits"]["erm"]["auroc_mls"]) == pytest.approx(3 * 0.1 / 5 ** 0.5)
    assert reproduce.compare(metrics(0.930 + 0.134), ref) == []
    (problem,) = reproduce.compare(metrics(0.930 + 0.135), ref)
    assert problem == "digits/erm/auroc_mls: mean 1.06500 vs reference 0.93000 (|diff| 0.13500 > 0.13416)"
    (problem,) = reproduce.compare(metrics(0.945), ref, 0.01, se_factor=0)     # an absolute tolerance only
    assert problem.endswith("(|diff| 0.01500 > 0.01000)")
    assert reproduce.compare(metrics(0.93, n=4), ref) == ["digits/erm/auroc_mls: n 4 != reference n 5",
                                                          "digits/erm/accuracy: n 4 != reference n 5"]
    assert reproduce.compare({"digits": {}}, ref) == ["digits/erm: missing (fresh has [])"]
    nan = {"auroc_knn": {"mean": math.nan, "std": math.nan, "n": 5}}
    assert reproduce.compare(metrics(0.93, **nan), metrics(0.93, **nan)) == []
    assert reproduce.compare(metrics(0.93, **nan), metrics(0.93, auroc_knn={"mean": 0.9, "std": 0.0, "n": 5})) != []
    assert reproduce.largest_difference(metrics(0.945), ref) == (pytest.approx(0.015), "digits/erm/auroc_mls")


def test_check_results_command(tmp_path, capsys):
    (tmp_path / "ref.json").write_text(json.dumps(metrics(0.93)))
    (tmp_path / "ok.json").write_text(json.dumps(metrics(0.931)))
    (tmp_path / "far.json").write_text(json.dumps(metrics(1.3)))
    assert cli.main(["check-results", str(tmp_path / "ok.json"), str(tmp_path / "ref.json")]) == 0
    assert "reproduced: largest |difference| of a mean 0.00100 (digits/erm/auroc_mls)" in capsys.readouterr().out
    assert cli.main(["check-results", str(tmp_path / "far.json"), str(tmp_path / "ref.json")]) == 1
    out = capsys.readouterr().out
    assert "NOT REPRODUCED digits/erm/auroc_mls: mean 1.30000" in out and "3.0 standard errors" in out
    assert cli.main(["check-results", str(tmp_path / "nope.json"), str(tmp_path / "ref.json")]) == 2


def test_tiny_profile_reproduces_the_committed_reference(tmp_path):
    """The tiny profile trained here against tests/reference/tiny_metrics.json (written with
    reproduce.tiny_metrics at train.threads 2): within TINY_TOLERANCE on any machine, bit for bit on
    one of the same CPU type, thread count and library versions."""
    fresh = reproduce.tiny_metrics(ROOT / "params.yaml", out_dir=tmp_path)
    reference = json.loads(REFERENCE.read_text())
    assert list(reference["digits"]) == list(reproduce.TINY_METHODS)
    assert reproduce.compare(fresh, reference, reproduce.TINY_TOLERANCE, se_factor=0) == []
