"""Teachers of the distilled students, and the students' wiring into the cross-entropy trainer.

A *teacher* is trained with cross-entropy on the raw (unmixed) images of the known classes: an
ERM run of :func:`gradmix.train.train_run` with the model of params.yaml ``teacher`` and the
``train`` recipe, one per split and seed, written by the ``teacher`` pipeline stage to
``teacher.dir/split<k>-seed<s>`` (default ``runs/teacher``). A *student* (a method with
``kind: distill``) is an ordinary run of the same trainer whose per-batch loss is
:func:`gradmix.distill.distillation_loss` with the frozen teacher of its split and seed:
:func:`student_loss` builds that loss hook and :func:`train_student` passes it to
:func:`gradmix.train.train_run`. The trainer itself knows nothing of distillation.
"""
from __future__ import annotations

import dataclasses
import tempfile
from functools import partial
from pathlib import Path

from torch import nn

from .config import Config, ConfigError, MethodConfig
from .distill import distillation_loss, freeze
from .mixing import NoOptions
from .models import build_model
from .rundir import IncompleteRunError, read_config, run_problem
from .train import every_run, load_model, run_identity, run_name, train_run


def teacher_config(cfg: Config) -> Config:
    """``cfg`` with the teacher's model and an ERM method named ``teacher``."""
    if "teacher" in cfg.methods:
        raise ConfigError("methods.teacher: the name 'teacher' is reserved for the distillation teacher")
    method = MethodConfig(name="teacher", mixer="none", use="replace", options=NoOptions())
    return dataclasses.replace(cfg, model=cfg.teacher.model, methods={**cfg.methods, "teacher": method})


def teacher_dir(cfg: Config, split: int, seed: int) -> Path:
    return Path(cfg.teacher.dir) / run_name(split, seed)


def train_teacher(cfg: Config, split: int, seed: int, out_dir: str | Path, data=None) -> Path:
    """Train the teacher of ``split`` and ``seed`` (CE on raw images) into the run directory ``out_dir``."""
    return train_run(teacher_config(cfg), "teacher", split, seed, out_dir, data)


def teacher_run(cfg: Config, method: str, split: int, seed: int, out_dir: str | Path, data=None) -> Path:
    """:func:`train_teacher` with the signature of :func:`gradmix.train.every_run`'s ``run_fn`` (``method``
    is ``teacher``)."""
    return train_teacher(cfg, split, seed, out_dir, data)


def train_teachers(cfg: Config, out_root: str | Path | None = None) -> list[Path]:
    """Train the teachers of every split and seed into ``out_root`` (default ``cfg.teacher.dir``), one
    after another or as jobs (``train.launcher``, :func:`gradmix.train.every_run`)."""
    out_root = Path(out_root or cfg.teacher.dir)
    if not str(out_root) or str(out_root) == ".":
        raise ConfigError("teacher.dir: empty; name the folder the teacher runs go to")
    return every_run(cfg, "teacher", None, teacher_run, folder=out_root, title=f"teacher ({cfg.teacher.name})",
                     identity=teacher_identity)


def check_teachers(cfg: Config) -> None:
    """Fail before training if ``teacher.dir`` lacks a finished teacher run of some split and seed."""
    if not cfg.teacher.dir:
        return
    missing = [str(teacher_dir(cfg, s, k)) for s in cfg.data.splits for k in cfg.train.seeds
               if run_problem(teacher_dir(cfg, s, k)) is not None]
    if missing:
        raise FileNotFoundError(f"no trained teacher in {missing}: run the teacher stage first "
                                f"(`dvc repro teacher`, or gradmix.teacher.train_teachers(cfg))")


def load_teacher(cfg: Config, split: int, seed: int, data, device) -> nn.Module:
    """The frozen teacher of ``split`` and ``seed``, loaded from its checkpoint and checked against
    the student's data: same dataset, image size and known classes. With ``teacher.dir: ""`` it is
    first trained into a temporary folder (smoke runs)."""
    if cfg.teacher.dir:
        path = teacher_dir(cfg, split, seed)
    else:
        path = train_teacher(cfg, split, seed, Path(tempfile.mkdtemp(prefix="gradmix-teacher-")) / "run", data)
    try:
        info = read_config(path)                     # a finished run, verified
    except IncompleteRunError as e:
        raise FileNotFoundError(f"no trained teacher at {path} ({e}): run the teacher stage first "
                                f"(`dvc repro teacher`, or gradmix.teacher.train_teachers(cfg))") from None
    theirs, ours = info["data"], dataclasses.asdict(cfg.data)
    for key in ("dataset", "image_size", "test_fraction", "split_seed", "max_train"):
        if theirs.get(key) != ours[key]:
            raise ValueError(f"teacher {path} was trained with data.{key}={theirs.get(key)!r}, the student "
                             f"uses {ours[key]!r}: retrain the teachers (`dvc repro teacher`)")
    if info["run"]["known_classes"] != list(data.known):
        raise ValueError(f"teacher {path} knows classes {info['run']['known_classes']}, split {split} "
                         f"has {list(data.known)}")
    return freeze(load_model(path, device))


def student_loss(cfg: Config, method: MethodConfig):
    """The loss hook of a ``kind: distill`` method for :func:`gradmix.train.train_run` (its ``loss``).

    Returns ``factory(student, mixer, data, split, seed, device)``, which loads (or, with
    ``teacher.dir: ""``, trains) the frozen teacher of ``split`` and ``seed`` and returns the
    per-batch loss ``f(x, y, num_classes, generator, label_smoothing)`` =
    :func:`gradmix.distill.distillation_loss` with the method's ``distill`` options.
    """
    def factory(student: nn.Module, mixer, data, split: int, seed: int, device):
        teacher = load_teacher(cfg, split, seed, data, device)
        return partial(distillation_loss, student, teacher, mixer, method.distill)

    return factory


def train_student(cfg: Config, method: str, split: int, seed: int, out_dir: str | Path, data=None) -> Path:
    """Train the ``kind: distill`` method ``method`` on ``split`` with ``seed`` into ``out_dir``: the
    cross-entropy trainer's run with the student loss of :func:`student_loss`."""
    m = cfg.method(method)
    if m.kind != "distill":
        raise ConfigError(f"methods.{method}: kind {m.kind!r}; a student needs kind 'distill'")
    return train_run(cfg, method, split, seed, out_dir, data, loss=student_loss(cfg, m),
                     identity=student_identity(cfg))


def student_identity(cfg: Config) -> dict:
    """The config sections a student's results depend on besides the cross-entropy run's: the teacher."""
    return {"teacher": dataclasses.asdict(cfg.teacher)}


def teacher_identity(cfg: Config, method: str, split: int, seed: int, device) -> dict:
    """The identity (gradmix.rundir) of the teacher run of ``split`` and ``seed`` on a ``device``."""
    tc = teacher_config(cfg)
    return run_identity(tc, tc.method("teacher"), split, seed, device)


def benchmark_loss(cfg: Config, method: MethodConfig, student: nn.Module, mixer, in_channels: int,
                   num_classes: int, device="cpu"):
    """A ``kind: distill`` method's per-batch loss with a freshly initialised, frozen teacher of the
    configured architecture: for step-time benchmarks (bench/bench.py), where no trained teacher
    exists. A step costs the same as with the trained teacher; never use it to train."""
    teacher = freeze(build_model(cfg.teacher.model, in_channels, num_classes).to(device))
    return partial(distillation_loss, student, teacher, mixer, method.distill)
