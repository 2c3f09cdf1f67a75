"""What a pipeline stage or a ``gradmix`` command is about to do, said before it starts.

:func:`announce` prints the device (``train.device`` resolved), the profile with every explicit value
that overrides it (:attr:`gradmix.config.Config.overridden`) and the plan: methods × splits × seeds ×
epochs, and with ``train.launcher`` local or slurm how the runs are fanned out (gradmix.launcher). When
``train.device: auto`` finds no CUDA device for a profile other than the embedded
``default``, it warns in one line on stderr (:func:`cpu_fallback_warning`): a paper profile on a CPU
takes days, not minutes.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .config import Config, ConfigError
from .trainers import epochs as trainer_epochs, track


def method_kind(cfg: Config, method: str) -> str:
    """``ce`` | ``distill`` | ``contrastive`` (:func:`gradmix.trainers.track`) or ``teacher`` (the
    distillation teacher) for a method name; an unknown name raises ConfigError listing every valid one."""
    return "teacher" if method == "teacher" else track(cfg, method)


def epochs(cfg: Config, method: str) -> int:
    """Training epochs of ``method``: contrastive.train.epochs for the contrastive track, else train.epochs."""
    return cfg.train.epochs if method == "teacher" else trainer_epochs(cfg, method)


def device_line(cfg: Config) -> str:
    """``device: cuda:0 (NVIDIA H200)``, ``device: cpu (train.device=auto: no CUDA device)``, ..."""
    import torch

    from .train import resolve_device

    if cfg.train.launcher == "slurm":            # the jobs' nodes decide; this (login) node may have no GPU
        return f"device: train.device={cfg.train.device} in SLURM jobs"
    dev = resolve_device(cfg.train.device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"device: cuda:{index} ({torch.cuda.get_device_name(index)}; train.device={cfg.train.device})"
    why = ": no CUDA device" if cfg.train.device == "auto" else ""
    return f"device: {dev} (train.device={cfg.train.device}{why})"


def cpu_fallback_warning(cfg: Config) -> str | None:
    """One line when ``train.device: auto`` falls back to the CPU for a profile other than ``default``."""
    import torch

    if (cfg.train.device != "auto" or cfg.profile.name == "default" or torch.cuda.is_available()
            or cfg.train.launcher == "slurm"):
        return None
    return (f"warning: train.device=auto found no CUDA device, so profile {cfg.profile.name} "
            f"({cfg.data.dataset}, {cfg.train.epochs} epochs) trains on the CPU; set train.device=cpu "
            f"if that is what you want")


def _count(values, noun: str) -> str:
    values = list(values)
    return f"{noun} {values[0]}" if len(values) == 1 else f"{len(values)} {noun}s {values}"


def plan_lines(cfg: Config, methods, splits=None, seeds=None, out: str | Path | None = None) -> list[str]:
    """The plan as lines, one per number of epochs: ``gradmix: 5 splits [0, 1, 2, 3, 4] × seed 0 × 15
    epochs = 5 runs -> runs/gradmix``, or ``10 methods (erm, mixup, ...): ... = 50 runs -> runs``;
    ``splits``/``seeds`` default to the config's."""
    splits = list(cfg.data.splits if splits is None else splits)
    seeds = list(cfg.train.seeds if seeds is None else seeds)
    groups: dict[int, list[str]] = {}
    for m in methods:
        groups.setdefault(epochs(cfg, m), []).append(m)
    lines = []
    for e, names in groups.items():
        n = len(splits) * len(seeds) * len(names)
        who = names[0] if len(names) == 1 else f"{len(names)} methods ({', '.join(names)})"
        where = "" if out is None else f" -> {Path(out) / names[0] if len(names) == 1 else out}"
        lines.append(f"{who}: {_count(splits, 'split')} × {_count(seeds, 'seed')} × {e} epoch{'s' * (e != 1)} "
                     f"= {n} run{'s' * (n != 1)}{where}")
    return lines


def announce(cfg: Config, methods, title: str = "", splits=None, seeds=None, out=None, file=None) -> None:
    """Print the device, the profile (and what overrides it) and the plan of ``methods``, then the CPU
    fallback warning (if any) on stderr. ``title`` names the stage or command."""
    file = file or sys.stdout
    head = f"{title}: " if title else ""
    prof = cfg.profile.name if cfg.profile.name == "default" else f"{cfg.profile.name} ({cfg.profile.file})"
    print(f"{head}{device_line(cfg)}; dataset {cfg.data.dataset}; profile {prof}", file=file)
    for note in cfg.overridden:
        print(f"  {note}", file=file)
    for line in plan_lines(cfg, methods, splits, seeds, out):
        print(f"  {line}", file=file)
    if cfg.train.launcher != "inline":
        from .launcher import describe

        runs = len(list(cfg.data.splits if splits is None else splits)) * len(list(cfg.train.seeds if seeds is None else seeds))
        print(f"  {describe(cfg, runs * len(list(methods)))}", file=file)
    file.flush()
    warning = cpu_fallback_warning(cfg)
    if warning:
        print(warning, file=sys.stderr, flush=True)
