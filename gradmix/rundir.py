"""Run directories: layout, completion marker, verification, identity and discovery of finished runs.

A *run* is one method trained on one split with one seed. Its directory ``<root>/<method>/split<k>-seed<s>``
holds ``config.json``, ``model.pt``, ``log.csv`` and ``scores.npz`` (:data:`RUN_FILES`), a ``dvclive/``
folder of per-epoch curves, and, written last, the completion marker ``complete.json``: the size and
sha256 of each run file and the hash of the run's *identity* (below). The rules every reader follows:

* a directory is a **finished run** only if ``complete.json`` exists, parses, and every file it lists
  has the recorded size (and, when the file is read, the recorded sha256). Anything else is reported
  by name (:class:`IncompleteRunError`, :class:`CorruptFileError`), never read;
* ``<run>.tmp`` is a run being trained (or one whose training was killed): never read;
  ``<run>.ckpt`` (checkpoints kept beside a run, ``train.checkpoint_dir: ""``) and ``<run>.old``
  (the previous copy, for the instant it is being replaced) are not runs at all;
* :func:`scan` compares what it finds with the *plan* (methods x splits x seeds): a planned run that
  is missing or unfinished is named, so an evaluation can never aggregate fewer runs silently.

A run's **identity** (:func:`make_identity`) is everything that determines its results: its method,
split, seed and track, the config sections it reads (without knobs that change nothing: ``progress``,
``checkpoint_every``, ``checkpoint_dir``, ``device``, the launcher knobs, the lists of splits and seeds,
the data root and mirror), the device *type* (CPU and CUDA runs differ, and their random-number states have different
formats), and the sha256 of each source file of this package that training executes (everything but
the modules that only read finished runs or fetch data: :data:`NOT_TRAINING_CODE`). A checkpoint or a
finished run is only reused for the same identity, so a changed parameter *or* an edited mixer never
resumes or restores stale results. What the identity leaves out but a user may want to know (host,
CPU, threads, versions, git commit) is recorded by :func:`environment` in ``config.json``.

This module is a leaf: of gradmix it imports only the version (``gradmix/__init__.py``, which imports
nothing), so the trainers, evaluation and reports can all use it.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import time
import warnings
from functools import lru_cache
from pathlib import Path

RUN_FILES = ("config.json", "model.pt", "log.csv", "scores.npz")
MARKER = "complete.json"
LIVE_DIR = "dvclive"              # per-epoch curves in DVCLive's layout (gradmix.epochlog)
STAGING = ".tmp"                  # <run>.tmp: the run being written
BESIDE = ".ckpt"                  # <run>.ckpt: its checkpoints, with train.checkpoint_dir ""
REPLACED = ".old"                 # <run>.old: the previous copy while a new one takes its place
FORMAT = 1

# knobs that do not change a run's results, left out of its identity
NOT_RESULTS = {"train": ("progress", "checkpoint_every", "checkpoint_dir", "device", "seeds", "max_data_fraction",
                          "launcher", "workers", "log_dir", "slurm"),
               "data": ("root", "mirror", "splits"),
               "teacher": ("dir",)}
# package modules that training never executes (they read finished runs, or fetch verified data)
NOT_TRAINING_CODE = ("evaluate.py", "report.py", "robustness.py", "ood.py", "corruption.py", "scores.py",
                     "download.py", "cli.py", "__main__.py", "launcher.py")


class IncompleteRunError(FileNotFoundError):
    """A run directory is missing or not finished (no valid completion marker); the message names it."""


class CorruptFileError(ValueError):
    """A run file or checkpoint is damaged or not what it should be; the message names file and problem."""


# --- names and the plan -------------------------------------------------------------------------

def run_name(split: int, seed: int) -> str:
    return f"split{split}-seed{seed}"


def planned_runs(cfg) -> list[str]:
    """The run names a config trains for each method: ``split<k>-seed<s>`` for its splits x seeds."""
    return [run_name(k, s) for k in cfg.data.splits for s in cfg.train.seeds]


# --- atomic writes ------------------------------------------------------------------------------

def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in directory ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one, never a part:
    a temporary name in the same folder, fsync, ``os.replace``, fsync of the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- completion marker --------------------------------------------------------------------------

def write_marker(run_dir: str | Path, identity: dict, files=RUN_FILES) -> dict:
    """Seal a run directory whose ``files`` are complete: fsync them, then write ``complete.json``
    (sizes, sha256, identity hash) atomically. Call it last."""
    run_dir = Path(run_dir)
    records = {}
    for name in files:
        with open(run_dir / name, "rb") as f:
            os.fsync(f.fileno())
        records[name] = {"size": (run_dir / name).stat().st_size, "sha256": sha256(run_dir / name)}
    marker = {"format": FORMAT, "files": records, "identity_hash": identity_hash(identity),
              "identity": identity, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write(run_dir / MARKER, json.dumps(marker, indent=1) + "\n")
    return marker


def read_marker(run_dir: str | Path) -> dict:
    """The validated completion marker of ``run_dir``.

    Raises IncompleteRunError (no marker: not finished) or CorruptFileError (it does not parse or
    lacks its fields).
    """
    run_dir = Path(run_dir)
    path = run_dir / MARKER
    if not run_dir.is_dir():
        raise IncompleteRunError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise IncompleteRunError(f"{run_dir} is not a finished run: it has no {MARKER} (its training was "
                                 f"interrupted or is still running, or an older gradmix wrote it); train "
                                 f"it again: the trainer resumes from its checkpoint")
    try:
        marker = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e}); delete {run_dir} and train the run again") from None
    files = marker.get("files") if isinstance(marker, dict) else None
    if (not isinstance(files, dict) or not files or not isinstance(marker.get("identity_hash"), str)
            or not all(isinstance(r, dict) and isinstance(r.get("size"), int) and isinstance(r.get("sha256"), str)
                       for r in files.values())):
        raise CorruptFileError(f"{path}: not a completion marker (expected a mapping with 'files': "
                               f"{{name: {{size, sha256}}}} and 'identity_hash'); delete {run_dir} and "
                               f"train the run again")
    return marker


def verify_run(run_dir: str | Path, files=None, digests: bool = True) -> dict:
    """Check that ``run_dir`` is a finished run; return its marker.

    Every recorded file must exist with its recorded size; ``files`` (default: all recorded ones) are
    also checked against their sha256 when ``digests``. Raises IncompleteRunError or CorruptFileError,
    naming the file and the problem.
    """
    run_dir = Path(run_dir)
    marker = read_marker(run_dir)
    missing = [n for n in RUN_FILES if n not in marker["files"]]
    if missing:
        raise CorruptFileError(f"{run_dir / MARKER}: does not record {missing}; delete {run_dir} and train "
                               f"the run again")
    check = marker["files"] if files is None else files
    for name, rec in marker["files"].items():
        path = run_dir / name
        if not path.is_file():
            raise IncompleteRunError(f"{path}: missing, though {MARKER} records it; restore the run "
                                     f"(dvc checkout) or train it again")
        size = path.stat().st_size
        if size != rec["size"]:
            raise CorruptFileError(f"{path}: {size} bytes, {MARKER} records {rec['size']} (truncated or changed "
                                   f"after the run finished); restore the run (dvc checkout) or train it again")
        if digests and name in check and sha256(path) != rec["sha256"]:
            raise CorruptFileError(f"{path}: sha256 differs from the one {MARKER} records (the file was damaged "
                                   f"or changed after the run finished); restore the run (dvc checkout) or "
                                   f"train it again")
    return marker


def run_problem(run_dir: str | Path, digests: bool = False) -> str | None:
    """None if ``run_dir`` is a finished run (see :func:`verify_run`), else what is wrong with it."""
    try:
        verify_run(run_dir, digests=digests)
    except (IncompleteRunError, CorruptFileError) as e:
        return str(e)
    return None


def read_config(run_dir: str | Path) -> dict:
    """The ``config.json`` of a finished run (verified against the marker), with a ``run`` block that
    names method, split and seed. Raises IncompleteRunError or CorruptFileError."""
    run_dir = Path(run_dir)
    verify_run(run_dir, files=("config.json",))
    path = run_dir / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e})") from None
    info = cfg.get("run") if isinstance(cfg, dict) else None
    if not isinstance(info, dict):
        raise CorruptFileError(f"{path}: expected a mapping with a 'run' block (method, split, seed, ...), "
                               f"got {type(cfg).__name__ if not isinstance(cfg, dict) else 'none'}")
    for key, typ in (("method", str), ("split", int), ("seed", int), ("dataset", str)):
        if not isinstance(info.get(key), typ) or isinstance(info.get(key), bool):
            raise CorruptFileError(f"{path}: run.{key} is {info.get(key)!r}, expected a {typ.__name__}")
    return cfg


# --- discovery ----------------------------------------------------------------------------------

def scan(root: str | Path, methods=None, expected=None) -> tuple[list[Path], list[str], list[str]]:
    """Finished runs under ``root/<method>/<run>``, and what stands in the way of the plan.

    ``methods``: the method folders to read (default: every folder of ``root``); ``expected``: the run
    names each method must have (:func:`planned_runs`; default: every run name found for any of the
    methods, finished or not). Returns (finished run directories in method then plan order; problems:
    one line per planned run that is missing or not finished; notes: leftovers beside finished runs,
    unplanned unfinished runs). Sizes are checked, digests are left to the reader of each file.
    """
    root = Path(root)
    if not root.is_dir():
        raise IncompleteRunError(f"no run folder {root.resolve()}")
    names = list(methods) if methods is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    finished: dict[str, dict[str, Path]] = {}
    broken: dict[str, dict[str, str]] = {}
    for m in names:
        finished[m], broken[m] = {}, {}
        folder = root / m
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not p.is_dir() or p.name.endswith((BESIDE, REPLACED)):
                continue
            if p.name.endswith(STAGING):
                broken[m].setdefault(p.name[:-len(STAGING)],
                                     f"{m}/{p.name}: an interrupted (or still running) training, never read")
                continue
            problem = run_problem(p)
            if problem is None:
                finished[m][p.name] = p
            else:
                broken[m][p.name] = f"{m}/{p.name}: {problem}"
    plan = list(expected) if expected is not None else sorted(
        {n for m in names for n in (*finished[m], *broken[m])}, key=_natural)
    runs, problems, notes = [], [], []
    for m in names:
        if not plan and not finished[m]:
            problems.append(f"{m}: no runs in {root / m}")
        for n in plan:
            if n in finished[m]:
                runs.append(finished[m][n])
                if n in broken[m]:
                    notes.append(broken[m][n] + " (a finished run of that name is used)")
            else:
                problems.append(broken[m].get(n, f"{m}/{n}: missing"))
        notes += [why for n, why in broken[m].items() if n not in plan]
    return runs, problems, notes


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_finished(root: str | Path, methods=None, expected=None, *, strict: bool = True) -> list[Path]:
    """:func:`scan`, failing (``strict``) or warning when a planned run is missing or unfinished."""
    runs, problems, notes = scan(root, methods, expected)
    for note in notes:
        warnings.warn(f"{root}: {note}", stacklevel=3)
    if problems:
        msg = (f"{len(problems)} planned run(s) under {root} are missing or not finished: "
               + "; ".join(problems[:8]) + (f"; ... ({len(problems) - 8} more)" if len(problems) > 8 else "")
               + ". Train them (an interrupted run resumes from its checkpoint), or evaluate a plan without them.")
        if strict:
            raise IncompleteRunError(msg)
        warnings.warn(msg, stacklevel=3)
    return runs


# --- identity and environment -------------------------------------------------------------------

@lru_cache(maxsize=1)
def code_digests() -> dict[str, str]:
    """``{"gradmix/<file>": sha256[:16]}`` of every source file of this package that training executes."""
    pkg = Path(__file__).resolve().parent
    out = {}
    for p in sorted(pkg.rglob("*.py")):
        rel = p.relative_to(pkg).as_posix()
        if rel not in NOT_TRAINING_CODE:
            out[f"{pkg.name}/{rel}"] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return out


def make_identity(run: dict, sections: dict, device_type: str) -> dict:
    """What determines a run's results (module docstring): ``run`` (method, split, seed, track), the
    config ``sections`` it reads (mappings; knobs in :data:`NOT_RESULTS` dropped), the device type and
    the code digests."""
    def clean(name, values):
        drop = NOT_RESULTS.get(name, ())
        return {k: v for k, v in values.items() if k not in drop} if isinstance(values, dict) else values

    ident = {"run": run, "config": {k: clean(k, v) for k, v in sections.items()}, "device_type": device_type,
             "code": code_digests()}
    return json.loads(json.dumps(ident, sort_keys=True, default=list))    # tuples -> lists, as stored


def identity_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def identity_diff(old, new: dict, limit: int = 4) -> str:
    """What differs between two identities, e.g. ``train.epochs 10 -> 15; code: gradmix/train.py``."""
    if not isinstance(old, dict):
        return "no identity recorded"

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k != "code":
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat({k: v for k, v in old.items() if k != "code"}), flat({k: v for k, v in new.items() if k != "code"})
    items = [f"{k.removeprefix('config.')} {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    oc, nc = old.get("code") or {}, new.get("code") or {}
    files = sorted(f for f in set(oc) | set(nc) if oc.get(f) != nc.get(f))
    if files:
        items.append("code changed: " + ", ".join(files[:limit]) + (" ..." if len(files) > limit else ""))
    return "; ".join(items[:limit] + (["..."] if len(items) > limit else [])) or "identical"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    """``git <args>`` in the folder of this package; its output, or None (no git, not a checkout, timeout)."""
    try:
        r = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                           timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@lru_cache(maxsize=1)
def _git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout this package runs from: the commit of ``HEAD`` and whether
    the package's tracked sources differ from it (uncommitted edits). (None, None) when the package
    does not run from a checkout of its own repository (installed into site-packages, no git): then
    any repository that merely encloses the installation is not reported as the package's."""
    top = _git("rev-parse", "--show-toplevel")
    here = Path(__file__).resolve().parent
    if top is None or Path(top).resolve() / here.name != here:
        return None, None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", str(here))
    return commit, (None if status is None else bool(status))


def _version() -> str:
    """The version of the gradmix package that runs (``gradmix.__version__``, the single source; the
    installed distribution's metadata may belong to another checkout, or be absent)."""
    from . import __version__

    return __version__


def _library_versions() -> dict:
    """Versions of the libraries whose arithmetic or random streams a run's numbers depend on (None
    where one is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "torchvision", "numpy", "scikit-learn", "scipy", "kornia", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def environment(device) -> dict:
    """Where and with what a run was trained (recorded in config.json, not part of its identity): the
    device and its name, the CPU model, torch's thread count (``train.threads``), Python and library
    versions (torch, torchvision, numpy, scikit-learn, scipy, kornia, Pillow), the package version,
    the git commit of the gradmix checkout with ``git_dirty`` (its package sources differ from that
    commit; both None outside a git checkout of gradmix), the host. On the CPU, runs are bit-identical
    when the CPU type, the thread count and these versions match (docs/reproducibility.md)."""
    import torch

    device = torch.device(device)
    commit, dirty = _git_state()
    return {"device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
            "gradmix": _version(), "git_commit": commit, "git_dirty": dirty, "torch": torch.__version__,
            "python": platform.python_version(), "cpu": _cpu_model(), "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "libraries": _library_versions(),
            "host": socket.gethostname()}
