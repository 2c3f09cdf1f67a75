"""Train any method by name: the one entry point of notebooks, tests, the pipeline and scripts.

A name is looked up in params.yaml's ``methods`` and ``contrastive.methods`` (config validation
keeps the two sets of names disjoint), and the method's *track* decides the trainer:

=============  ==================================================  ===========================================
track          methods                                             trainer
=============  ==================================================  ===========================================
``ce``         ``methods.<name>`` (``kind: ce``, the default)      :func:`gradmix.train.train_run`
``distill``    ``methods.<name>`` with ``kind: distill``           the same trainer with the student loss hook
                                                                   of :func:`gradmix.teacher.student_loss`
``contrastive`` ``contrastive.methods.<name>``                      :func:`gradmix.contrastive.runs.train_run`
=============  ==================================================  ===========================================

Every run is written to ``<out_root>/<name>/split<k>-seed<s>/`` (``config.json``, ``model.pt``,
``log.csv``, ``scores.npz``), which is what :mod:`gradmix.evaluate` reads. :func:`train_methods`
checks every name, every attribution stage against the model and every needed teacher before the
first run starts, so a typo fails in a second, not after an hour of training.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checks import ConfigError
from .config import Config
from .contrastive import runs as contrastive_runs
from .data import DATASETS, OpenSetData, check_splits
from .epochlog import say
from .models import build_model
from .teacher import check_teachers, student_identity, train_student
from .train import check_method, every_run
from .train import run_identity as ce_identity
from .train import train_run as train_ce

TRACKS = ("ce", "distill", "contrastive")


def method_names(cfg: Config) -> list[str]:
    """Every method ``cfg`` can train: ``methods`` then ``contrastive.methods``."""
    return list(cfg.methods) + (list(cfg.contrastive.methods) if cfg.contrastive is not None else [])


def track(cfg: Config, method: str) -> str:
    """The track of ``method`` (one of :data:`TRACKS`); an unknown name raises :class:`ConfigError`
    listing every valid one."""
    if method in cfg.methods:
        return cfg.methods[method].kind
    if cfg.contrastive is not None and method in cfg.contrastive.methods:
        return "contrastive"
    hint = " (params has no 'contrastive' section)" if cfg.contrastive is None else ""
    raise ConfigError(f"unknown method {method!r}; valid methods: {sorted(method_names(cfg))}{hint}")


def train_run(cfg: Config, method: str, split: int, seed: int, out_dir: str | Path,
              data: OpenSetData | None = None) -> Path:
    """Train ``method`` (any track) on ``split`` with ``seed`` into the run directory ``out_dir``;
    ``data`` is the loaded split (loaded here if None). Returns ``out_dir``."""
    kind = track(cfg, method)
    if kind == "contrastive":
        return contrastive_runs.train_run(cfg, method, split, seed, out_dir, data)
    if kind == "distill":
        return train_student(cfg, method, split, seed, out_dir, data)
    return train_ce(cfg, method, split, seed, out_dir, data)


def run_identity(cfg: Config, method: str, split: int, seed: int, device) -> dict:
    """The identity (gradmix.rundir) :func:`train_run` gives the run of ``method`` (any track) on
    ``split`` with ``seed`` on a ``device`` of that type: what a finished run or its kept copy must match."""
    kind = track(cfg, method)
    device = torch.device(device)
    if kind == "contrastive":
        return contrastive_runs.run_identity(cfg, cfg.contrastive.method(method), split, seed, device)
    return ce_identity(cfg, cfg.method(method), split, seed, device,
                       student_identity(cfg) if kind == "distill" else None)


def check(cfg: Config, methods) -> None:
    """Fail before any training: an unknown name, a stage the (encoder) model lacks, a missing teacher,
    a split that cannot give its metrics (:func:`gradmix.data.check_splits`).

    Raises :class:`ConfigError` (names, stages, splits) or FileNotFoundError (teachers).
    """
    kinds = {m: track(cfg, m) for m in methods}
    channels = DATASETS[cfg.data.dataset].channels or 3      # stage names do not depend on the channels
    with torch.random.fork_rng(devices=[]):                  # probe models leave the global RNG as it was
        classifier = [m for m, k in kinds.items() if k != "contrastive"]
        if classifier:
            probe = build_model(cfg.model, channels, 2)
            for m in classifier:
                check_method(cfg.method(m), probe)
        encoder = [m for m, k in kinds.items() if k == "contrastive"]
        if encoder:
            probe = build_model(contrastive_runs.encoder_config(cfg), channels, 2)
            for m in encoder:
                contrastive_runs.check_method(cfg.contrastive.method(m), probe)
    if "distill" in kinds.values():
        check_teachers(cfg)
    if kinds:
        check_splits(cfg.data)


def epochs(cfg: Config, method: str) -> int:
    """The number of epochs ``method`` trains (its track's ``epochs``)."""
    return cfg.contrastive.train.epochs if track(cfg, method) == "contrastive" else cfg.train.epochs


def train_method(cfg: Config, method: str, out_root: str | Path) -> list[Path]:
    """Train ``method`` on every split and seed of ``cfg`` into ``out_root/<method>/split<k>-seed<s>``;
    returns the run directories."""
    check(cfg, [method])
    return every_run(cfg, method, out_root, train_run, epochs(cfg, method), identity=run_identity)


def train_methods(cfg: Config, methods, out_root: str | Path) -> Path:
    """Train each of ``methods`` (any mix of tracks) on every split and seed into ``out_root``, after
    checking all of them (:func:`check`); returns ``out_root``.

    With ``train.launcher`` ``local`` or ``slurm`` the runs of all the methods are one batch of jobs
    (:func:`gradmix.launcher.launch`), so ``train.workers`` GPUs stay busy across methods.
    """
    methods = list(methods)
    check(cfg, methods)
    if cfg.train.launcher == "inline" or len(methods) < 2:
        for m in methods:
            every_run(cfg, m, out_root, train_run, epochs(cfg, m), identity=run_identity)
        return Path(out_root)
    from .launcher import RunSpec, launch
    from .rundir import run_name

    say(f"{len(methods)} methods {methods}: {len(cfg.data.splits)} split(s) {list(cfg.data.splits)} x "
        f"{len(cfg.train.seeds)} seed(s) {list(cfg.train.seeds)} -> {Path(out_root)}/<method>")
    launch(cfg, [RunSpec(m, split, seed, str(Path(out_root) / m / run_name(split, seed)), train_run)
                 for m in methods for split in cfg.data.splits for seed in cfg.train.seeds], identity=run_identity)
    return Path(out_root)
