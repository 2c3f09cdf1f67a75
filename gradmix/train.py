"""The cross-entropy trainer: config -> run directory.

A run directory holds ``config.json`` (the full validated config plus method/split/seed and where
it was trained), ``model.pt`` (state_dict and what is needed to rebuild the model), ``log.csv`` (one
row per epoch), ``scores.npz`` (logits on the known and unknown test sets), ``dvclive/`` (per-epoch
curves) and ``complete.json`` (written last), which is all :mod:`gradmix.evaluate` needs. The run's
life cycle (one writer, checkpoints every ``train.checkpoint_every`` epochs, resume after a kill,
restore of a finished run, the staging folder ``<dir>.tmp`` renamed when complete) is
:class:`gradmix.checkpoint.RunWriter`'s; the layout is :mod:`gradmix.rundir`'s.
"""
from __future__ import annotations

import csv
import json
import math
import pickle
import time
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import RunWriter
from .checks import ConfigError, build
from .config import Config, MethodConfig, ModelConfig, TrainConfig
from .data import OpenSetData, augment, batches, load_openset
from .epochlog import EpochStats, say
from .losses import soft_cross_entropy
from .metrics import auroc, accuracy
from .mixing import make_mixer
from .models import Classifier, build_model
from .precision import Precision, fused_optimizer, prepare_model
from .randaugment import rand_augment_normalized
from .rundir import RUN_FILES, CorruptFileError, make_identity, run_name, verify_run  # noqa: F401 (re-exported)
from .steps import Step, loss_step, shared_gradmix_step, uses_shared_pass


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available; valid here: auto, cpu")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """SGD or Adam of ``train``; fused with ``precision: fp16`` (gradmix.precision.fused_optimizer)."""
    fused = {"fused": True} if fused_optimizer(t.precision) else {}
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                               weight_decay=t.weight_decay, **fused)
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, **fused)


def host_rng(seed: int) -> np.random.Generator:
    """The run's host generator of per-batch scalars (coins, λ, grid and Dirichlet draws): no step reads
    a device value to draw them (gradmix.mixing.boxes). Part of every checkpoint."""
    return np.random.default_rng(seed)


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


def probe_model(model_cfg, cfg: Config) -> Classifier:
    """An untrained model of ``model_cfg`` for the dataset's channels (for checks before a run starts);
    torch's global RNG is left as it was."""
    from .data import DATASETS

    with torch.random.fork_rng(devices=[]):              # channels 0: known once loaded (imagefolder)
        return build_model(model_cfg, DATASETS[cfg.data.dataset].channels or 3, 2)


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


def method_step(m: MethodConfig, model, mixer, precision: Precision, loss_fn=None) -> Step:
    """The per-batch step (gradmix.steps) of method ``m`` for ``model`` with its ``mixer`` (options, host
    generator and recording bound): ``loss_fn`` (a loss hook's per-batch loss) in one backward if
    given; GradMix with ``attribution_pass: shared`` its own step; else :func:`training_loss`."""
    if loss_fn is not None:
        return loss_step(loss_fn, precision)
    if uses_shared_pass(m):
        return shared_gradmix_step(model, mixer, m.options, precision)
    return loss_step(partial(training_loss, model, mixer, m.use), precision)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, K) in eval mode."""
    was = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, max(len(x), 1), batch_size)])  # (0, K) if empty
    model.train(was)
    return out


def run_identity(cfg: Config, m: MethodConfig, split: int, seed: int, device: torch.device,
                 extra: dict | None = None) -> dict:
    """What determines a cross-entropy run's results (gradmix.rundir.make_identity); ``extra``: more
    config sections a method's own loss depends on (train_run's ``identity``)."""
    d = cfg.to_dict()
    sections = {"data": d["data"], "model": d["model"], "train": d["train"], "method": m.to_dict(), **(extra or {})}
    return make_identity({"method": m.name, "split": split, "seed": seed, "track": "ce"}, sections, device.type)


def load_split(cfg: Config, split: int, device) -> OpenSetData:
    """Split ``split`` of ``cfg.data`` on ``device``, failing first if its images would take more than
    ``train.max_data_fraction`` of the device's memory (gradmix.data.check_fits)."""
    return load_openset(cfg.data, split, device, max_fraction=cfg.train.max_data_fraction)


def split_data(data, cfg: Config, split: int, device) -> OpenSetData:
    """``data`` if given, the result of calling it if it is a loader, else the split loaded now."""
    if data is None:
        return load_split(cfg, split, device)
    return data() if callable(data) else data


def train_run(cfg: Config, method: str, split: int, seed: int, out_dir: str | Path,
              data: OpenSetData | None = None, loss=None, identity: dict | None = None) -> Path:
    """Train ``method`` on ``split`` with ``seed``; write the run directory ``out_dir`` and return it.

    ``data``: the split's OpenSetData, a callable returning it (loaded only if the run trains), or
    None (loaded here). ``loss`` (default: :func:`training_loss` with the method's mixer and ``use``)
    is a factory ``loss(model, mixer, data, split, seed, device)``, called once after the model is
    built, that returns the per-batch loss ``f(x, y, num_classes, generator, label_smoothing)`` (a
    scalar tensor); a method of another kind than ``ce`` brings its own (:mod:`gradmix.trainers`
    passes it), with ``identity``: the extra config sections its results depend on. Each batch is
    one step of :mod:`gradmix.steps` (the loss and its backward under ``train.precision``; GradMix with
    ``attribution_pass: shared`` its own two-backward step), then one optimiser step.

    The run's life cycle is gradmix.checkpoint.RunWriter's: a second writer of ``out_dir`` fails at
    once (RunLockedError); a finished run of the same configuration and code is not retrained; an
    interrupted one resumes from its last checkpoint. Raises DivergedError at the first epoch whose
    training loss is not finite, naming the epoch and step.
    """
    m = cfg.method(method)
    if loss is None and m.kind != "ce":
        raise ConfigError(f"methods.{method}: kind {m.kind!r} trains with its own loss; train it with "
                          f"gradmix.trainers.train_run or train_method")
    t = cfg.train
    device = resolve_device(t.device)
    check_method(m, probe_model(cfg.model, cfg))             # a bad stage name fails before anything is written
    with RunWriter(out_dir, run_identity(cfg, m, split, seed, device, identity), label=f"{method}/{run_name(split, seed)}",
                   epochs=t.epochs, device=device, checkpoint_dir=t.checkpoint_dir,
                   checkpoint_every=t.checkpoint_every, progress=t.progress) as w:
        if not w.done():                                     # not finished, nor restored from its copy
            _train(w, cfg, m, split, seed, device, data, loss_factory=loss)
    return Path(out_dir)


def _train(w: RunWriter, cfg: Config, m: MethodConfig, split: int, seed: int, device, data,
           loss_factory=None) -> None:
    """The training of one run under its writer ``w`` (resumed where ``w`` has a checkpoint)."""
    t = cfg.train
    torch.set_num_threads(t.threads)                         # as config.pin_threads: bit-identical at a fixed count
    data = split_data(data, cfg, split, device)
    torch.manual_seed(seed)                                  # model init and dropout
    precision = Precision.from_config(t, device)
    model = prepare_model(build_model(cfg.model, data.in_channels, data.num_classes).to(device),
                          channels_last=t.channels_last, compile=t.compile)
    check_method(m, model)
    stats = EpochStats()                                     # per-step sums on the device
    rng = host_rng(seed)                                     # per-batch scalars, drawn on the host
    mixer = stats.recording(make_mixer(m.mixer, m.options, rng))
    step = method_step(m, model, mixer, precision,
                       None if loss_factory is None else loss_factory(model, mixer, data, split, seed, device))
    n = data.num_train
    steps = max(1, n // t.batch_size) if n > t.batch_size else 1
    opt = make_optimizer(model, t)
    sched = make_schedule(opt, t, steps)
    gen = torch.Generator(device=device).manual_seed(seed)   # batches, augmentation, mixing
    parts = {"model": model, "optimizer": opt, "scheduler": sched, "generators": {"batches": gen},
             "host_rngs": {"mixing": rng}, "precision": precision}

    log = w.start(parts)                                     # resumes, or starts fresh
    start = time.perf_counter() - w.seconds_before
    for epoch in range(len(log) + 1, t.epochs + 1):
        model.train()
        for idx in batches(n, t.batch_size, gen):
            x = rand_augment_normalized(data.train_batch(idx), gen, t.randaugment_n, t.randaugment_m,
                                        t.randaugment_policy, data.mean, data.std)   # n = 0: x, no draw
            x = precision.batch(augment(x, gen, cfg.data.crop_padding, cfg.data.hflip))
            opt.zero_grad(set_to_none=True)
            batch_loss = step(x, data.y_train[idx], data.num_classes, gen, t.label_smoothing)
            precision.step(opt)
            sched.step()
            stats.loss(batch_loss)
        losses, means = stats.close()                        # the epoch's one device-to-host copy
        lk, lu = predict(model, data.x_known).cpu().numpy(), predict(model, data.x_unknown).cpu().numpy()
        w.check_epoch(losses, [lk.sum(dtype=np.float64), lu.sum(dtype=np.float64)], epoch,
                      hint=f"A diverging run usually means too high a learning rate (train.lr {t.lr}).")
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "loss": float(losses.mean()),
               "test_accuracy": accuracy(lk.argmax(1), data.y_known.cpu().numpy()),
               "test_auroc_mls": (auroc(lk.max(1), lu.max(1))
                                  if len(lu) else float("nan")),     # known=all: no unknown test set
               **means, "seconds": time.perf_counter() - start}
        w.end_epoch(row, parts)
    _write_run(w.staging, cfg, m, split, seed, device, model, data, w.log, w.run_info())
    w.commit()


def _write_run(d: Path, cfg: Config, m: MethodConfig, split: int, seed: int, device, model, data, log, run_info):
    info = {"method": m.name, "split": split, "seed": seed, "dataset": cfg.data.dataset,
            "known_classes": data.known, **run_info}
    (d / "config.json").write_text(json.dumps({"run": info, **cfg.to_dict()}, indent=2))
    torch.save({"state_dict": model.state_dict(), "model": cfg.to_dict()["model"],
                "in_channels": data.in_channels, "num_classes": data.num_classes,
                "known": data.known, "mean": data.mean, "std": data.std}, d / "model.pt")
    write_log(d / "log.csv", log)
    np.savez(d / "scores.npz",
             logits_known=predict(model, data.x_known).cpu().numpy(),
             labels_known=data.y_known.cpu().numpy(),
             logits_unknown=predict(model, data.x_unknown).cpu().numpy(),
             labels_unknown=data.y_unknown.cpu().numpy(),
             known=np.asarray(data.known))


def write_log(path: Path, log: list[dict]) -> None:
    """One CSV row per epoch; the columns are the union of the rows' keys, in first-seen order."""
    keys = list(dict.fromkeys(k for row in log for k in row))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(log)


def every_run(cfg: Config, method: str, out_root: str | Path | None, run_fn, epochs: int | None = None,
              folder: str | Path | None = None, title: str | None = None, identity=None) -> list[Path]:
    """``run_fn(cfg, method, split, seed, <folder>/split<k>-seed<s>, data)`` for every split and seed of
    ``cfg``; ``folder`` defaults to ``out_root/<method>``. Prints the plan first: splits x seeds x
    ``epochs`` (default ``train.epochs``) and the device, headed ``title`` (default ``method``).

    ``train.launcher: inline`` trains the runs here, one after another; ``data`` is a loader of the
    split, called (once per split) only by a run that trains. ``local`` and ``slurm`` train each run as
    its own job (:func:`gradmix.launcher.launch`, which waits for all of them; ``run_fn`` must then be a
    module-level function and gets ``data=None``); ``identity(cfg, method, split, seed, device)``, the
    identity ``run_fn`` gives a run, lets finished runs be kept or restored here instead of in a job.
    Returns the run directories in split, seed order.
    """
    folder = Path(out_root) / method if folder is None else Path(folder)
    t = cfg.train
    splits, seeds = list(cfg.data.splits), list(t.seeds)
    where = f"{t.device} in SLURM jobs" if t.launcher == "slurm" else resolve_device(t.device)
    say(f"{title or method}: {len(splits)} split(s) {splits} x {len(seeds)} seed(s) {seeds} x "
        f"{epochs or t.epochs} epochs on {where} -> {folder}")
    if t.launcher != "inline":
        from .launcher import RunSpec, launch

        return launch(cfg, [RunSpec(method, split, seed, str(folder / run_name(split, seed)), run_fn)
                            for split in splits for seed in seeds], identity=identity)
    device = resolve_device(t.device)
    out = []
    for split in splits:
        data = cache(partial(load_split, cfg, split, device))
        for seed in seeds:
            out.append(run_fn(cfg, method, split, seed, folder / run_name(split, seed), data))
    return out


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the trained model of a finished run directory.

    Raises IncompleteRunError (FileNotFoundError) if ``run_dir`` is not a finished run, and
    CorruptFileError (ValueError) if ``model.pt`` differs from its record in ``complete.json`` or is
    not a model checkpoint; both name the file and the problem.
    """
    path = Path(run_dir) / "model.pt"
    verify_run(run_dir, files=("model.pt",))
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict):
            raise TypeError(f"a {type(ckpt).__name__}, expected a dict")
        missing = sorted({"state_dict", "model", "in_channels", "num_classes"} - set(ckpt))
        if missing:
            raise KeyError(f"keys {missing} are missing")
        model = build_model(build(ModelConfig, ckpt["model"], "checkpoint.model"), ckpt["in_channels"],
                            ckpt["num_classes"])
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, EOFError, ValueError, TypeError, OSError, pickle.UnpicklingError) as e:
        raise CorruptFileError(f"{path}: corrupt or incompatible model checkpoint ({type(e).__name__}: {e})") from None
    return model.to(device).eval()
