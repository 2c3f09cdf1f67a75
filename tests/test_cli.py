"""The command line, the precedence of explicit values over profiles, params.yaml as DVC rewrites it,
the stage plan and the notebook runner."""
import difflib
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from gradmix import cli, config, plan
from gradmix.config import ConfigError

import fakes

ROOT = Path(__file__).resolve().parents[1]
PROFILES = yaml.safe_load((ROOT / "params_paper.yaml").read_text())


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def params_copy(tmp_path, **changes):
    """params.yaml and params_paper.yaml in tmp_path; ``changes`` as dvc exp run -S would write them."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "params_paper.yaml", tmp_path / "params_paper.yaml")
    if changes:
        from dvc.utils.hydra import apply_overrides

        apply_overrides(str(tmp_path / "params.yaml"), [f"{k}={v}" for k, v in changes.items()])
    return tmp_path / "params.yaml"


# --- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["config"], ["download"], ["check-results"]])
def test_every_subcommand_has_help(capsys, command):
    if command == ["download"]:                  # gradmix.download's own parser exits
        with pytest.raises(SystemExit) as e:
            cli.main([*command, "--help"])
        code = e.value.code
    else:
        code = cli.main([*command, "--help"])
    out = capsys.readouterr().out
    assert code == 0 and "usage:" in out
    expected = {"train": "--method", "evaluate": "--runs", "config": "--set", "download": "--profile",
                "check-results": "--se-factor"}
    assert (expected.get(command[0]) if command else "evaluate") in out


def test_module_and_console_script_run_the_same_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"gradmix": "gradmix.cli:main"}
    r = subprocess.run([sys.executable, "-m", "gradmix", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "config" in r.stdout


@pytest.mark.parametrize("argv, message", [
    (["config", "--set", "train.epoch=3"], "unknown key(s) ['epoch']"),
    (["config", "--set", "train.epochs"], "expected key=value"),
    (["config", "--set", "train.epochs.x=1"], "train.epochs is 15, not a section"),
    (["config", "--set", "data.splits=[0,"], "not valid YAML"),
    (["config", "--params", "no/such/params.yaml"], "params file not found"),
    (["train", "--method", "gridmix", "--out", "unused"], "unknown method 'gridmix'"),
    (["train", "--method", "erm", "--split", "9", "--out", "unused"], "split 9"),
    (["evaluate", "no/such/run"], "no/such/run"),
    (["train", "--method", "erm"], "required: --out"),
])
def test_ordinary_errors_print_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (ROOT / "unused").exists()


TINY_TRAIN = ["--set", "data.max_train=48", "--set", "data.image_size=12", "--set", "train.epochs=1",
              "--set", "train.batch_size=16", "--set", "train.checkpoint_dir=", "--set", "train.progress=false"]


def test_a_diverged_run_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch):
    """Errors raised during training (not only config errors) are named in one line, no traceback."""
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli(capsys, "train", "--method", "erm", "--split", "0", "--out", str(tmp_path),
                             *TINY_TRAIN, "--set", "train.lr=1e6")
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("gradmix train: error: erm/split0-seed0 (method erm, split 0, seed 0): the ")
    assert "train.lr 1000000.0" in err
    assert not (tmp_path / "erm" / "split0-seed0").exists()


def test_a_locked_run_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch):
    from gradmix.checkpoint import RunLock, checkpoint_folder

    monkeypatch.chdir(ROOT)
    out = tmp_path / "erm" / "split0-seed0"
    lock = checkpoint_folder(out, "") / "writer.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from gradmix.checkpoint import RunLock; "
                               "RunLock(sys.argv[1], 'erm/split0-seed0').acquire(); print('locked', flush=True); "
                               "time.sleep(600)", str(lock)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_cli(capsys, "train", "--method", "erm", "--split", "0", "--out", str(tmp_path),
                               *TINY_TRAIN)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"another process is writing this run (pid {holder.pid}" in err and str(lock) in err


def test_config_shows_explicit_set_over_the_profile(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli(capsys, "config", "--set", "profile.name=paper_cifar10", "--set", "train.epochs=10")
    assert code == 0 and err == ""
    assert out.splitlines()[0] == "# train.epochs=10 (--set) overrides profile paper_cifar10's 600"
    shown = yaml.safe_load(out)
    assert shown["train"]["epochs"] == 10 and shown["data"]["dataset"] == "cifar10"
    assert shown["train"]["lr"] == 0.1 and shown["model"]["name"] == "vgg32"      # the rest: the profile
    # the printed YAML is a valid params file that loads to the same configuration
    assert config.from_dict(shown) == config.load(ROOT / "params.yaml",
                                                  overrides={"profile.name": "paper_cifar10", "train.epochs": 10})


def test_a_profile_value_that_no_longer_fits_says_where_it_comes_from():
    with pytest.raises(ConfigError, match=r"warmup_epochs: 10 .*comes from profile paper_cifar10; set it too"):
        config.load(ROOT / "params.yaml", overrides=["profile.name=paper_cifar10", "train.epochs=5"])
    cfg = config.load(ROOT / "params.yaml", overrides=["profile.name=paper_cifar10", "train.epochs=5",
                                                       "train.warmup_epochs=1"])
    assert (cfg.train.epochs, cfg.train.warmup_epochs) == (5, 1)


# --- explicit beats profile -----------------------------------------------------------------------

def test_dvc_set_value_beats_the_profile_and_says_so(tmp_path):
    """What `dvc exp run -S profile.name=paper_cifar10 -S train.epochs=10 -S data.splits=[0,1]` runs."""
    path = params_copy(tmp_path, **{"profile.name": "paper_cifar10", "train.epochs": 10, "data.splits": "[0,1]"})
    cfg = config.load(path)
    assert cfg.train.epochs == 10 and cfg.data.splits == (0, 1)
    assert cfg.data.dataset == "cifar10" and cfg.train.lr == 0.1 and cfg.train.batch_size == 128
    assert cfg.overridden == ("data.splits=[0, 1] (params.yaml) overrides profile paper_cifar10's [0, 1, 2, 3, 4]",
                              "train.epochs=10 (params.yaml) overrides profile paper_cifar10's 600")
    # a value left at (or set back to) its built-in default is not explicit: the profile's stands
    cfg = config.load(params_copy(tmp_path, **{"profile.name": "paper_cifar10", "train.epochs": 15}))
    assert cfg.train.epochs == 600 and cfg.overridden == ()
    # --set is always explicit, even at the default value
    cfg = config.load(path, overrides=["train.epochs=15"])
    assert cfg.train.epochs == 15


def test_method_options_follow_the_same_rule(tmp_path):
    """methods.<m>.<option>: explicit when it differs from the mixer's default."""
    path = params_copy(tmp_path, **{"profile.name": "paper_mnist", "methods.gradmix.stages": "[block3]"})
    cfg = config.load(path)
    assert cfg.method("gradmix").options.stages == ("block3",)                  # explicit
    assert cfg.method("gradmix_random").options.stages == ("block2", "block3")  # the profile's
    assert cfg.overridden == ("methods.gradmix.stages=[block3] (params.yaml) overrides profile paper_mnist's "
                              "[block2, block3]",)


def test_shipped_params_never_override_a_profile():
    """With params.yaml as shipped, every profile resolves to params.yaml with the profile merged over
    it: nothing a profile sets is explicit in params.yaml."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, over in PROFILES.items():
        cfg = config.load(ROOT / "params.yaml", profile=name)
        assert cfg.overridden == (), name
        expected = config.from_dict(config.merge({**raw, "profile": {**raw["profile"], "name": name}}, over or {}))
        assert cfg == expected, name


def test_params_yaml_is_the_builtin_defaults():
    """Every knob is in params.yaml, at its built-in default: the dataclass sections equal their defaults
    and every method writes out each option of its mixer (or view)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    defaults = config.builtin_defaults(raw)
    for section in ("data", "model", "train", "evaluate", "bench", "ood", "corruption", "profile", "teacher"):
        assert raw[section] == defaults[section], section
    for section in ("train", "views", "knn", "probe"):
        assert raw["contrastive"][section] == defaults["contrastive"][section], section
    for name, m in raw["methods"].items():
        options = set(defaults["methods"][name]) - {"use", "kind", "distill"}
        assert options <= set(m), (name, options - set(m))
        if m.get("kind") == "distill":
            assert set(m["distill"]) == set(defaults["methods"][name]["distill"])
    for name, m in raw["contrastive"]["methods"].items():
        assert set(defaults["contrastive"]["methods"][name].get("options", {})) <= set(m.get("options", {})), name
    assert config.Config().to_dict()["data"] == config.load(ROOT / "params.yaml").to_dict()["data"]


def _without_method_blocks(lines):
    """The lines outside ``methods:`` and ``contrastive.methods:`` (which hold the YAML merge keys)."""
    out, skip = [], None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if skip is not None and line.strip() and indent <= skip:
            skip = None
        if skip is None and line.strip().startswith("methods:") and line.strip() != "methods: []" \
                and not line.split("#")[0].strip().endswith("[]"):
            skip = indent
            continue
        if skip is None:
            out.append(line)
    return out


@pytest.mark.parametrize("overrides", [["train.epochs=10"], ["data.splits=[0,1]", "profile.name=paper_cifar10"]])
def test_dvc_rewrites_params_yaml_without_noise(tmp_path, overrides):
    """`dvc exp run -S` rewrites params.yaml with ruamel: outside the method sections only the set lines
    change; the method variants written with merge keys (`<<: *gradmix`) come back written out in full
    (DVC resolves the merge keys), with the same values, so the rewritten file means the same config."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    shutil.copy(ROOT / "params_paper.yaml", tmp_path / "params_paper.yaml")
    apply_overrides(str(path), overrides)
    before, after = (ROOT / "params.yaml").read_text().splitlines(), path.read_text().splitlines()
    changed = [d[1:] for d in difflib.unified_diff(_without_method_blocks(before), _without_method_blocks(after),
                                                   lineterm="", n=0)
               if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    expected = {"train.epochs=10": ["  epochs: 10", "  epochs: 15"],
                "data.splits=[0,1]": ["  - 2", "  - 3", "  - 4"],
                "profile.name=paper_cifar10": ["  name: paper_cifar10", "  name: default"]}
    assert sorted(changed) == sorted(line for o in overrides for line in expected[o])
    assert config.load(path).to_dict() == config.load(ROOT / "params.yaml", overrides=overrides).to_dict()


# --- plan and device --------------------------------------------------------------------------------

def test_plan_lines_and_cpu_fallback_warning(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = config.load(ROOT / "params.yaml", overrides=["data.splits=[0,2]", "train.seeds=[3]"])
    assert plan.plan_lines(cfg, ["erm", "gradmix", "supcon_none"], out="runs") == [
        "2 methods (erm, gradmix): 2 splits [0, 2] × seed 3 × 15 epochs = 4 runs -> runs",
        "supcon_none: 2 splits [0, 2] × seed 3 × 12 epochs = 2 runs -> runs/supcon_none"]
    assert plan.device_line(cfg) == "device: cpu (train.device=auto: no CUDA device)"
    assert plan.cpu_fallback_warning(cfg) is None                          # the embedded default: fine
    paper = config.load(ROOT / "params.yaml", profile="paper_cifar10")
    plan.announce(paper, ["gradmix"], "train")
    out, err = capsys.readouterr()
    assert out.startswith("train: device: cpu") and "600 epochs = 5 runs" in out
    assert err.count("\n") == 1 and "profile paper_cifar10" in err and "trains on the CPU" in err
    assert plan.cpu_fallback_warning(config.replace(paper, train={"device": "cpu"})) is None


# --- train and evaluate through the command line --------------------------------------------------

def fake_run(path: Path, method: str, split: int, logits_known, labels_known, logits_unknown):
    """A finished run directory with hand-made logits (what gradmix.evaluate reads)."""
    path.mkdir(parents=True)
    info = {"method": method, "split": split, "seed": 0, "dataset": "digits"}
    (path / "config.json").write_text(json.dumps({"run": info}))
    np.savez(path / "scores.npz", logits_known=np.asarray(logits_known, dtype=np.float32),
             labels_known=np.asarray(labels_known), logits_unknown=np.asarray(logits_unknown, dtype=np.float32),
             labels_unknown=np.zeros(len(logits_unknown), dtype=np.int64))
    return fakes.seal(path, info)


def test_evaluate_json_on_fabricated_runs(capsys, tmp_path):
    # MLS scores: known [2, 3, 1, 0.5] (predictions 0, 1, 0, 1 for labels 0, 1, 0, 0), unknown [0.2, 1.5, 0.4]
    a = fake_run(tmp_path / "runs/erm/split0-seed0", "erm", 0, [[2, 0], [0, 3], [1, 0], [0, 0.5]], [0, 1, 0, 0],
                 [[0.2, 0.1], [1.5, 0], [0, 0.4]])
    # all known above all unknown, every prediction right
    fake_run(tmp_path / "runs/erm/split1-seed0", "erm", 1, [[5, 0], [0, 4]], [0, 1], [[1, 0], [0, 2]])
    code, out, _ = run_cli(capsys, "evaluate", str(a), "--json", "--scores", "mls")
    row = json.loads(out)["runs"][0]
    assert code == 0 and row["accuracy"] == 0.75 and row["auroc_mls"] == pytest.approx(10 / 12)
    code, out, _ = run_cli(capsys, "evaluate", "--runs", str(tmp_path / "runs"), "--scores", "mls", "--json")
    auroc = json.loads(out)["metrics"]["digits"]["erm"]["auroc_mls"]
    assert auroc["n"] == 2 and auroc["mean"] == pytest.approx((10 / 12 + 1) / 2)
    code, out, _ = run_cli(capsys, "evaluate", "--runs", str(tmp_path / "runs"))
    assert code == 0 and "auroc_mls" in out and "mean over splits and seeds" in out


def test_train_one_run_then_evaluate(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli(capsys, "train", "--method", "erm", "--split", "1", "--out", str(tmp_path),
                             "--smoke", "--set", "data.max_train=64")
    run = tmp_path / "erm" / "split1-seed0"
    assert code == 0 and out.splitlines()[-1] == str(run)
    assert "erm: split 1 × seed 0 × 1 epoch = 1 run" in out and out.startswith("gradmix train: device: ")
    assert json.loads((run / "config.json").read_text())["run"]["split"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["erm"]
    code, out, _ = run_cli(capsys, "evaluate", "--runs", str(tmp_path), "--json")
    assert code == 0 and json.loads(out)["runs"][0]["method"] == "erm"


# --- the notebook runner ----------------------------------------------------------------------------

def tiny_notebook(path: Path, fail: bool) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import sys\nprint('plan line', x)\nprint('epoch 1', file=sys.stderr)"),
                nbformat.v4.new_code_cell("raise ValueError('boom')" if fail else "y = x + 1")]
    nbformat.write(nb, path)
    return path


def test_notebook_runner_streams_output_and_renames_only_when_complete(tmp_path, capfd):
    from gradmix import notebook

    ok = tiny_notebook(tmp_path / "ok.ipynb", fail=False)
    out = tmp_path / "results" / "ok.ipynb"
    out.parent.mkdir()
    out.write_text("a stale notebook from an earlier run")
    assert notebook.main([str(ok), str(out), "-p", "x", "41"]) == 0
    stdout, stderr = capfd.readouterr()
    assert "plan line 41" in stdout and "epoch 1" in stderr                 # the kernel's output, live
    assert "without encryption" not in stderr or not notebook.kernel_config()
    executed = nbformat.read(out, as_version=4)
    assert any("plan line 41" in o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert not (tmp_path / "results/ok.part.ipynb").exists()

    bad = tiny_notebook(tmp_path / "bad.ipynb", fail=True)
    out = tmp_path / "results" / "bad.ipynb"
    out.write_text("a stale notebook from an earlier run")
    assert notebook.main([str(bad), str(out)]) == 1
    _, stderr = capfd.readouterr()
    assert "ValueError: boom" in stderr and "bad.part.ipynb" in stderr
    assert not out.exists() and (tmp_path / "results/bad.part.ipynb").exists()
    assert [notebook.parse_value(v) for v in ("False", "None", "3", "0.5", "runs")] == [False, None, 3, 0.5, "runs"]
