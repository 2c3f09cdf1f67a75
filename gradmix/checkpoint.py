"""One writer per run, checkpoints, resume and restore: the life cycle both trainers share.

:class:`RunWriter` wraps the training of one run directory ``out_dir`` (``<root>/<method>/split<k>-seed<s>``):

1. **Lock.** An exclusive ``flock`` on ``<checkpoint folder>/writer.lock`` is taken before any data is
   loaded. A second writer of the same run fails at once with :class:`RunLockedError`, naming the
   holder (pid, host, start time, command, which the holder writes into the lock file). The kernel
   releases the lock when its process ends, however it ends (SIGKILL included), so a killed run
   never leaves a stale lock. The lock covers everything up to the final rename into ``out_dir``.
   ``flock`` (not the ``filelock`` package): the holder's details live in the locked file itself and
   are cleared before release, which filelock does not offer; like gradmix.download, Unix only. On NFS,
   ``flock`` works where the server supports locks (Linux clients emulate it with byte-range locks).
2. **Nothing to do?** If ``out_dir`` is a finished run (gradmix.rundir) of the same identity, the run
   is skipped ("already finished"). If the checkpoint folder keeps a finished copy (``final/``) of the
   same identity, it is copied into place without training ("restored").
3. **Resume.** If the checkpoint folder holds a checkpoint of the same identity, the model,
   optimiser, scheduler, every generator, torch's global RNG (and CUDA's, on a GPU), the epoch and
   the log so far are restored ("resumed <run> from epoch k (<path>)"); on the CPU the run then ends
   bit-identical to an uninterrupted one. A checkpoint of another identity is ignored ("starting
   fresh", with what differs) and overwritten by the first new one.
4. **Train** into the staging folder ``<out_dir>.tmp`` (deleted and recreated; never read): a
   checkpoint every ``train.checkpoint_every`` epochs and at the last epoch, written atomically
   (``checkpoint-e<epoch>.pt``, then ``checkpoint.json`` with its size and sha256 as the commit point).
5. **Commit.** The run files, then ``complete.json`` (written last), then a rename of the staging
   folder to ``out_dir``; then a copy of the finished run goes to ``<checkpoint folder>/final/`` and
   the training checkpoints are deleted (a finished run never resumes; its copy is what a rerun
   restores).

**Where checkpoints live.** ``train.checkpoint_dir`` (default ``checkpoints``, relative to the working
directory) holds one folder per run directory: ``<checkpoint_dir>/<out_dir relative to the working
directory>`` (``checkpoints/runs/erm/split0-seed0`` for the pipeline's ``runs/erm/split0-seed0``; a
run directory outside the working directory maps to ``<checkpoint_dir>/_abs/<its absolute path>``).
This folder is *outside* DVC's outputs on purpose: DVC deletes a stage's ``outs`` before it reruns
the stage, so checkpoints inside ``runs/`` would vanish exactly when they are needed; with them
outside, rerunning a killed ``dvc repro`` restores the finished runs from their copies and resumes
the partial one. (``persist: true`` would keep the outputs instead, but then stale runs of earlier
configurations stay in ``runs/`` and are committed to DVC's cache with the new ones.) With
``checkpoint_dir: ""`` the folder is ``<out_dir>.ckpt`` beside the run: fine for temporary folders
and runs no pipeline manages.

**Corrupt files.** A checkpoint that does not parse, does not match its recorded size or sha256, or
lacks its fields stops the run with :class:`CorruptCheckpointError`, naming the file, the problem and
the folder to delete to start the run afresh. It is not discarded silently: checkpoints are written
atomically with a digest, so a damaged one means the disk or a copy failed, which the user should
know about before the same storage receives new results, and discarding it would throw away the
training it holds.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import torch

from .epochlog import LiveLog, epoch_line, first_nonfinite, say
from .rundir import (BESIDE, FORMAT, LIVE_DIR, MARKER, REPLACED, STAGING, CorruptFileError,
                     IncompleteRunError, atomic_write, environment, fsync_dir, identity_diff, identity_hash,
                     verify_run, write_marker)

STATE_KEYS = ("model", "optimizer", "scheduler", "generators", "host_rngs", "scaler", "torch_rng", "cuda_rng")


class RunLockedError(RuntimeError):
    """Another process is writing the run directory; the message names it."""


class CorruptCheckpointError(CorruptFileError):
    """A checkpoint (or the kept copy of a finished run) is damaged; the message names file, problem, remedy."""


class DivergedError(FloatingPointError):
    """The training loss (or the model's outputs) became NaN or infinite; nothing of that epoch was kept."""


def checkpoint_folder(out_dir: str | Path, checkpoint_dir: str) -> Path:
    """The folder of ``out_dir``'s lock, checkpoints and finished copy (module docstring)."""
    out = Path(os.path.abspath(out_dir))
    if not checkpoint_dir:
        return out.with_name(out.name + BESIDE)
    try:
        rel = out.relative_to(os.getcwd())
    except ValueError:
        rel = Path("_abs", *out.parts[1:])
    return Path(checkpoint_dir) / rel


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``path`` holding a description of its holder."""

    def __init__(self, path: Path, label: str):
        self.path, self.label, self.fd = Path(path), label, None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 1 << 16, 0).decode(errors="replace")
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(f"{self.label}: another process is writing this run ({_describe(holder)}); "
                                 f"it holds {self.path}. Wait for it to finish or stop it; a stopped or "
                                 f"killed holder releases the lock at once.") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv) or sys.executable, "cwd": os.getcwd()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
                self.fd = None


def _describe(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']}, since {h['started']}, command: {h['command']} (in {h['cwd']})"
    except (ValueError, KeyError, TypeError):
        return "its details are not written yet"


def capture_state(parts: dict, device: torch.device) -> dict:
    """Everything a resumed run needs besides the log: ``parts`` = model, optimizer, scheduler,
    generators ({name: torch.Generator}), optionally host_rngs ({name: numpy.random.Generator}, the
    per-batch scalar draws) and precision (a gradmix.precision.Precision: the fp16 gradient scaler);
    plus torch's global CPU RNG and, on CUDA, the device's."""
    precision = parts.get("precision")
    return {"model": parts["model"].state_dict(), "optimizer": parts["optimizer"].state_dict(),
            "scheduler": parts["scheduler"].state_dict(),
            "generators": {k: g.get_state() for k, g in parts["generators"].items()},
            "host_rngs": {k: r.bit_generator.state for k, r in parts.get("host_rngs", {}).items()},
            "scaler": precision.state_dict() if precision is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_state(state: dict, parts: dict, device: torch.device) -> None:
    """Load :func:`capture_state`'s output into ``parts`` and the global RNGs."""
    parts["model"].load_state_dict(state["model"])
    parts["optimizer"].load_state_dict(state["optimizer"])
    parts["scheduler"].load_state_dict(state["scheduler"])
    if set(state["generators"]) != set(parts["generators"]):
        raise KeyError(f"generators {sorted(state['generators'])}, expected {sorted(parts['generators'])}")
    for k, g in parts["generators"].items():
        g.set_state(state["generators"][k].cpu())
    rngs = parts.get("host_rngs", {})
    if set(state["host_rngs"]) != set(rngs):
        raise KeyError(f"host generators {sorted(state['host_rngs'])}, expected {sorted(rngs)}")
    for k, r in rngs.items():
        r.bit_generator.state = state["host_rngs"][k]
    if parts.get("precision") is not None:
        parts["precision"].load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    if device.type == "cuda" and state["cuda_rng"] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)


class RunWriter:
    """The one writer of run directory ``out_dir`` (module docstring); use it as a context manager.

    ``identity``: gradmix.rundir.make_identity of the run; ``label``: ``<method>/<run>`` for messages;
    ``epochs``: the run's length; ``checkpoint_dir``, ``checkpoint_every``, ``progress``: the
    ``train`` knobs of the same names.
    """

    def __init__(self, out_dir: str | Path, identity: dict, *, label: str, epochs: int, device,
                 checkpoint_dir: str = "checkpoints", checkpoint_every: int = 1, progress: bool = True):
        self.out_dir = Path(out_dir)
        self.staging = self.out_dir.with_name(self.out_dir.name + STAGING)
        self.folder = checkpoint_folder(self.out_dir, checkpoint_dir)
        self.identity, self.hash = identity, identity_hash(identity)
        self.label, self.epochs, self.device = label, epochs, torch.device(device)
        self.every, self.progress = checkpoint_every, progress
        self.lock = RunLock(self.folder / "writer.lock", label)
        self.log: list[dict] = []
        self.history: list[dict] = []
        self.live: LiveLog | None = None
        self.discard = f"delete {self.folder} to train this run from the start"

    def __enter__(self) -> "RunWriter":
        self.lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()

    # --- before training ---------------------------------------------------------------------

    def done(self) -> bool:
        """True if the run needs no training: ``out_dir`` is finished with this identity, or the
        kept finished copy was restored into it."""
        if self.out_dir.is_dir():
            try:
                marker = verify_run(self.out_dir)
            except (IncompleteRunError, CorruptFileError) as e:
                say(f"{self.label}: {self.out_dir} is not a usable finished run ({e}); it is replaced when "
                    f"this run finishes")
            else:
                if marker["identity_hash"] == self.hash:
                    if _marker_hash(self.folder / "final") != self.hash:
                        self._keep_final()
                    say(f"{self.label}: already finished in {self.out_dir}; not retrained")
                    return True
                say(f"{self.label}: {self.out_dir} was trained differently "
                    f"({identity_diff(marker.get('identity'), self.identity)}); it is replaced when this run finishes")
        final = self.folder / "final"
        if (final / MARKER).is_file():
            try:
                marker = verify_run(final)
            except (IncompleteRunError, CorruptFileError) as e:
                raise CorruptCheckpointError(f"{e} [the kept copy of the finished run; {self.discard}]") from None
            if marker["identity_hash"] == self.hash:
                shutil.rmtree(self.staging, ignore_errors=True)
                shutil.copytree(final, self.staging)
                self._install()
                say(f"restored {self.label} from its finished copy ({final}); not retrained")
                return True
        return False

    def start(self, parts: dict) -> list[dict]:
        """Resume from a checkpoint of this identity (restoring ``parts``) or start fresh; prepare the
        staging folder and its curves. Returns the log so far (one dict per finished epoch)."""
        payload = self._read_checkpoint()
        if payload is not None:
            try:
                restore_state(payload["state"], parts, self.device)
            except (RuntimeError, KeyError, ValueError, TypeError) as e:
                raise CorruptCheckpointError(f"{self._pt}: does not fit this run's model and optimiser "
                                             f"({type(e).__name__}: {e}); {self.discard}") from None
            self.log, self.history = list(payload["log"]), list(payload["history"])
            say(f"resumed {self.label} from epoch {payload['epoch']} ({self._pt})")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        first = len(self.log) + 1
        self.history.append({"from_epoch": first, "host": socket.gethostname(), "pid": os.getpid(),
                             "device": str(self.device), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        say(f"{self.label}: training on {self.device}, epochs {first}-{self.epochs} of {self.epochs} -> {self.out_dir}"
            if first <= self.epochs else f"{self.label}: all {self.epochs} epochs done on {self.device}; "
                                          f"writing the run -> {self.out_dir}")
        self.live = LiveLog(self.staging / LIVE_DIR, self.log)
        return self.log

    @property
    def seconds_before(self) -> float:
        """Training seconds of the epochs done before this process (0 for a fresh run)."""
        return float(self.log[-1].get("seconds", 0.0)) if self.log else 0.0

    def _read_checkpoint(self) -> dict | None:
        meta_path = self.folder / "checkpoint.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptCheckpointError(f"{meta_path}: not valid JSON ({e}); {self.discard}") from None
        types = {"file": str, "size": int, "sha256": str, "epoch": int, "identity_hash": str}
        if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) for k, t in types.items()) \
                or not re.fullmatch(r"checkpoint-e\d+\.pt", meta["file"]):
            raise CorruptCheckpointError(f"{meta_path}: not a checkpoint record (expected a mapping with "
                                         f"{sorted(types)}); {self.discard}")
        if meta["identity_hash"] != self.hash:
            say(f"{self.label}: starting fresh, not resuming {self.folder / meta['file']}: it belongs to a "
                f"different run ({identity_diff(meta.get('identity'), self.identity)})")
            return None
        self._pt = pt = self.folder / meta["file"]
        if not pt.is_file():
            raise CorruptCheckpointError(f"{pt}: missing, though {meta_path} records it; {self.discard}")
        data = pt.read_bytes()
        if len(data) != meta["size"]:
            raise CorruptCheckpointError(f"{pt}: {len(data)} bytes, {meta_path} records {meta['size']} "
                                         f"(truncated); {self.discard}")
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise CorruptCheckpointError(f"{pt}: sha256 differs from the one {meta_path} records (the file "
                                         f"is damaged); {self.discard}")
        try:
            payload = torch.load(io.BytesIO(data), map_location=self.device, weights_only=True)
        except Exception as e:          # torch raises many types for a bad archive
            raise CorruptCheckpointError(f"{pt}: cannot be read ({type(e).__name__}: {e}); {self.discard}") from None
        problem = self._payload_problem(payload)
        if problem:
            raise CorruptCheckpointError(f"{pt}: {problem}; {self.discard}")
        return payload

    def _payload_problem(self, p) -> str | None:
        if not isinstance(p, dict):
            return f"not a checkpoint: a {type(p).__name__}, expected a dict"
        missing = sorted({"format", "identity_hash", "epoch", "log", "history", "state"} - set(p))
        if missing:
            return f"not a checkpoint: keys {missing} are missing"
        if p["identity_hash"] != self.hash:
            return "its identity differs from the one checkpoint.json records"
        if not isinstance(p["epoch"], int) or not 1 <= p["epoch"] <= self.epochs:
            return f"epoch {p['epoch']!r} is not in 1..{self.epochs}"
        if not isinstance(p["log"], list) or len(p["log"]) != p["epoch"] or not all(isinstance(r, dict) for r in p["log"]):
            return f"its log is not {p['epoch']} rows (one per epoch)"
        if not isinstance(p["history"], list):
            return "its history is not a list"
        if not isinstance(p["state"], dict) or set(p["state"]) != set(STATE_KEYS):
            return f"its state does not hold {list(STATE_KEYS)}"
        return None

    # --- during training ---------------------------------------------------------------------

    def check_epoch(self, losses, outputs, epoch: int, hint: str = "") -> None:
        """Raise DivergedError if an epoch's per-step ``losses`` (steps,) or the model's ``outputs``
        after it (any shape; e.g. test logits) hold a NaN or infinity, naming the run, the epoch and
        the first bad step. Finite losses with non-finite outputs mean the last step's update broke
        the weights. Nothing of the epoch is saved."""
        import numpy as np

        losses = np.asarray(losses, dtype=np.float64)
        bad = first_nonfinite(losses)
        if bad is not None:
            what = f"the training loss is {bad[1]} at epoch {epoch}, step {bad[0] + 1} of {len(losses)}"
        else:
            out = first_nonfinite(np.asarray(outputs, dtype=np.float64).ravel())
            if out is None:
                return
            what = (f"the weights became non-finite at epoch {epoch}, step {len(losses)} of {len(losses)} "
                    f"(its loss was {losses[-1]:.4g}; the model's test output after the epoch is {out[1]})")
        run = self.identity["run"]
        kept = (f"the checkpoint of epoch {len(self.log)} is kept" if self.every and self.log
                else "no checkpoint of it is kept")
        raise DivergedError(f"{self.label} (method {run['method']}, split {run['split']}, seed {run['seed']}): "
                            f"{what}. Training stopped; nothing of epoch {epoch} was saved and {self.out_dir} "
                            f"was not written ({kept}).{' ' + hint if hint else ''}")

    def end_epoch(self, row: dict, parts: dict) -> None:
        """Record a finished epoch: the log, the progress line, the curves, and a checkpoint when due."""
        self.log.append(row)
        if self.progress:
            say(epoch_line(self.label, row, self.epochs))
        self.live.log(row)
        epoch = row["epoch"]
        if self.every and (epoch % self.every == 0 or epoch == self.epochs):
            self.save(epoch, parts)

    def save(self, epoch: int, parts: dict) -> Path:
        """Write the checkpoint of ``epoch`` atomically; older ones are deleted after it is in place."""
        payload = {"format": FORMAT, "identity_hash": self.hash, "epoch": epoch, "log": self.log,
                   "history": self.history, "state": capture_state(parts, self.device)}
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        name = f"checkpoint-e{epoch:05d}.pt"
        atomic_write(self.folder / name, data)
        meta = {"format": FORMAT, "file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "epoch": epoch, "identity_hash": self.hash, "identity": self.identity,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write(self.folder / "checkpoint.json", json.dumps(meta, indent=1) + "\n")
        for old in self.folder.glob("checkpoint-e*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return self.folder / name

    # --- after training ----------------------------------------------------------------------

    def run_info(self) -> dict:
        """For config.json's ``run`` block: the environment, the identity hash and the training segments
        (one per process that trained part of the run: where it resumed)."""
        return {**environment(self.device), "config_hash": self.hash, "segments": self.history}

    def commit(self) -> Path:
        """Seal the staging folder (its run files must be written), move it to ``out_dir``, keep a copy."""
        write_marker(self.staging, self.identity)
        self._install()
        self._keep_final()
        total = self.log[-1].get("seconds", 0.0) if self.log else 0.0
        say(f"{self.label}: finished ({total:.1f} s of training) -> {self.out_dir}")
        return self.out_dir

    def _install(self) -> None:
        old = self.out_dir.with_name(self.out_dir.name + REPLACED)
        shutil.rmtree(old, ignore_errors=True)
        if self.out_dir.exists():
            os.replace(self.out_dir, old)
        os.replace(self.staging, self.out_dir)
        shutil.rmtree(old, ignore_errors=True)
        fsync_dir(self.out_dir.parent)

    def _keep_final(self) -> None:
        final, tmp, old = (self.folder / n for n in ("final", "final.tmp", "final.old"))
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.out_dir, tmp)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        fsync_dir(self.folder)
        (self.folder / "checkpoint.json").unlink(missing_ok=True)
        for p in self.folder.glob("checkpoint-e*.pt"):
            p.unlink(missing_ok=True)


def _marker_hash(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / MARKER).read_text()).get("identity_hash")
    except (OSError, ValueError, AttributeError):
        return None
