"""The cross-entropy trainer: config -> run directory.

A run directory holds ``config.json`` (the full validated config plus method/split/seed),
``model.pt`` (state_dict and what is needed to rebuild the model), ``log.csv`` (one row per epoch)
and ``scores.npz`` (logits on the known and unknown test sets), which is all :mod:`gradmix.evaluate`
needs. A run is written to ``<dir>.tmp`` and renamed when complete, so an interrupted run never
leaves a directory that looks finished.
"""
from __future__ import annotations

import csv
import json
import math
import os
import pickle
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checks import ConfigError, build
from .config import Config, MethodConfig, ModelConfig, TrainConfig
from .data import OpenSetData, augment, batches, load_openset
from .losses import soft_cross_entropy
from .metrics import auroc, accuracy
from .mixing import make_mixer
from .models import Classifier, build_model

RUN_FILES = ("config.json", "model.pt", "log.csv", "scores.npz")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available; valid here: auto, cpu")
    return torch.device(name)


def run_name(split: int, seed: int) -> str:
    return f"split{split}-seed{seed}"


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                               weight_decay=t.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, t: TrainConfig, steps_per_epoch: int):
    """Per-step linear warm-up, then cosine decay to 0 (or constant).

    ``cosine_restarts`` follows Vaze et al.'s ``cosine_warm_restarts_warmup`` (utils/schedulers.py),
    per step instead of per epoch: cosine cycles of ``epochs // (restarts + 1)`` epochs from ``lr`` to
    ``lr·min_lr_factor``, counted from step 0; during the warm-up the lr rises linearly from the floor
    to the cycle's value at the end of the warm-up.
    """
    warm = t.warmup_epochs * steps_per_epoch
    total = t.epochs * steps_per_epoch

    if t.schedule == "cosine_restarts":
        period = max(1, (t.epochs // (t.restarts + 1)) * steps_per_epoch)
        floor = t.min_lr_factor

        def cycle(step: int) -> float:
            return floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * (step % period) / period))

        def restarts(step: int) -> float:
            if step < warm:
                return floor + (cycle(warm) - floor) * (step + 1) / warm
            return cycle(step)

        return torch.optim.lr_scheduler.LambdaLR(opt, restarts)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if t.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def check_method(method: MethodConfig, model: Classifier) -> None:
    """Fail before training if the method names stages the model does not have."""
    for stage in getattr(method.options, "stages", ()):
        if stage not in model.stages:
            raise ConfigError(f"methods.{method.name}.stages: {stage!r} is not a stage of "
                              f"{type(model).__name__}; valid stages: {list(model.stages)}")


def training_loss(model, mixer, use: str, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                  generator: torch.Generator, label_smoothing: float = 0.0) -> torch.Tensor:
    """Loss of one batch x (N, C, H, W), y (N,).

    ``replace``: mean_i w_i·CE(f(x̃_i), t_i). ``extra``: mean_i CE(f(x_i), y_i) + mean_i w_i·CE(f(x̃_i), t_i),
    with clean and mixed images in one forward pass (the authors' "additional view").
    """
    onehot = F.one_hot(y.long(), num_classes).float()      # labels of any integer dtype
    if mixer is None:
        return soft_cross_entropy(model(x), onehot, label_smoothing).mean()
    mixed = mixer(x, y, num_classes=num_classes, generator=generator, model=model)
    if use == "replace":
        ce = soft_cross_entropy(model(mixed.x), mixed.target, label_smoothing)
        return (mixed.weight * ce).mean()
    logits = model(torch.cat([x, mixed.x]))
    clean = soft_cross_entropy(logits[: len(x)], onehot, label_smoothing).mean()
    extra = (mixed.weight * soft_cross_entropy(logits[len(x):], mixed.target, label_smoothing)).mean()
    return clean + extra


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, K) in eval mode."""
    was = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, max(len(x), 1), batch_size)])  # (0, K) if empty
    model.train(was)
    return out


def train_run(cfg: Config, method: str, split: int, seed: int, out_dir: str | Path,
              data: OpenSetData | None = None, loss=None) -> Path:
    """Train ``method`` on ``split`` with ``seed``; write the run directory ``out_dir`` and return it.

    ``loss`` (default: :func:`training_loss` with the method's mixer and ``use``) is a factory
    ``loss(model, mixer, data, split, seed, device)``, called once after the model is built, that
    returns the per-batch loss ``f(x, y, num_classes, generator, label_smoothing)`` (a scalar tensor).
    A method of another kind than ``ce`` brings its own (:mod:`gradmix.trainers` passes it).
    """
    m = cfg.method(method)
    if loss is None and m.kind != "ce":
        raise ConfigError(f"methods.{method}: kind {m.kind!r} trains with its own loss; train it with "
                          f"gradmix.trainers.train_run or train_method")
    t = cfg.train
    device = resolve_device(t.device)
    data = data if data is not None else load_openset(cfg.data, split, device)
    torch.manual_seed(seed)                                  # model init and dropout
    model = build_model(cfg.model, data.x_train.shape[1], data.num_classes).to(device)
    check_method(m, model)
    mixer = make_mixer(m.mixer, m.options)
    loss_fn = (partial(training_loss, model, mixer, m.use) if loss is None
               else loss(model, mixer, data, split, seed, device))
    n = len(data.x_train)
    steps = max(1, n // t.batch_size) if n > t.batch_size else 1
    opt = make_optimizer(model, t)
    sched = make_schedule(opt, t, steps)
    gen = torch.Generator(device=device).manual_seed(seed)   # batches, augmentation, mixing

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log = []
    start = time.perf_counter()
    bar = tqdm(range(t.epochs), desc=f"{method} {run_name(split, seed)}", disable=not t.progress,
               mininterval=1.0)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for idx in batches(n, t.batch_size, gen):
            x = augment(data.x_train[idx], gen, cfg.data.crop_padding, cfg.data.hflip)
            loss = loss_fn(x, data.y_train[idx], data.num_classes, gen, t.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        lk, lu = predict(model, data.x_known), predict(model, data.x_unknown)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "loss": total / count,
               "test_accuracy": accuracy(lk.argmax(1).cpu().numpy(), data.y_known.cpu().numpy()),
               "test_auroc_mls": (auroc(lk.max(1).values.cpu().numpy(), lu.max(1).values.cpu().numpy())
                                  if len(lu) else float("nan")),     # known=all: no unknown test set
               "seconds": time.perf_counter() - start}
        log.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['test_accuracy']:.3f}")

    _write_run(tmp, cfg, m, split, seed, device, model, data, log)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def _write_run(d: Path, cfg: Config, m: MethodConfig, split: int, seed: int, device, model, data, log):
    info = {"method": m.name, "split": split, "seed": seed, "dataset": cfg.data.dataset,
            "known_classes": data.known, "device": str(device), "torch": torch.__version__}
    (d / "config.json").write_text(json.dumps({"run": info, **cfg.to_dict()}, indent=2))
    torch.save({"state_dict": model.state_dict(), "model": cfg.to_dict()["model"],
                "in_channels": data.x_train.shape[1], "num_classes": data.num_classes,
                "known": data.known, "mean": data.mean, "std": data.std}, d / "model.pt")
    with open(d / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(log[0]))
        w.writeheader()
        w.writerows(log)
    np.savez(d / "scores.npz",
             logits_known=predict(model, data.x_known).cpu().numpy(),
             labels_known=data.y_known.cpu().numpy(),
             logits_unknown=predict(model, data.x_unknown).cpu().numpy(),
             labels_unknown=data.y_unknown.cpu().numpy(),
             known=np.asarray(data.known))


def every_run(cfg: Config, method: str, out_root: str | Path, run_fn) -> list[Path]:
    """``run_fn(cfg, method, split, seed, out_root/<method>/<split>-<seed>, data)`` for every split and
    seed of ``cfg``, loading each split once."""
    device = resolve_device(cfg.train.device)
    out = []
    for split in cfg.data.splits:
        data = load_openset(cfg.data, split, device)
        for seed in cfg.train.seeds:
            out.append(run_fn(cfg, method, split, seed, Path(out_root) / method / run_name(split, seed), data))
    return out


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the trained model of a run directory; a missing or corrupt checkpoint fails clearly."""
    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: is {run_dir} a finished run directory "
                                f"(it should hold {', '.join(RUN_FILES)})?")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        model = build_model(build(ModelConfig, ckpt["model"], "checkpoint.model"), ckpt["in_channels"],
                            ckpt["num_classes"])
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, EOFError, ValueError, OSError, pickle.UnpicklingError) as e:
        raise ValueError(f"corrupt or incompatible checkpoint {path}: {type(e).__name__}: {e}") from None
    return model.to(device).eval()
