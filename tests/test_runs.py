"""The run life cycle: SIGKILL and resume (bit-identical), one writer per run, finished runs only,
corrupt files named, divergence stopped, per-epoch curves (gradmix.rundir, .checkpoint, .epochlog)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gradmix import checkpoint, config, evaluate, rundir, train, trainers
from gradmix.contrastive import runs as contrastive_runs
from gradmix.checkpoint import CorruptCheckpointError, DivergedError, RunLockedError
from gradmix.epochlog import EpochStats, LiveLog
from gradmix.mixing.boxes import Mixed
from gradmix.rundir import CorruptFileError, IncompleteRunError

ROOT = Path(__file__).resolve().parents[1]

# A training subprocess: the run of argv (track, method, out, overrides as JSON), which sleeps right
# after writing the checkpoint of epoch argv[5] so that the test can SIGKILL it there.
TRAIN = """
import json, sys, time
from gradmix import checkpoint, config, trainers
track, method, out, pause, overrides = sys.argv[1:]
cfg = config.replace(config.load({params!r}, smoke=True), **json.loads(overrides))
save = checkpoint.RunWriter.save
def paused(self, epoch, parts):
    path = save(self, epoch, parts)
    if epoch == int(pause):
        print("saved epoch", epoch, flush=True)
        time.sleep(600)
    return path
checkpoint.RunWriter.save = paused
trainers.train_run(cfg, method, 0, 0, out)
""".format(params=str(ROOT / "params.yaml"))

CE = {"data": {"max_train": 96, "image_size": 12}, "train": {"epochs": 4, "batch_size": 32, "checkpoint_dir": "checkpoints"}}
CL = {"data": {"max_train": 96, "image_size": 12}, "train": {"checkpoint_dir": "checkpoints"},
      "contrastive": {"train": {"epochs": 3, "batch_size": 32}, "probe": {"epochs": 5}}}


def launch(cwd, track, method, out, pause, overrides):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", TRAIN, track, method, out, str(pause), json.dumps(overrides)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(proc, text):
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return "".join(lines)
    raise AssertionError(f"the subprocess ended (rc {proc.wait()}) before printing {text!r}:\n{''.join(lines)}")


def single_threaded(fn, *args):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)           # as the subprocesses (bit-identity holds at a fixed thread count)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke():
    return config.load(ROOT / "params.yaml", smoke=True)


@pytest.mark.parametrize("track, method, overrides, epochs", [("ce", "gradmix", CE, 4),
                                                               ("contrastive", "supcon_gradmix", CL, 3)])
def test_sigkill_and_rerun_ends_bit_identical(smoke, tmp_path, track, method, overrides, epochs):
    """A real training process killed with SIGKILL after epoch 2's checkpoint, then run again with the
    same command, resumes there and writes the scores of an uninterrupted run, byte for byte."""
    out = f"runs/{method}/split0-seed0"
    proc = launch(tmp_path, track, method, out, 2, overrides)
    first = wait_for(proc, "saved epoch 2")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = tmp_path / "checkpoints" / out
    assert json.loads((folder / "checkpoint.json").read_text())["epoch"] == 2
    assert not (tmp_path / out).exists() and (tmp_path / f"{out}.tmp").is_dir()
    assert f"{method}/split0-seed0: training on cpu, epochs 1-{epochs}" in first

    again = launch(tmp_path, track, method, out, 2, overrides)
    log, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log
    assert f"resumed {method}/split0-seed0 from epoch 2 ({Path('checkpoints') / out / 'checkpoint-e00002.pt'})" in log
    assert f"training on cpu, epochs 3-{epochs} of {epochs}" in log

    cfg = config.replace(smoke, **{**overrides, "train": {**overrides["train"], "checkpoint_dir": ""}})
    module = train if track == "ce" else contrastive_runs
    ref = single_threaded(module.train_run, cfg, method, 0, 0, tmp_path / "ref" / method / "split0-seed0")
    run = tmp_path / out
    assert (run / "scores.npz").read_bytes() == (ref / "scores.npz").read_bytes()
    assert (run / "model.pt").read_bytes() == (ref / "model.pt").read_bytes()
    ours, theirs = (np.genfromtxt(d / "log.csv", delimiter=",", names=True) for d in (run, ref))
    assert np.array_equal(ours["loss"], theirs["loss"]) and list(ours["epoch"]) == list(range(1, epochs + 1))
    segments = json.loads((run / "config.json").read_text())["run"]["segments"]
    assert [s["from_epoch"] for s in segments] == [1, 3]
    # the curves hold every epoch once, steps continuing after the resume
    tsv = (run / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().split()
    assert tsv[:2] == ["step", "loss"] and [int(s) for s in tsv[2::2]] == list(range(1, epochs + 1))
    # finished: the checkpoints are gone, a copy of the run is kept for restoring it
    assert not (folder / "checkpoint.json").exists() and (folder / "final" / "complete.json").is_file()
    assert not (tmp_path / f"{out}.tmp").exists()
    assert evaluate.find_runs(tmp_path / "runs", [method], ["split0-seed0"]) == [run.absolute()]


@pytest.fixture(scope="module")
def tiny(smoke):
    return config.replace(smoke, data={"max_train": 96, "image_size": 12}, train={"epochs": 2, "batch_size": 32})


class Interrupt(Exception):
    pass


def interrupted(cfg, method, out, after_epoch=1):
    """Train until the checkpoint of ``after_epoch`` is written, then stop (as a killed run would)."""
    save = checkpoint.RunWriter.save

    def stop(self, epoch, parts):
        path = save(self, epoch, parts)
        if epoch == after_epoch:
            raise Interrupt
        return path

    checkpoint.RunWriter.save = stop
    try:
        with pytest.raises(Interrupt):
            train.train_run(cfg, method, 0, 0, out)
    finally:
        checkpoint.RunWriter.save = save
    return checkpoint.checkpoint_folder(out, cfg.train.checkpoint_dir)


@pytest.mark.parametrize("model, stop, method, precision", [("vgg32", 1, "erm", "fp32"), ("small_cnn", 2, "erm", "fp32"),
                                                             ("small_cnn", 1, "cutmix", "fp16")])
def test_resumed_run_matches_an_uninterrupted_one(tiny, tmp_path, capsys, model, stop, method, precision):
    """vgg32's dropout draws from torch's global RNG, whose state the checkpoint carries; a run stopped
    after its last epoch's checkpoint (before the run was written) only writes the run when resumed.
    CutMix's coin (prob 0.5) and λ come from the run's host generator, fp16's loss scale from its
    gradient scaler: both are in the checkpoint too."""
    cfg = config.replace(tiny, model={"name": model}, data={"max_train": 64}, train={"precision": precision})
    out = tmp_path / "a" / method / "split0-seed0"
    interrupted(cfg, method, out, after_epoch=stop)
    capsys.readouterr()
    train.train_run(cfg, method, 0, 0, out)
    said = capsys.readouterr().out
    assert f"resumed {method}/split0-seed0 from epoch {stop} (" in said
    assert ("all 2 epochs done" in said) == (stop == 2) and ("epoch 2/2" in said) == (stop == 1 and cfg.train.progress)
    ref = train.train_run(cfg, method, 0, 0, tmp_path / "b" / method / "split0-seed0")
    assert (out / "scores.npz").read_bytes() == (ref / "scores.npz").read_bytes()


def test_changed_config_starts_fresh(tiny, tmp_path, capsys):
    out = tmp_path / "erm" / "split0-seed0"
    folder = interrupted(tiny, "erm", out)
    assert json.loads((folder / "checkpoint.json").read_text())["epoch"] == 1
    capsys.readouterr()
    train.train_run(config.replace(tiny, train={"lr": 0.1}), "erm", 0, 0, out)
    said = capsys.readouterr().out
    assert "starting fresh, not resuming" in said and "train.lr 0.05 -> 0.1" in said and "resumed" not in said
    assert "epochs 1-2 of 2" in said
    assert [s["from_epoch"] for s in json.loads((out / "config.json").read_text())["run"]["segments"]] == [1]


def test_knobs_that_change_nothing_keep_the_identity(tiny):
    m = tiny.method("gradmix")
    base = train.run_identity(tiny, m, 0, 0, torch.device("cpu"))
    same = config.replace(tiny, train={"progress": True, "checkpoint_every": 5, "checkpoint_dir": "x", "device": "cpu",
                                       "seeds": [0, 1], "max_data_fraction": 0.9},
                          data={"splits": [0, 1], "root": "elsewhere"})
    assert train.run_identity(same, m, 0, 0, torch.device("cpu")) == base
    for change in ({"train": {"epochs": 3}}, {"data": {"max_train": 97}}, {"model": {"width": 8}},
                   {"train": {"precision": "bf16"}}, {"data": {"storage": "float32"}}):
        other = config.replace(tiny, **change)
        assert rundir.identity_hash(train.run_identity(other, m, 0, 0, torch.device("cpu"))) != rundir.identity_hash(base)
    assert rundir.identity_hash(train.run_identity(tiny, m, 0, 1, torch.device("cpu"))) != rundir.identity_hash(base)
    code = base["code"]
    assert "gradmix/train.py" in code and "gradmix/mixing/gradmix.py" in code and "gradmix/evaluate.py" not in code


def test_finished_run_is_not_retrained_and_is_restored_after_deletion(tiny, tmp_path, capsys):
    out = tmp_path / "runs" / "cutmix" / "split0-seed0"
    cfg = config.replace(tiny, train={"checkpoint_dir": str(tmp_path / "ckpt")})
    train.train_run(cfg, "cutmix", 0, 0, out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    scores = (out / "scores.npz").read_bytes()
    capsys.readouterr()
    train.train_run(cfg, "cutmix", 0, 0, out)
    said = capsys.readouterr().out
    assert "already finished" in said and "training on" not in said
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    import shutil
    shutil.rmtree(out.parent)                        # what DVC does to a stage's outputs before a rerun
    train.train_run(cfg, "cutmix", 0, 0, out)
    said = capsys.readouterr().out
    assert "restored cutmix/split0-seed0 from its finished copy" in said and "training on" not in said
    assert (out / "scores.npz").read_bytes() == scores and rundir.run_problem(out, digests=True) is None
    train.train_run(config.replace(cfg, train={"label_smoothing": 0.1}), "cutmix", 0, 0, out)   # a changed config
    said = capsys.readouterr().out
    assert "was trained differently (train.label_smoothing 0.0 -> 0.1)" in said and "training on cpu" in said
    assert (out / "scores.npz").read_bytes() != scores
    assert json.loads((out / "config.json").read_text())["train"]["label_smoothing"] == 0.1


def test_second_writer_fails_at_once_naming_the_first(tiny, tmp_path):
    out = tmp_path / "erm" / "split0-seed0"
    lock = checkpoint.checkpoint_folder(out, tiny.train.checkpoint_dir) / "writer.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gradmix.checkpoint import RunLock; "
         "RunLock(sys.argv[1], 'erm/split0-seed0').acquire(); print('locked', flush=True); time.sleep(600)", str(lock)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(holder, "locked")
        loaded = []
        data = lambda: loaded.append(1)              # noqa: E731 (a loader that must not be called)
        with pytest.raises(RunLockedError, match=rf"erm/split0-seed0: another process is writing this run "
                                                 rf"\(pid {holder.pid} on .*command: -c .*\); it holds {lock}"):
            train.train_run(tiny, "erm", 0, 0, out, data)
        assert not loaded and not out.exists() and not out.with_name(out.name + ".tmp").exists()
    finally:
        holder.kill()
        holder.wait()
    train.train_run(tiny, "erm", 0, 0, out)           # the killed holder released the lock
    assert rundir.run_problem(out) is None


def test_evaluate_names_missing_and_partial_runs(tiny, tmp_path, recwarn):
    root = tmp_path / "runs"
    cfg = config.replace(tiny, train={"epochs": 1, "seeds": [0, 1]})
    trainers.train_method(cfg, "erm", root)
    plan = rundir.planned_runs(cfg)
    assert plan == ["split0-seed0", "split0-seed1"]
    (root / "erm" / "split0-seed2.tmp").mkdir()                       # a killed run's leftover
    (root / "erm" / "split0-seed3").mkdir()                            # no completion marker
    with pytest.raises(IncompleteRunError) as e:
        evaluate.evaluate(root, tmp_path / "out", ["erm"], expected=plan + ["split0-seed2", "split0-seed3", "split0-seed4"])
    msg = str(e.value)
    assert "3 planned run(s)" in msg and "erm/split0-seed2.tmp: an interrupted (or still running) training" in msg
    assert "erm/split0-seed3" in msg and "no complete.json" in msg and "erm/split0-seed4: missing" in msg
    assert not (tmp_path / "out").exists()
    with pytest.raises(IncompleteRunError, match="erm/split0-seed2.tmp"):       # inferred plan: the same names
        evaluate.find_runs(root, ["erm"])
    summary = evaluate.evaluate(root, tmp_path / "out", ["erm"], expected=plan)  # leftovers outside the plan: noted
    assert summary["digits"]["erm"]["accuracy"]["n"] == 2
    assert any("split0-seed2.tmp" in str(w.message) for w in recwarn)


def seal(run_dir):
    """Re-seal a run directory after editing a file (the marker then records the edited bytes)."""
    rundir.write_marker(run_dir, rundir.read_marker(run_dir)["identity"])


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("finished") / "erm" / "split0-seed0"
    train.train_run(tiny, "erm", 0, 0, d)
    return d


@pytest.fixture
def run_copy(finished, tmp_path):
    import shutil

    return Path(shutil.copytree(finished, tmp_path / "erm" / "split0-seed0"))


def flip(path, offset=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["scores.npz", "config.json", "model.pt"])
def test_damaged_run_files_are_named(run_copy, name):
    path = run_copy / name
    flip(path)
    read = train.load_model if name == "model.pt" else evaluate.read_run
    with pytest.raises(CorruptFileError, match=rf"{path}: sha256 differs from the one complete.json records"):
        read(run_copy)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=rf"{path}: 100 bytes, complete.json records \d+ \(truncated"):
        read(run_copy)


@pytest.mark.parametrize("name, content, problem", [
    ("scores.npz", b"PK\x03\x04 not really a zip", r"not a readable .npz archive \(BadZipFile"),
    ("scores.npz", "npz without labels", r"arrays \['labels_known', 'labels_unknown'\] are missing"),
    ("config.json", b"{not json", "not valid JSON"),
    ("config.json", b"[1, 2]", "expected a mapping with a 'run' block"),
    ("config.json", "split as text", r"run.split is '0', expected a int"),
    ("model.pt", "a list", r"corrupt or incompatible model checkpoint \(TypeError: a list, expected a dict\)"),
    ("model.pt", "no state", r"KeyError: \"keys \['state_dict'\] are missing\""),
])
def test_wrong_run_files_are_named(run_copy, name, content, problem):
    """Files that match their (re-sealed) record but are not what they should be."""
    path = run_copy / name
    if content == "npz without labels":
        np.savez(path, logits_known=np.zeros((2, 3)))
    elif content == "split as text":
        cfg = json.loads(path.read_text())
        cfg["run"]["split"] = "0"
        path.write_text(json.dumps(cfg))
    elif content == "a list":
        torch.save([1, 2], path)
    elif content == "no state":
        ckpt = torch.load(path, weights_only=True)
        del ckpt["state_dict"]
        torch.save(ckpt, path)
    else:
        path.write_bytes(content)
    seal(run_copy)
    read = train.load_model if name == "model.pt" else evaluate.read_run
    with pytest.raises(CorruptFileError, match=rf"{path}: .*{problem}"):
        read(run_copy)


def test_damaged_marker_is_named(run_copy):
    (run_copy / "complete.json").write_text("{")
    with pytest.raises(CorruptFileError, match=rf"{run_copy / 'complete.json'}: not valid JSON"):
        evaluate.read_run(run_copy)


@pytest.mark.parametrize("damage, problem", [
    ("truncate", r"checkpoint-e00001.pt: \d+ bytes, .*checkpoint.json records \d+ \(truncated\)"),
    ("flip", r"checkpoint-e00001.pt: sha256 differs .* \(the file is damaged\)"),
    ("json", r"checkpoint.json: not valid JSON"),
    ("list", r"checkpoint-e00001.pt: not a checkpoint: a list, expected a dict"),
    ("keys", r"checkpoint-e00001.pt: not a checkpoint: keys \['log', 'state'\] are missing"),
])
def test_damaged_checkpoint_is_named_with_its_remedy(tiny, tmp_path, damage, problem):
    out = tmp_path / "erm" / "split0-seed0"
    folder = interrupted(tiny, "erm", out)
    meta_path, pt = folder / "checkpoint.json", folder / "checkpoint-e00001.pt"
    if damage == "truncate":
        pt.write_bytes(pt.read_bytes()[:-10])
    elif damage == "flip":
        flip(pt)
    elif damage == "json":
        meta_path.write_text("{oops")
    else:
        payload = torch.load(pt, weights_only=True)
        if damage == "list":
            payload = [1, 2]
        else:
            del payload["log"], payload["state"]
        torch.save(payload, pt)
        meta = json.loads(meta_path.read_text())
        meta.update(size=pt.stat().st_size, sha256=rundir.sha256(pt))
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptCheckpointError, match=problem + rf".*delete {folder} to train this run from the start"):
        train.train_run(tiny, "erm", 0, 0, out)
    assert not out.exists()


def test_diverging_run_stops_naming_epoch_and_step(tiny, tmp_path):
    out = tmp_path / "erm" / "split0-seed0"
    with pytest.raises(DivergedError, match=r"erm/split0-seed0 \(method erm, split 0, seed 0\): the (training loss "
                                            r"is (nan|inf)|weights became non-finite) at epoch 1, step \d of 3\b.*"
                                            r"Training stopped.*train.lr 1000000.0"):
        train.train_run(config.replace(tiny, train={"lr": 1e6}), "erm", 0, 0, out)
    assert not out.exists()
    folder = checkpoint.checkpoint_folder(out, tiny.train.checkpoint_dir)
    assert not (folder / "checkpoint.json").exists() and not (folder / "final").exists()


def test_nonfinite_loss_names_its_step():
    w = checkpoint.RunWriter("/nonexistent/gradmix/split1-seed2", {"run": {"method": "gradmix", "split": 1, "seed": 2}},
                             label="gradmix/split1-seed2", epochs=9, device="cpu", checkpoint_dir="")
    w.check_epoch([0.5, 0.4], [1.0], 3)
    with pytest.raises(DivergedError, match=r"gradmix/split1-seed2 \(method gradmix, split 1, seed 2\): the training "
                                            r"loss is nan at epoch 3, step 2 of 4\. .*no checkpoint of it is kept"):
        w.check_epoch([0.5, float("nan"), float("inf"), 0.3], [1.0], 3)


def test_epoch_stats_on_device_values():
    stats = EpochStats()
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[0, :, :2, :2] = True                          # 4 of 16 pixels
    mask[1, :, :, :2] = True                           # 8 of 16
    mixed = Mixed(torch.zeros(2, 1, 4, 4), torch.ones(2, 3) / 3, torch.ones(2), torch.ones(2), mask)
    stats.mixed(mixed)
    stats.mixed(type("WithFallback", (), {"mask": torch.zeros(2, 1, 4, 4, dtype=torch.bool),
                                          "fallback": torch.tensor([True, False])})())
    stats.mixed(Mixed(torch.zeros(2, 1, 4, 4), torch.ones(2, 3) / 3, torch.ones(2), torch.ones(2)))   # Mixup: no mask
    for v in (1.0, 3.0):
        stats.loss(torch.tensor(v))
    losses, means = stats.close()
    assert list(losses) == [1.0, 3.0]
    assert means == {"masked_fraction": pytest.approx((0.25 + 0.5) / 4), "fallback_fraction": 0.5}
    assert stats.close()[1] == {}                      # reset


def test_curves_match_dvclive(tmp_path, monkeypatch):
    """LiveLog writes what dvclive.Live writes for the same values (DVCLive as the oracle)."""
    rows = [{"epoch": 1, "loss": 2.5, "lr": 0.1, "test_auroc_mls": float("nan"), "seconds": 1.0},
            {"epoch": 2, "loss": 1.25, "lr": 0.05, "test_auroc_mls": 0.75, "masked_fraction": 0.3, "seconds": 2.0}]
    LiveLog(tmp_path / "ours", rows[:1]).log(rows[1])
    monkeypatch.chdir(tmp_path)                        # no Git or DVC repository here
    from dvclive import Live

    live = Live("theirs", save_dvc_exp=False, dvcyaml=None)
    for row in rows:
        live.step = row["epoch"]
        for k, v in row.items():
            if k not in ("epoch", "seconds"):
                live.log_metric(k, v)
        live.next_step()
    live.end()
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    files = sorted(p.relative_to(theirs) for p in theirs.rglob("*.tsv"))
    assert files == sorted(p.relative_to(ours) for p in ours.rglob("*.tsv")) and len(files) == 4
    for f in files:
        assert (ours / f).read_text() == (theirs / f).read_text(), f
    assert json.loads((ours / "metrics.json").read_text()) == json.loads((theirs / "metrics.json").read_text())


def test_curves_never_stop_a_run(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    log = LiveLog(tmp_path / "file" / "dvclive")       # cannot be created: a file is in the way
    log.log({"epoch": 1, "loss": 1.0})
    assert not log.ok and "no longer written" in capsys.readouterr().err
