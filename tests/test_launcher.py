"""train.launcher: runs as local processes or SLURM jobs (submitit) give the inline results bit for bit,
the sbatch parameters, requeue after a signal resumes from the run's checkpoint, failed runs are named
with their log files, and Ctrl-C cancels the running jobs."""
import dataclasses
import json
import os
import shutil
import signal
import stat
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import submitit
import torch

from gradmix import cli, config, launcher, rundir, trainers
from gradmix.checkpoint import checkpoint_folder
from gradmix.launcher import JobsFailedError, RunJob, RunSpec

ROOT = Path(__file__).resolve().parents[1]
PARAMS = str(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def smoke():
    return config.load(PARAMS, smoke=True)


# one CPU thread in every job: train.threads where the configuration has that knob (every stage pins it),
# else the jobs' default (this process's threads, pinned to 1 by `one_thread`, divided by the workers)
HAS_THREADS = "threads" in {f.name for f in dataclasses.fields(config.TrainConfig)}
ONE = {"threads": 1} if HAS_THREADS else {}
SET_ONE = ["--set", "train.threads=1"] if HAS_THREADS else []


@pytest.fixture
def one_thread():
    """Bit-identity between processes holds at a fixed thread count: 1 here and in every job."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def same_files(a: Path, b: Path, names=("scores.npz", "model.pt")) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def segments(run: Path) -> list[dict]:
    return json.loads((run / "config.json").read_text())["run"]["segments"]


# --- local: processes through submitit's LocalExecutor ---------------------------------------------

def test_local_workers_match_inline_bit_for_bit(tmp_path, monkeypatch, capsys, one_thread):
    """`gradmix train --set train.launcher=local --set train.workers=2` trains each run in its own process,
    relays its lines, and writes the same scores.npz (and weights) as the inline loop; a finished run is
    the same run for either launcher (not retrained)."""
    monkeypatch.chdir(tmp_path)
    common = ["train", "--method", "erm", "--params", PARAMS, "--smoke", "--set", "data.splits=[0,1]",
              "--set", "train.progress=true", "--set", "train.checkpoint_dir=ckpt", *SET_ONE]
    local = ["--out", "local", "--set", "train.launcher=local", "--set", "train.workers=2"]
    assert cli.main([*common, *local]) == 0
    said = capsys.readouterr().out
    assert "launcher local: 2 process(es) at once, 1 CPU thread(s) each" in said
    for split in (0, 1):
        label = f"erm/split{split}-seed0"
        assert f"{label}: submitted as job" in said and f"{label} epoch 1/1" in said      # relayed from the job
        assert f"{label}: job " in said and "1 CPU thread(s)" in said
    assert "[2/2] erm/split" in said and "submitit INFO" not in said
    assert cli.main([*common, "--out", "inline"]) == 0
    said = capsys.readouterr().out
    assert "launcher" not in said and "submitted" not in said
    for split in (0, 1):
        run, ref = tmp_path / "local" / "erm" / f"split{split}-seed0", tmp_path / "inline" / "erm" / f"split{split}-seed0"
        assert same_files(run, ref)
        seg = segments(run)
        assert seg[0]["pid"] != os.getpid() and segments(ref)[0]["pid"] == os.getpid()   # its own process
        assert json.loads((run / "config.json").read_text())["run"]["threads"] == 1
        logs = list((tmp_path / "logs" / "erm" / f"split{split}-seed0").glob("*_0_log.out"))
        assert len(logs) == 1 and f"erm/split{split}-seed0 epoch 1/1" in logs[0].read_text()
    # the launcher knobs are not part of a run's identity: inline finds the local runs finished
    assert cli.main([*common, "--out", "local"]) == 0
    said = capsys.readouterr().out
    assert said.count("already finished") == 2 and "training on" not in said
    # a rerun starts no job for a finished run: kept, or restored from its copy after DVC deleted it
    shutil.rmtree(tmp_path / "local" / "erm" / "split1-seed0")
    assert cli.main([*common, *local]) == 0
    said = capsys.readouterr().out
    assert "erm/split0-seed0: already finished" in said and "restored erm/split1-seed0 from its finished copy" in said
    assert "2 of 2 run(s) finished already" in said and "submitted" not in said
    assert same_files(tmp_path / "local" / "erm" / "split1-seed0", tmp_path / "inline" / "erm" / "split1-seed0")


def test_failed_local_job_is_named_with_its_log(smoke, tmp_path, monkeypatch, capsys):
    """A run that fails in its process (here: it diverges) is reported by name with its error and its log
    file, which holds the traceback; the command fails with one line."""
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "--method", "erm", "--params", PARAMS, "--smoke", "--out", "runs",
                     "--set", "train.launcher=local", "--set", "train.lr=1.0e+30"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 2        # the FAILED line as it happens, then the command's error
    line = err.splitlines()[-1]
    assert line.startswith("gradmix train: error: 1 run(s) failed: erm/split0-seed0 failed: ")
    assert "DivergedError: erm/split0-seed0 (method erm, split 0, seed 0): the training loss is nan" in line
    (log,) = (tmp_path / "logs" / "erm" / "split0-seed0").glob("*_0_log.err")
    assert f"(log: {log})" in line and "Traceback" in log.read_text() and "DivergedError" in log.read_text()
    assert not (tmp_path / "runs" / "erm" / "split0-seed0").exists()


# --- slurm: the job parameters, the DebugExecutor, requeue ----------------------------------------

FAKE_SLURM = {
    # sbatch SCRIPT: run it in the background in its own session, as job <n>; print what sbatch prints
    "sbatch": """
        n=$(( $(cat "$FAKE_SLURM/next" 2>/dev/null || echo 100) + 1 )); echo $n > "$FAKE_SLURM/next"
        cp "$1" "$FAKE_SLURM/$n.sh"
        SLURM_JOB_ID=$n setsid bash "$FAKE_SLURM/$n.sh" </dev/null >/dev/null 2>&1 &
        echo "Submitted batch job $n"
    """,
    # srun --output O --error E CMD: CMD with SLURM's task variables, appending to O and E (%j, %t expanded)
    "srun": """
        while [[ $1 == -* ]]; do case $1 in --output) o=$2; shift 2;; --error) e=$2; shift 2;; *) shift;; esac; done
        o=${o//%j/$SLURM_JOB_ID}; e=${e//%j/$SLURM_JOB_ID}
        echo $$ > "$FAKE_SLURM/$SLURM_JOB_ID.pid"
        export SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_JOB_NODELIST=localhost
        exec "$@" >>"${o//%t/0}" 2>>"${e//%t/0}"
    """,
    # scontrol requeue N: once the job's process has ended, run its script again as the same job
    "scontrol": """
        n=$2; pid=$(cat "$FAKE_SLURM/$n.pid"); echo requeue >> "$FAKE_SLURM/$n.requeued"
        (while kill -0 $pid 2>/dev/null; do sleep 0.1; done
         SLURM_JOB_ID=$n setsid bash "$FAKE_SLURM/$n.sh" </dev/null >/dev/null 2>&1) </dev/null >/dev/null 2>&1 &
    """,
    "sacct": 'echo "JobID|State|NodeList"',           # no accounting: submitit waits for the result file
    "scancel": 'kill -KILL $(cat "$FAKE_SLURM/$1.pid") 2>/dev/null; echo "$1" >> "$FAKE_SLURM/cancelled"',
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun, scontrol, sacct and scancel stand-ins that run jobs on this machine."""
    folder = tmp_path / "fake-slurm"
    folder.mkdir()
    for name, body in FAKE_SLURM.items():
        path = folder / name
        path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    return folder


SLURM = {"launcher": "slurm", "log_dir": "joblogs",
         "slurm": {"partition": "gpu", "account": "osr", "gpus_per_job": 2, "cpus_per_job": 1, "mem_gb": 24,
                   "time_min": 90, "max_timeouts": 5, "setup": ["module load cuda/12.4"],
                   "extra": {"qos": "high", "constraint": "h100", "exclusive": True}}}


def test_sbatch_script_holds_the_train_slurm_settings(smoke, tmp_path, fake_slurm):
    cfg = config.replace(smoke, train=SLURM)
    spec = RunSpec("gradmix", 3, 1, "runs/gradmix/split3-seed1", trainers.train_run)
    ex = launcher.make_executor(cfg, tmp_path / "jobs", spec, threads=1)
    assert isinstance(ex, submitit.SlurmExecutor) and ex.max_num_timeout == 5
    script = ex._make_submission_file_text("python -u -m submitit.core._submit jobs", "uid")
    flags = {line.split()[1] for line in script.splitlines() if line.startswith("#SBATCH")}
    assert {"--job-name=gradmix-gradmix-split3-seed1", "--partition=gpu", "--account=osr", "--gpus-per-node=2",
            "--cpus-per-task=1", "--mem=24GB", "--time=90", "--nodes=1", "--ntasks-per-node=1",
            f"--signal=USR2@{launcher.SIGNAL_DELAY_S}", "--requeue", "--qos=high", "--constraint=h100",
            "--exclusive", "--open-mode=append"} <= flags
    assert f"--output={tmp_path / 'jobs'}/%j_0_log.out" in flags and f"--error={tmp_path / 'jobs'}/%j_0_log.err" in flags
    setup = script[script.index("# setup"):script.index("# command")].split("\n")[1:4]
    assert setup == ["export OMP_NUM_THREADS=1", "export MKL_NUM_THREADS=1", "module load cuda/12.4"]
    # without GPUs, partition or account the flags are left to the cluster's defaults
    bare = config.replace(smoke, train={"launcher": "slurm", "slurm": {"gpus_per_job": 0}})
    params = launcher.slurm_parameters(bare, spec, 8)
    assert not {"gpus_per_node", "partition", "account"} & set(params)
    assert params["cpus_per_task"] == 8 and params["additional_parameters"] == {"requeue": True}


def test_slurm_without_sbatch_fails_before_submitting(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg = config.replace(smoke, train={"launcher": "slurm"})
    with pytest.raises(config.ConfigError, match="no `sbatch`/`srun` on PATH"):
        trainers.train_method(cfg, "erm", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_slurm_launcher_with_debug_executor_matches_inline(smoke, tmp_path, monkeypatch, fake_slurm, one_thread, capsys):
    """The slurm path end to end with submitit's DebugExecutor (each job runs in this process): every run of
    two methods is one job with the train.slurm parameters (validated by a real SlurmExecutor), its
    threads are cpus_per_job, and the runs equal the inline ones."""
    monkeypatch.chdir(tmp_path)
    submitted, make_real = [], launcher.make_executor

    def debug_executor(cfg, folder, spec, threads):
        real = make_real(cfg, folder, spec, threads)                  # raises on an invalid parameter
        submitted.append((spec.label, dict(real.parameters), threads))
        return submitit.DebugExecutor(folder)

    monkeypatch.setattr(launcher, "make_executor", debug_executor)
    cfg = config.replace(smoke, data={"splits": [0, 1]}, train={**SLURM, **ONE})
    trainers.train_methods(cfg, ["erm", "cutmix"], tmp_path / "slurm")
    said = capsys.readouterr().out
    assert [s[0] for s in submitted] == ["erm/split0-seed0", "erm/split1-seed0", "cutmix/split0-seed0",
                                         "cutmix/split1-seed0"]
    assert all(t == 1 and p["partition"] == "gpu" and p["gpus_per_node"] == 2 for _, p, t in submitted)
    assert "launcher slurm: 4 job(s) at once (partition gpu, account osr), each 2 GPU" in said
    assert "[4/4] cutmix/split1-seed0: finished" in said
    inline = config.replace(smoke, data={"splits": [0, 1]}, train=ONE)
    trainers.train_methods(inline, ["erm", "cutmix"], tmp_path / "inline")
    for m in ("erm", "cutmix"):
        for k in (0, 1):
            assert same_files(tmp_path / "slurm" / m / f"split{k}-seed0", tmp_path / "inline" / m / f"split{k}-seed0")
    # a rerun submits nothing: on a GPU-less login node it still expects the jobs' CUDA runs (2 GPUs each),
    # so these CPU runs count as trained differently only when the nodes have GPUs
    cpu_jobs = config.replace(cfg, train={"slurm": {**SLURM["slurm"], "gpus_per_job": 0}})
    trainers.train_methods(cpu_jobs, ["erm", "cutmix"], tmp_path / "slurm")
    assert len(submitted) == 4 and "4 of 4 run(s) finished already" in capsys.readouterr().out
    trainers.train_methods(cfg, ["erm"], tmp_path / "slurm")       # GPU jobs: a CPU run is not theirs
    assert [s[0] for s in submitted[4:]] == ["erm/split0-seed0", "erm/split1-seed0"]


def test_failed_debug_job_is_named_and_no_new_job_starts(smoke, tmp_path, monkeypatch):
    """After the first failure the queue stops; the error names the failed run, its log and the runs not
    started. (DebugExecutor opens pdb on a failure: it is switched off here.)"""
    import pdb

    monkeypatch.setattr(pdb, "post_mortem", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)
    cfg = config.replace(smoke, data={"splits": [0, 1, 2]}, train={"launcher": "local", "workers": 1})
    specs = [RunSpec("erm", k, 0, f"runs/erm/split{k}-seed0", _fails_on_split_1) for k in (0, 1, 2)]
    with pytest.raises(JobsFailedError) as e:
        launcher.launch(cfg, specs, executor=lambda folder, spec, threads: submitit.DebugExecutor(folder))
    msg = str(e.value)
    assert "1 run(s) failed: erm/split1-seed0 failed: ValueError: no good on split 1" in msg
    assert "not started after the failure: erm/split2-seed0" in msg
    assert e.value.failures[0][2].parent == tmp_path / "logs" / "erm" / "split1-seed0"
    assert (tmp_path / "runs/erm/split0-seed0/complete.json").is_file()
    assert not (tmp_path / "runs/erm/split2-seed0").exists()


def _fails_on_split_1(cfg, method, split, seed, out_dir, data):
    if split == 1:
        raise ValueError("no good on split 1")
    return trainers.train_run(cfg, method, split, seed, out_dir, data)


def test_job_refuses_other_code(smoke, tmp_path):
    spec = RunSpec("erm", 0, 0, str(tmp_path / "run"), trainers.train_run)
    code = {**rundir.code_digests(), "gradmix/train.py": "0" * 16}
    with pytest.raises(launcher.CodeChangedError, match=r"other gradmix code .*gradmix/train.py"):
        RunJob(spec, smoke.to_dict(), str(tmp_path), code, threads=1)()
    assert not (tmp_path / "run").exists()


def test_checkpoint_resubmits_the_same_call_which_resumes(smoke, tmp_path, capsys, one_thread):
    """submitit's requeue protocol in-process: a job stopped after an epoch checkpoint, resubmitted by its
    checkpoint(), resumes there and ends with the scores of an uninterrupted run."""
    from gradmix import checkpoint

    cfg = config.replace(smoke, data={"max_train": 96, "image_size": 12},
                         train={"epochs": 3, "batch_size": 32, "checkpoint_dir": ""})
    spec = RunSpec("gradmix", 0, 0, str(tmp_path / "job" / "gradmix" / "split0-seed0"), trainers.train_run)
    job = RunJob(spec, cfg.to_dict(), str(tmp_path), rundir.code_digests(), threads=1)
    save = checkpoint.RunWriter.save

    def preempted(self, epoch, parts):                  # the signal arrives after epoch 1's checkpoint
        path = save(self, epoch, parts)
        if epoch == 1:
            raise Preempted
        return path

    checkpoint.RunWriter.save = preempted
    try:
        with pytest.raises(Preempted):
            job()
    finally:
        checkpoint.RunWriter.save = save
    again = job.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission) and again.function is job
    assert again.result() == spec.out_dir
    said = capsys.readouterr().out
    assert "signalled (time limit or pre-emption); requeued" in said
    assert "resumed gradmix/split0-seed0 from epoch 1" in said and "epochs 2-3 of 3" in said
    ref = trainers.train_run(cfg, "gradmix", 0, 0, tmp_path / "ref" / "gradmix" / "split0-seed0")
    assert same_files(Path(spec.out_dir), ref)
    assert [s["from_epoch"] for s in segments(Path(spec.out_dir))] == [1, 2]


class Preempted(Exception):
    pass


SLOW = """
import time
from gradmix import checkpoint, trainers

_save = checkpoint.RunWriter.save


def slow_save(self, epoch, parts):          # time for the test to signal the job between epochs
    path = _save(self, epoch, parts)
    time.sleep(0.6)
    return path


def run(cfg, method, split, seed, out_dir, data):
    checkpoint.RunWriter.save = slow_save
    return trainers.train_run(cfg, method, split, seed, out_dir, data)
"""


def test_signalled_slurm_job_is_requeued_and_resumes(smoke, tmp_path, monkeypatch, fake_slurm, one_thread, capsys):
    """A SLURM job (stand-in sbatch/srun/scontrol running it here) gets USR2 mid-run, as before its time
    limit or on pre-emption: submitit checkpoints the call and requeues the job, which resumes the run from
    its last epoch checkpoint; the waiting side waits through the requeue and the run equals the inline one."""
    monkeypatch.chdir(tmp_path)
    slowtrain = slow_module(tmp_path, monkeypatch)

    cfg = config.replace(smoke, data={"max_train": 96, "image_size": 12},
                         train={**SLURM, "epochs": 4, "batch_size": 32, "progress": True,
                                "slurm": {"cpus_per_job": 1, "gpus_per_job": 0}})
    spec = RunSpec("erm", 0, 0, "runs/erm/split0-seed0", slowtrain.run)
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault("dirs", launcher.launch(cfg, [spec], poll_s=0.2)))
    waiter.start()
    saved = checkpoint_folder(spec.out_dir, cfg.train.checkpoint_dir) / "checkpoint.json"
    deadline = time.time() + 120
    while not (saved.is_file() and json.loads(saved.read_text())["epoch"] == 2):
        assert time.time() < deadline and waiter.is_alive(), "the job did not save epoch 2"
        time.sleep(0.05)
    os.kill(int((fake_slurm / "101.pid").read_text()), signal.SIGUSR2)     # while it sleeps after the save
    log = tmp_path / "joblogs" / "erm" / "split0-seed0" / "101_0_log.out"
    waiter.join(180)
    assert not waiter.is_alive() and result["dirs"] == [Path("runs/erm/split0-seed0")]
    assert (fake_slurm / "101.requeued").is_file()
    text = log.read_text()
    assert "signalled (time limit or pre-emption); requeued" in text
    assert "resumed erm/split0-seed0 from epoch 2" in text and "epochs 3-4 of 4" in text
    said = capsys.readouterr().out
    assert "resumed erm/split0-seed0 from epoch 2" in said and "[1/1] erm/split0-seed0: finished (job 101" in said
    ref = trainers.train_run(config.replace(cfg, train={"launcher": "inline", "checkpoint_dir": ""}),
                             "erm", 0, 0, tmp_path / "ref" / "erm" / "split0-seed0")
    assert same_files(tmp_path / "runs" / "erm" / "split0-seed0", ref)
    assert [s["from_epoch"] for s in segments(tmp_path / "runs" / "erm" / "split0-seed0")] == [1, 3]


def slow_module(tmp_path, monkeypatch):
    """``slowtrain`` (:data:`SLOW`) in ``tmp_path``, importable here and by jobs started there."""
    (tmp_path / "slowtrain.py").write_text(SLOW)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slowtrain", raising=False)
    import slowtrain

    return slowtrain


def test_sigterm_cancels_running_jobs(smoke, tmp_path, monkeypatch, fake_slurm, capsys):
    """SIGTERM (as Ctrl-C or SIGHUP) of the waiting process cancels its running jobs and says what is kept;
    the cancelled run keeps its checkpoint for a rerun."""
    monkeypatch.chdir(tmp_path)
    slowtrain = slow_module(tmp_path, monkeypatch)
    cfg = config.replace(smoke, train={**SLURM, "slurm": {"cpus_per_job": 1, "gpus_per_job": 0}, "epochs": 50})
    spec = RunSpec("erm", 0, 0, "runs/erm/split0-seed0", slowtrain.run)
    saved = checkpoint_folder(spec.out_dir, cfg.train.checkpoint_dir) / "checkpoint.json"

    def terminate_once_saved():
        deadline = time.time() + 120
        while not saved.is_file() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda *a: None)    # what launch() restores afterwards
    try:
        threading.Thread(target=terminate_once_saved, daemon=True).start()
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            launcher.launch(cfg, [spec], poll_s=0.05)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (fake_slurm / "cancelled").read_text().split() == ["101"]
    assert "interrupted: cancelled 1 running job(s) (erm/split0-seed0), 0 not started" in capsys.readouterr().err
    pid = int((fake_slurm / "101.pid").read_text())
    deadline = time.time() + 60
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(pid) and not (tmp_path / "runs" / "erm" / "split0-seed0").exists()
    assert json.loads(saved.read_text())["epoch"] >= 1               # a rerun resumes from here


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").is_dir() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_plan_and_device_line_of_slurm_need_no_gpu_here(smoke):
    from gradmix import plan

    cfg = config.replace(smoke, train={"launcher": "slurm", "device": "cuda"})
    assert plan.device_line(cfg) == "device: train.device=cuda in SLURM jobs"
    assert launcher.slots(cfg, 5) == 5 and launcher.slots(config.replace(cfg, train={"workers": 2}), 5) == 2
    local = config.replace(smoke, train={"launcher": "local", "device": "cpu"})
    assert launcher.visible_gpus(local) == [] and launcher.slots(local, 5) == 1
    if HAS_THREADS:                   # every job pins train.threads, as every stage does
        assert launcher.worker_threads(config.replace(cfg, train={"threads": 3}), 5) == 3
    else:                             # else a SLURM job uses the CPUs it asked for
        assert launcher.worker_threads(config.replace(cfg, train={"slurm": {"cpus_per_job": 6}}), 5) == 6


def test_cli_trains_several_methods_and_keeps_the_teacher_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["train", "--params", PARAMS, "--smoke", "--out", "runs", "--set", "train.checkpoint_dir="]
    assert cli.main([*common, "--method", "erm", "mixup"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-2:] == ["runs/erm/split0-seed0", "runs/mixup/split0-seed0"]
    assert all(rundir.run_problem(tmp_path / "runs" / m / "split0-seed0") is None for m in ("erm", "mixup"))
    assert cli.main([*common, "--method", "erm", "teacher"]) == 2
    assert "train the distillation teacher on its own" in capsys.readouterr().err
