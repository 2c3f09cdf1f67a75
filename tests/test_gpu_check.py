"""bench/gpu_check.py (make gpu-check): without CUDA it says so and writes nothing; its logic runs on the
CPU with --device cpu --quick; time boxes skip with a note and keep what was measured; speed knobs a
gradmix lacks are skipped by name. No timing is asserted."""
import dataclasses
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from gradmix import config
from gradmix.mixing import GradMixOptions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_0(gc, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "bench_cuda.json"
    assert gc.main(["--out", str(out)]) == 0
    assert "no CUDA device here" in capsys.readouterr().out and not out.exists()


def test_quick_cpu_run_measures_and_writes_json(gc, tmp_path, capsys):
    out = tmp_path / "bench_cuda.json"
    assert gc.main(["--device", "cpu", "--quick", "--parts", "bench,epoch", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["quick"] and r["environment"]["device"] == "cpu" and "tests" not in r
    have = r["environment"]["knobs"]
    # every grid point is a row or a skip that names the missing knob
    grid = gc.bench_grid(quick=True)
    rows = {(x["model"], x["batch"], x["precision"], x["channels_last"]) for x in r["bench"]["rows"]}
    for pt in grid:
        if (pt["model"], pt["batch"], pt["precision"], pt["channels_last"]) not in rows:
            assert any("is not a knob of this gradmix" in s for s in r["bench"]["skipped"])
            assert not (have["train.precision"] and have["train.channels_last"])
    assert ("resnet18", 4, "fp32", False) in rows and ("small_cnn", 8, "fp32", False) in rows
    for row in r["bench"]["rows"]:
        assert row["bench"]["setup"]["batch_size"] == row["batch"] and row["bench"]["setup"]["model"] == row["model"]
        assert row["images_per_s"] == pytest.approx(row["batch"] / (row["erm_ms"] / 1000))
        sep = row["gradmix"]["separate"]
        assert sep["over_erm"] == pytest.approx(sep["ms"] / row["erm_ms"])
        assert ("shared" in row["gradmix"]) == have["gradmix.attribution_pass"]
    epochs = {(x["method"], x["precision"]): x for x in r["epoch"]["rows"]}
    assert {("erm", "fp32"), ("gradmix_separate", "fp32")} <= set(epochs)
    erm = epochs[("erm", "fp32")]
    assert erm["train_images"] == 256 and erm["steps_per_epoch"] == 256 // 32 and erm["epoch_s"] > 0
    assert "step benchmark" in said and "epochs of the real trainer" in said and str(out) in said


def test_time_box_skips_the_rest_and_keeps_what_was_measured(gc, tmp_path):
    report = gc.Report(tmp_path / "r.json", {})
    points = [{"n": 1}, {"n": 2}, {"n": 3}]

    def fn(pt):
        if pt["n"] == 2:
            time.sleep(5)
        return {"n": pt["n"]}

    part = gc.measure(points, fn, time.perf_counter() + 1.5, report, "bench")
    assert part["rows"] == [{"n": 1}]
    assert part["skipped"][0].startswith("2 point(s) from n=2 on: time box")
    assert json.loads((tmp_path / "r.json").read_text())["bench"]["rows"] == [{"n": 1}]


def test_a_broken_point_is_recorded_and_the_others_run(gc, tmp_path):
    report = gc.Report(tmp_path / "r.json", {})
    part = gc.measure([{"n": 1}, {"n": 2}], lambda pt: 1 / (pt["n"] - 1), time.perf_counter() + 30, report, "epoch")
    assert part["rows"] == [1.0] and part["skipped"] == ["n=1: error ZeroDivisionError: division by zero"]


def test_bench_results_of_either_bench_version_are_summarised(gc):
    one = {"step_seconds": {"erm": 0.01, "gradmix": 0.03, "gradmix_random": 0.02}, "attribution_overhead": 1.0}
    row = gc.bench_summary(one, 128, None)
    assert row["gradmix"] == {"separate": {"ms": 30.0, "over_erm": 3.0, "overhead": 1.0}}
    assert row["erm_ms"] == 10.0 and row["images_per_s"] == 12800
    both = {"step_seconds": {"erm": 0.01}, "peak_memory_mb": {"erm": 512.0},
            "attribution": {o: {p: {"gradmix_ms": 20.0 + i, "gradmix_to_erm": 2.0 + i, "overhead": 0.1 * i}
                                for i, p in enumerate(("separate", "shared"))} for o in ("gt_logit", "ce")}}
    row = gc.bench_summary(both, 64, 1.5)
    assert set(row["gradmix"]) == {"separate", "shared", "separate, ce", "shared, ce"}
    assert row["gradmix"]["shared"] == {"ms": 21.0, "over_erm": 3.0, "overhead": 0.1}
    assert row["erm_peak_gib"] == 0.5 and row["peak_gib"] == 1.5


def test_knobs_are_read_through_the_config(gc):
    cfg = config.load(ROOT / "params.yaml")
    assert gc.knobs(cfg, precision="fp32", channels_last=False).train.epochs == cfg.train.epochs
    if "precision" in {f.name for f in dataclasses.fields(config.TrainConfig)}:
        assert gc.knobs(cfg, precision="bf16").train.precision == "bf16"
    else:
        with pytest.raises(gc.Missing, match="train.precision is not a knob"):
            gc.knobs(cfg, precision="bf16")
    skipped = []
    cfg2, modes = gc.with_methods(cfg, ("layer3", "layer4"), skipped)
    assert cfg2.method("gradmix_separate").options.stages == ("layer3", "layer4")
    assert cfg2.method("gradmix_random").options.centre == "random"
    if "attribution_pass" in {f.name for f in dataclasses.fields(GradMixOptions)}:
        assert modes == ["separate", "shared"] and cfg2.method("gradmix_shared").options.attribution_pass == "shared"
    else:
        assert modes == ["separate"] and "attribution_pass is not an option" in skipped[0]


def test_junit_and_verbose_outcomes(gc, tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text("""<testsuites><testsuite>
      <testcase classname="tests.test_cuda" name="test_a" time="1.5"><system-out>x
gpu-check: ops flagged: none</system-out></testcase>
      <testcase classname="tests.test_cuda" name="test_b" time="0.1"><failure message="assert 1 == 2">tb</failure></testcase>
      <testcase classname="tests.test_cuda" name="test_c" time="0"><skipped message="needs a CUDA device"/></testcase>
    </testsuite></testsuites>""")
    r = gc.parse_junit(xml)
    assert (r["passed"], r["failed"], r["skipped"]) == (1, 1, 1)
    assert r["cases"][0] == {"test": "tests/test_cuda.py::test_a", "outcome": "passed", "seconds": 1.5, "message": "",
                             "notes": ["ops flagged: none"]}
    assert r["cases"][1]["message"] == "assert 1 == 2"
    v = gc.parse_verbose("tests/test_cuda.py::test_a PASSED [ 50%]\ntests/test_cuda.py::test_b FAILED [100%]\n")
    assert (v["passed"], v["failed"]) == (1, 1)
