"""Runs fanned out as processes or SLURM jobs with submitit: ``train.launcher``.

A *run* is one split × seed of one method (gradmix.rundir). How the runs of a pipeline stage or of a
``gradmix train`` command are trained is ``train.launcher``:

* ``inline`` (default): one after another in the calling process (:func:`gradmix.train.every_run`).
* ``local``: each run is its own process, started with submitit's ``LocalExecutor``, at most
  ``train.workers`` at once (0: one per visible GPU, 1 without a GPU). When two or more GPUs are
  visible and ``train.device`` is ``auto`` or ``cuda``, worker slot *i* sees only GPU *i mod n*
  (``CUDA_VISIBLE_DEVICES``), so with ``workers`` ≤ GPUs every run has a GPU of its own; a run that
  ends hands its slot, and its GPU, to the next one.
* ``slurm``: each run is a SLURM job submitted with submitit's ``SlurmExecutor`` and the
  ``train.slurm`` settings (:func:`slurm_parameters`), ``train.workers`` jobs at once (0: all).

**Threads.** Each job runs with a fixed number of CPU threads (``torch.set_num_threads``, and
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` in its environment): ``train.threads``, the thread count every
stage pins; a configuration without that knob gives ``local`` jobs the calling process's torch
threads divided by the workers (at least 1) and ``slurm`` jobs ``train.slurm.cpus_per_job``. On the
CPU a run is bit-identical to its ``inline`` twin at the same thread count.

**Same code, same parameters.** A job receives the validated configuration as a mapping
(``Config.to_dict``, validated again in the job by ``gradmix.config.from_dict``), the working
directory, and the digests of the package's source files when it was submitted
(:func:`gradmix.rundir.code_digests`); it starts with ``PYTHONPATH`` leading to the submitter's
package (:func:`package_path`). A job that would still run other code (the package edited between
submission and start) fails at once naming the changed files.

**Time limits and pre-emption.** :class:`RunJob` is a submitit ``Checkpointable``. SLURM signals a
job (``USR2``) :data:`SIGNAL_DELAY_S` seconds before its time limit, and on pre-emption where the
cluster is set up to; submitit then calls :meth:`RunJob.checkpoint`, which resubmits the same call,
and requeues the job (``scontrol requeue``, same job id). The requeued job trains the same run,
whose :class:`gradmix.checkpoint.RunWriter` resumes from its last epoch checkpoint; epochs after it
are trained again. Jobs are submitted with ``--requeue``, so a job SLURM itself requeues (pre-emption
with ``PreemptMode=REQUEUE``, a failed node) resumes the same way. Reaching the time limit counts
against ``train.slurm.max_timeouts``; pre-emptions do not.

**The waiting side** (:func:`launch`, called by the pipeline's stages and ``gradmix train`` through
:func:`gradmix.train.every_run`) first keeps or restores the runs that are finished already (same
identity: configuration, code and device type; :func:`finished_here`), so a rerun starts no job for
them; then it submits the jobs of the others, relays each job's output as it is written (the
run's own lines: where it trains, resumes or restores, one line per epoch with ``train.progress``),
prints one line per finished run, and waits for all of them. A failed run is named with its error
and its log file; no new job starts after a failure, the running ones finish (and are kept), then
:class:`JobsFailedError` names every failed run. Finished runs are always kept: a rerun restores
them (gradmix.checkpoint) and resumes interrupted ones from their checkpoints.

**Interruption.** Ctrl-C, SIGTERM or SIGHUP of the waiting process cancel its running jobs (local:
SIGINT to the job's process group, then SIGKILL; slurm: ``scancel``); their checkpoints stay, so a
rerun resumes them. If the waiting process is killed with SIGKILL it cannot cancel anything: local
jobs die with it only when their process group is killed too (a notebook kernel's shutdown does
that), SLURM jobs go on and finish their runs. While such a job still runs, a rerun's job for the
same run fails at once naming it (gradmix.checkpoint.RunLockedError): cancel it
(``scancel --name gradmix-<method>-split<k>-seed<s>``) or wait for it.

**Logs.** ``<train.log_dir>/<method>/split<k>-seed<s>/``: ``<job id>_0_log.out`` (the run's output),
``<job id>_0_log.err`` (errors with their traceback, submitit's messages), the pickled call and its
result, and for slurm the sbatch script (``<job id>_submission.sh``). A requeued SLURM job appends
to the same files.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import submitit
from submitit.helpers import Checkpointable

from .checks import ConfigError
from .epochlog import say
from .rundir import code_digests, run_name

LOCAL_TIMEOUT_MIN = 60 * 24 * 365   # local jobs have no time limit (submitit's LocalExecutor default: 2 min)
SIGNAL_DELAY_S = 120                # slurm: USR2 this long before the time limit, then requeue
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class JobsFailedError(RuntimeError):
    """One or more runs failed in their jobs; the message names each run, its error and its log file."""

    def __init__(self, failures: list[tuple[str, str, Path]], not_started: list[str] = ()):
        self.failures, self.not_started = failures, list(not_started)
        lines = [f"{label} failed: {error} (log: {log})" for label, error, log in failures]
        rest = (f"; not started after the failure: {', '.join(self.not_started)}" if self.not_started else "")
        super().__init__(f"{len(failures)} run(s) failed: " + "; ".join(lines) + rest +
                         ". Finished runs are kept; rerun to train the rest (interrupted runs resume).")


class CodeChangedError(RuntimeError):
    """A job would run other gradmix code than the process that submitted it."""


@dataclass(frozen=True)
class RunSpec:
    """One run to train: ``run_fn(cfg, method, split, seed, Path(out_dir), None)`` (a module-level
    function, e.g. :func:`gradmix.trainers.train_run`; ``None``: the job loads its split itself)."""

    method: str
    split: int
    seed: int
    out_dir: str
    run_fn: Callable

    @property
    def label(self) -> str:
        return f"{self.method}/{run_name(self.split, self.seed)}"


class RunJob(Checkpointable):
    """What a job runs: one :class:`RunSpec` with the submitter's configuration, working directory
    and code (module docstring). ``threads``: CPU threads; ``env``: environment variables to set
    (None: unset) before anything touches CUDA, e.g. the pinned ``CUDA_VISIBLE_DEVICES``. Cwd, the
    environment and the thread count are restored afterwards (DebugExecutor runs jobs in-process)."""

    def __init__(self, spec: RunSpec, params: dict, cwd: str, code: dict, threads: int,
                 env: dict[str, str | None] | None = None):
        self.spec, self.params, self.cwd, self.code = spec, params, cwd, code
        self.threads, self.env = threads, dict(env or {})

    def __call__(self) -> str:
        import torch

        from .config import from_dict

        saved_env = {k: os.environ.get(k) for k in (*self.env, *THREAD_VARIABLES)}
        saved_cwd, saved_threads = os.getcwd(), torch.get_num_threads()
        try:
            _set_env({**self.env, **{k: str(self.threads) for k in THREAD_VARIABLES}})
            os.chdir(self.cwd)
            torch.set_num_threads(self.threads)
            now = code_digests()
            changed = sorted(f for f in set(self.code) | set(now) if self.code.get(f) != now.get(f))
            if changed:
                raise CodeChangedError(
                    f"{self.spec.label}: this job would run other gradmix code than the process that submitted "
                    f"it ({', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''} differ; package here: "
                    f"{Path(__file__).resolve().parent}). Rerun the stage or command with the code that should train.")
            cfg = from_dict(self.params)
            say(f"{self.spec.label}: job {_job_id()} on {socket.gethostname()}, {self.threads} CPU thread(s), "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(not set)')}")
            s = self.spec
            return str(s.run_fn(cfg, s.method, s.split, s.seed, Path(s.out_dir), None))
        finally:
            torch.set_num_threads(saved_threads)
            os.chdir(saved_cwd)
            _set_env(saved_env)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit when the job is signalled (time limit or pre-emption): resubmit the same
        call; the requeued job resumes the run from its last epoch checkpoint."""
        say(f"{self.spec.label}: job {_job_id()} signalled (time limit or pre-emption); requeued, the run "
            f"resumes from its last epoch checkpoint")
        return super().checkpoint(*args, **kwargs)


def _job_id() -> str:
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:                # called outside a submitit job
        return "(none)"


def _set_env(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# --- resources ----------------------------------------------------------------------------------

def visible_gpus(cfg) -> list[str]:
    """The GPUs ``local`` workers are pinned to (``CUDA_VISIBLE_DEVICES`` entries): the visible ones
    when ``train.device`` is ``auto`` or ``cuda``; none for ``cpu``, ``cuda:N`` (every run on that
    device) or another launcher."""
    t = cfg.train
    if t.launcher != "local" or t.device not in ("auto", "cuda"):
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    tokens = [s.strip() for s in env.split(",") if s.strip()] if env else [str(i) for i in range(n)]
    return tokens[:n]


def slots(cfg, n_runs: int, gpus=()) -> int:
    """Runs at once: ``train.workers``, where 0 means one per visible GPU (``local``; 1 without a GPU)
    or every run (``slurm``); never more than ``n_runs``."""
    w = cfg.train.workers
    if w == 0:
        w = max(1, len(gpus)) if cfg.train.launcher == "local" else n_runs
    return max(1, min(w, n_runs))


def worker_threads(cfg, n_slots: int) -> int:
    """CPU threads of each job (module docstring)."""
    threads = getattr(cfg.train, "threads", 0)   # train.threads (every stage pins it), where the config has it
    if threads:
        return int(threads)
    if cfg.train.launcher == "slurm":
        return cfg.train.slurm.cpus_per_job
    import torch

    return max(1, torch.get_num_threads() // n_slots)


def job_folder(cfg, spec: RunSpec) -> Path:
    """``<train.log_dir>/<method>/split<k>-seed<s>``: the job's logs and submitit's files."""
    return Path(cfg.train.log_dir) / spec.method / run_name(spec.split, spec.seed)


def slurm_parameters(cfg, spec: RunSpec, threads: int) -> dict:
    """submitit ``SlurmExecutor`` parameters of ``spec``'s job from ``train.slurm`` (sbatch flags in
    brackets): name ``gradmix-<method>-split<k>-seed<s>`` (--job-name), one task on one node, the
    GPUs (--gpus-per-node), CPUs (--cpus-per-task), memory (--mem), time limit (--time, minutes),
    partition and account when set, USR2 :data:`SIGNAL_DELAY_S` s before the limit (--signal),
    --requeue, every ``extra`` flag (they win over the ones above), and ``setup`` lines after the
    thread variables."""
    s = cfg.train.slurm
    params = {"job_name": f"gradmix-{spec.method}-{run_name(spec.split, spec.seed)}", "nodes": 1,
              "ntasks_per_node": 1, "cpus_per_task": s.cpus_per_job, "mem": f"{s.mem_gb}GB", "time": s.time_min,
              "signal_delay_s": SIGNAL_DELAY_S,
              "setup": [*(f"export {k}={threads}" for k in THREAD_VARIABLES), *s.setup],
              "additional_parameters": {"requeue": True, **s.extra}}
    if s.gpus_per_job:
        params["gpus_per_node"] = s.gpus_per_job
    if s.partition:
        params["partition"] = s.partition
    if s.account:
        params["account"] = s.account
    return params


def make_executor(cfg, folder: Path, spec: RunSpec, threads: int):
    """The submitit executor of one job: ``LocalExecutor`` (no time limit) or ``SlurmExecutor``
    (:func:`slurm_parameters`, ``max_num_timeout`` = ``train.slurm.max_timeouts``)."""
    if cfg.train.launcher == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=0)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
        return ex
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=cfg.train.slurm.max_timeouts)
    ex.update_parameters(**slurm_parameters(cfg, spec, threads))
    return ex


def describe(cfg, n_runs: int) -> str:
    """One line: how ``n_runs`` runs will be trained (for the plan); "" for ``inline``."""
    t = cfg.train
    if t.launcher == "inline":
        return ""
    gpus = visible_gpus(cfg)
    n = slots(cfg, n_runs, gpus)
    threads = worker_threads(cfg, n)
    logs = f"job logs in {Path(t.log_dir) / '<method>' / '<run>'}/"
    if t.launcher == "local":
        pinned = (f", one of {len(gpus)} GPUs each (CUDA_VISIBLE_DEVICES {','.join(gpus)})" if len(gpus) >= 2
                  else "")
        return f"launcher local: {n} process(es) at once, {threads} CPU thread(s) each{pinned}; {logs}"
    s = t.slurm
    where = ", ".join(x for x in (f"partition {s.partition}" if s.partition else "",
                                  f"account {s.account}" if s.account else "") if x)
    return (f"launcher slurm: {n} job(s) at once{' (' + where + ')' if where else ''}, each {s.gpus_per_job} GPU, "
            f"{s.cpus_per_job} CPUs ({threads} threads), {s.mem_gb} GB, {s.time_min} min, requeued on time limit or "
            f"pre-emption; {logs}")


# --- the waiting side ---------------------------------------------------------------------------

@dataclass
class _Running:
    spec: RunSpec
    job: Any
    slot: int
    started: float
    offset: int = 0
    partial: str = ""
    relay: bool = True


def launch(cfg, specs: list[RunSpec], executor: Callable | None = None, poll_s: float = 1.0,
           identity: Callable | None = None) -> list[Path]:
    """Train every run of ``specs`` as a job of ``train.launcher`` (``local`` or ``slurm``), wait for all
    of them and return their run directories, in order (module docstring: threads, GPUs, code check,
    progress lines, failures, interruption, logs).

    ``identity(cfg, method, split, seed, device)``: the identity (gradmix.rundir) the run function gives
    a run; with it, a run that is already finished, or whose finished copy is kept, is kept or restored
    here (:func:`finished_here`) and no job is started for it. ``executor(folder, spec, threads)``: the
    submitit executor of one job (default :func:`make_executor`; tests pass submitit's
    ``DebugExecutor``, which runs each job in this process). Raises ConfigError (``slurm`` without
    ``sbatch`` on PATH) before anything is submitted, :class:`JobsFailedError` if any run failed,
    KeyboardInterrupt after cancelling the running jobs.
    """
    t = cfg.train
    if t.launcher == "inline":
        raise ConfigError("train.launcher: inline runs train in this process (gradmix.train.every_run), not as jobs")
    specs = list(specs)
    if not specs:
        return []
    if executor is None and t.launcher == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise ConfigError("train.launcher slurm: no `sbatch`/`srun` on PATH; submit from a SLURM login node, or "
                          "use train.launcher local (this machine's GPUs) or inline")
    every = specs
    if identity is not None:
        specs = [s for s in specs if not finished_here(cfg, s, identity)]
        if len(specs) < len(every):
            say(f"{len(every) - len(specs)} of {len(every)} run(s) finished already (kept or restored here); "
                f"{len(specs)} to train")
        if not specs:
            return [Path(s.out_dir) for s in every]
    gpus = visible_gpus(cfg)
    n_slots = slots(cfg, len(specs), gpus)
    threads = worker_threads(cfg, n_slots)
    make = executor or partial(make_executor, cfg)
    params, code, cwd = cfg.to_dict(), code_digests(), os.getcwd()
    say(f"{len(specs)} run(s): {describe(cfg, len(specs))}")

    queue, running, failures = list(specs), [], []
    free, finished = list(range(n_slots)), 0
    with _signals_as_interrupt():
        try:
            while queue or running:
                while queue and free and not failures:
                    spec, slot = queue.pop(0), free.pop(0)
                    env = {}
                    if t.launcher == "local":   # LocalExecutor hides every GPU unless told: say which to see
                        env["CUDA_VISIBLE_DEVICES"] = (gpus[slot % len(gpus)] if len(gpus) >= 2
                                                       else os.environ.get("CUDA_VISIBLE_DEVICES"))
                    fn = RunJob(spec, params, cwd, code, threads, env)
                    with _submit_env(threads):
                        job = make(job_folder(cfg, spec), spec, threads).submit(fn)
                    debug = type(job).__name__ == "DebugJob"     # runs in this process; prints directly
                    running.append(_Running(spec, job, slot, time.time(), relay=not debug))
                    gpu = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if len(gpus) >= 2 else ""
                    say(f"{spec.label}: submitted as job {job.job_id}{gpu}; log {job.paths.stdout}")
                for r in list(running):
                    error = None
                    try:
                        done = r.job.done()
                    except Exception as e:          # DebugExecutor runs the job in done() and raises its error
                        done, error = True, f"{type(e).__name__}: {e}"
                    _relay(r, final=done)
                    if not done:
                        continue
                    running.remove(r)
                    free = sorted([*free, r.slot])
                    error = error or _job_error(r.job)
                    took = _minutes(time.time() - r.started)
                    if error is None:
                        finished += 1
                        say(f"[{finished + len(failures)}/{len(specs)}] {r.spec.label}: finished (job {r.job.job_id}, "
                            f"{took}) -> {r.spec.out_dir}")
                    else:
                        failures.append((r.spec.label, error, r.job.paths.stderr))
                        say(f"[{finished + len(failures)}/{len(specs)}] {r.spec.label}: FAILED (job {r.job.job_id}, "
                            f"{took}): {error}; log {r.job.paths.stderr}"
                            + ("; no new job starts, the running ones finish" if running or queue else ""),
                            sys.stderr)
                if running:
                    time.sleep(poll_s)
                if failures and not running:
                    break
        except KeyboardInterrupt:
            for r in running:
                try:
                    r.job.cancel(check=False)
                except Exception:          # a job that already ended, or no scancel: nothing to cancel
                    pass
            say(f"interrupted: cancelled {len(running)} running job(s) ({', '.join(r.spec.label for r in running)}), "
                f"{len(queue)} not started; finished runs are kept and a rerun resumes the cancelled ones from "
                f"their checkpoints", sys.stderr)
            raise
    if failures:
        raise JobsFailedError(failures, [s.label for s in queue])
    return [Path(s.out_dir) for s in every]


def job_device(cfg):
    """The device type a job's run will train on: this machine's for ``local``; for ``slurm`` CUDA
    when the job asks for GPUs (and ``train.device`` is not ``cpu``), else the CPU."""
    import torch

    t = cfg.train
    if t.launcher == "slurm":
        return torch.device("cuda" if t.slurm.gpus_per_job and t.device != "cpu" else "cpu")
    if t.device == "auto":                 # as gradmix.train.resolve_device (which imports this module)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(t.device)


def finished_here(cfg, spec: RunSpec, identity: Callable) -> bool:
    """True if ``spec``'s run needs no job: its run directory is finished with the identity the job
    would give it, or the finished copy kept in its checkpoint folder is, and was restored here
    (gradmix.checkpoint.RunWriter.done, under the run's lock). A run another process is writing is
    left to its job, which names the writer."""
    from .checkpoint import RunLockedError, RunWriter

    device = job_device(cfg)
    ident = identity(cfg, spec.method, spec.split, spec.seed, device)
    writer = RunWriter(spec.out_dir, ident, label=spec.label, epochs=1, device="cpu",
                       checkpoint_dir=cfg.train.checkpoint_dir, progress=False)
    try:
        with writer:
            return writer.done()
    except RunLockedError:
        return False


def _relay(r: _Running, final: bool = False) -> None:
    """Print the lines the job added to its output log since the last call (all of it when ``final``)."""
    if not r.relay:
        return
    try:
        with open(r.job.paths.stdout, "rb") as f:
            f.seek(r.offset)
            data = f.read()
    except OSError:                    # not created yet
        return
    r.offset += len(data)
    lines = (r.partial + data.decode(errors="replace")).split("\n")
    r.partial = "" if final else lines.pop()
    for line in lines:
        line = line.rsplit("\r", 1)[-1].rstrip()
        if line and not line.startswith("submitit INFO"):     # submitit's own bookkeeping stays in the log
            say(line)


def _job_error(job) -> str | None:
    """None if the job returned, else its error in one line (the last line of the job's traceback)."""
    try:
        exc = job.exception()
    except Exception as e:             # DebugJob re-raises; others raise when the job left no result
        exc = e
    if exc is None:
        return None
    text = str(exc)
    if isinstance(exc, submitit.core.utils.FailedJobError) and "-" * 22 in text:
        trace = text.split("-" * 22)[1]
        last = [line.strip() for line in trace.strip().splitlines() if line.strip()]
        return last[-1] if last else "failed"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"


def _minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def package_path() -> str | None:
    """The folder holding the ``gradmix`` package this process imported, when it is a source checkout
    (None for an installed copy in site-packages, which every Python of the environment finds anyway)."""
    root = Path(__file__).resolve().parent.parent
    return None if {"site-packages", "dist-packages"} & set(root.parts) else str(root)


@contextmanager
def _submit_env(threads: int):
    """The environment a job inherits while it is submitted: the thread variables, and ``PYTHONPATH``
    starting with :func:`package_path`, so the job imports this very package (not another copy that an
    editable install or the job's working directory would find)."""
    saved = {k: os.environ.get(k) for k in (*THREAD_VARIABLES, "PYTHONPATH")}
    values = {k: str(threads) for k in THREAD_VARIABLES}
    root = package_path()
    if root:
        rest = [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p and p != root]
        values["PYTHONPATH"] = os.pathsep.join([root, *rest])
    _set_env(values)
    try:
        yield
    finally:
        _set_env(saved)


@contextmanager
def _signals_as_interrupt():
    """SIGTERM and SIGHUP raise KeyboardInterrupt while jobs are waited for, so they are cancelled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    saved = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


__all__ = ["RunSpec", "RunJob", "JobsFailedError", "CodeChangedError", "launch", "slurm_parameters",
           "make_executor", "visible_gpus", "slots", "worker_threads", "job_folder", "describe"]
