"""Contrastive training runs: config -> run directory, in the cross-entropy track's layout.

A run directory holds ``config.json`` (the ``run`` block has ``track: contrastive``), ``model.pt``
(the encoder as :func:`gradmix.train.load_model` reads it, plus the projection head), ``log.csv``
(one row per epoch: loss terms, mean λ', masked fraction, seconds; the last row also the kNN
accuracy and AUROC and the probe accuracy) and ``scores.npz`` with precomputed kNN scores
(``score_knn_known``, ``pred_knn_known``, ``score_knn_unknown``) and ``metric_probe_accuracy``
instead of logits; :mod:`gradmix.evaluate` reads both kinds. The life cycle (one writer, checkpoints, resume, restore of a finished run,
completion marker) is :class:`gradmix.checkpoint.RunWriter`'s, as in the cross-entropy track; the
test-set kNN and probe metrics are computed once, after the last epoch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import RunWriter
from ..checks import ConfigError
from ..config import Config, ModelConfig
from ..data import OpenSetData, batches
from ..epochlog import EpochStats, say
from ..knn import knn_scores
from ..metrics import auroc
from ..models import Classifier, build_model
from ..probe import linear_probe
from ..rundir import make_identity
from ..precision import Precision, fused_optimizer, prepare_model
from ..train import host_rng, load_model, probe_model, resolve_device, run_name, split_data, write_log
from .config import ContrastiveConfig, ContrastiveMethod, ContrastiveTrainConfig
from .views import ContrastiveNet, make_step

TRACK = "contrastive"


@torch.no_grad()
def embed(net: ContrastiveNet, x: torch.Tensor, which: str = "backbone", batch_size: int = 512) -> torch.Tensor:
    """Encoder features (N, D) or normalised projections (N, feat_dim) in eval mode; N may be 0 (the
    empty unknown test set of a closed-set run, ``data.known: all``)."""
    was = net.training
    net.eval()
    f = net.features if which == "backbone" else net
    out = torch.cat([f(x[i:i + batch_size]) for i in range(0, max(len(x), 1), batch_size)])  # (0, D) if empty
    net.train(was)
    return out


def evaluate_net(net: ContrastiveNet, data: OpenSetData, cfg: ContrastiveConfig, seed: int = 0) -> dict:
    """kNN scores on the known and unknown test sets and the linear-probe accuracy, as numpy arrays.

    A closed-set run (``data.known: all``) has no unknown test images: ``score_knn_unknown`` is empty
    and :mod:`gradmix.evaluate` reports its open-set metrics as NaN (absent).
    """
    k = cfg.knn
    feats = {w: (embed(net, data.x_train, w), embed(net, data.x_known, w))
             for w in dict.fromkeys((k.features, cfg.probe.features))}
    train_f, known_f = feats[k.features]
    s_k, p_k, _ = knn_scores(known_f, train_f, data.y_train, data.num_classes, k.k, k.normalize, k.similarity)
    s_u, _, _ = knn_scores(embed(net, data.x_unknown, k.features), train_f, data.y_train, data.num_classes,
                           k.k, k.normalize, k.similarity)
    train_p, known_p = feats[cfg.probe.features]
    acc, _ = linear_probe(train_p, data.y_train, known_p, data.y_known, data.num_classes, cfg.probe, seed)
    return {"score_knn_known": s_k.cpu().numpy(), "pred_knn_known": p_k.cpu().numpy(),
            "score_knn_unknown": s_u.cpu().numpy(), "metric_probe_accuracy": np.float64(acc)}


def check_method(method: ContrastiveMethod, model: Classifier) -> None:
    """Fail before training if the method names stages the model does not have."""
    for stage in getattr(method.options, "stages", ()):
        if stage not in model.stages:
            raise ConfigError(f"contrastive.methods.{method.name}.options.stages: {stage!r} is not a stage of "
                              f"{type(model).__name__}; valid stages: {list(model.stages)}")


def encoder_config(cfg: Config) -> ModelConfig:
    """The encoder's model config: ``contrastive.train.encoder`` if set, else the ``model`` section."""
    enc = cfg.contrastive.train.encoder
    return dataclasses.replace(cfg.model, name=enc) if enc else cfg.model


def build_net(cfg: Config, in_channels: int, num_classes: int) -> ContrastiveNet:
    t = cfg.contrastive.train
    return ContrastiveNet(build_model(encoder_config(cfg), in_channels, num_classes), t.feat_dim, t.head)


def _schedule(opt, t: ContrastiveTrainConfig, total_steps: int):
    floor = t.lr_decay_rate ** 3

    def factor(step: int) -> float:
        if t.schedule == "constant":
            return 1.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / max(1, total_steps)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def run_identity(cfg: Config, m: ContrastiveMethod, split: int, seed: int, device: torch.device) -> dict:
    """What determines a contrastive run's results (gradmix.rundir.make_identity): the data, the
    encoder, the contrastive sections it reads, its method and the speed switches of ``train``
    (precision, channels_last, compile) it runs with."""
    c = cfg.contrastive.to_dict()
    speed = {k: getattr(cfg.train, k) for k in ("precision", "channels_last", "compile")}
    sections = {"data": dataclasses.asdict(cfg.data), "encoder": dataclasses.asdict(encoder_config(cfg)),
                **{k: c[k] for k in ("train", "views", "knn", "probe")}, "method": c["methods"][m.name],
                "speed": speed}
    return make_identity({"method": m.name, "split": split, "seed": seed, "track": TRACK}, sections, device.type)


def train_run(cfg: Config, method: str, split: int, seed: int, out_dir: str | Path,
              data: OpenSetData | None = None) -> Path:
    """Train contrastive ``method`` on ``split`` with ``seed``; write the run directory ``out_dir``.

    The directory has the cross-entropy track's files (gradmix.train.RUN_FILES); ``scores.npz`` holds
    precomputed kNN scores (``score_knn_*``, ``pred_knn_known``) and ``metric_probe_accuracy``
    instead of logits, which :mod:`gradmix.evaluate` reads. ``data`` and the life cycle (lock,
    resume, restore, DivergedError) as in :func:`gradmix.train.train_run`.
    """
    c = _contrastive(cfg)
    m, t = c.method(method), c.train
    device = resolve_device(cfg.train.device)
    check_method(m, probe_model(encoder_config(cfg), cfg))   # a bad stage name fails before anything is written
    with RunWriter(out_dir, run_identity(cfg, m, split, seed, device), label=f"{method}/{run_name(split, seed)}",
                   epochs=t.epochs, device=device, checkpoint_dir=cfg.train.checkpoint_dir,
                   checkpoint_every=cfg.train.checkpoint_every, progress=cfg.train.progress) as w:
        if not w.done():                                     # not finished, nor restored from its copy
            _train(w, cfg, m, split, seed, device, data)
    return Path(out_dir)


def _train(w: RunWriter, cfg: Config, m: ContrastiveMethod, split: int, seed: int, device, data) -> None:
    """The training of one run under its writer ``w`` (resumed where ``w`` has a checkpoint)."""
    c, t = cfg.contrastive, cfg.contrastive.train
    torch.set_num_threads(cfg.train.threads)                 # as config.pin_threads: bit-identical at a fixed count
    data = split_data(data, cfg, split, device)
    torch.manual_seed(seed)
    precision = Precision.from_config(cfg.train, device)     # the `train` section's speed switches
    net = build_net(cfg, data.in_channels, data.num_classes).to(device)
    prepare_model(net, channels_last=cfg.train.channels_last, compile=cfg.train.compile, classifier=net.encoder)
    check_method(m, net.encoder)
    params = [p for n, p in net.named_parameters() if not n.startswith("encoder.fc.")]
    opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay,
                           **({"fused": True} if fused_optimizer(cfg.train.precision) else {}))
    n = data.num_train
    steps = max(1, n // t.batch_size) if n > t.batch_size else 1
    sched = _schedule(opt, t, t.epochs * steps)
    gen = torch.Generator(device=device).manual_seed(seed)
    rng = host_rng(seed)                                     # per-batch scalars, drawn on the host
    stats = EpochStats()                                     # per-step sums on the device
    step = make_step(net, m, c, precision, rng, stats, norm=(data.mean, data.std))
    parts = {"model": net, "optimizer": opt, "scheduler": sched, "generators": {"views": gen},
             "host_rngs": {"mixing": rng}, "precision": precision}

    log = w.start(parts)                                     # resumes, or starts fresh
    start = time.perf_counter() - w.seconds_before
    for epoch in range(len(log) + 1, t.epochs + 1):
        net.train()
        for idx in batches(n, t.batch_size, gen):
            x = precision.batch(data.train_batch(idx))
            opt.zero_grad(set_to_none=True)
            loss, terms = step(x, data.y_train[idx], data.num_classes, gen)
            precision.step(opt)
            sched.step()
            stats.loss(loss)
            for key, v in terms.items():                     # epoch means of the loss terms, on the device
                stats.add_mean(key, v, len(idx))
        losses, means = stats.close()                        # the epoch's one device-to-host copy
        w.check_epoch(losses, [], epoch, hint=f"A diverging run usually means too high a learning rate "
                                              f"(contrastive.train.lr {t.lr}).")
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "loss": float(losses.mean()),
               **means, "seconds": time.perf_counter() - start}
        w.end_epoch(row, parts)
    scores = evaluate_net(net, data, c, seed)
    final = {"knn_accuracy": float(np.mean(scores["pred_knn_known"] == data.y_known.cpu().numpy())),
             "test_auroc_knn": (auroc(scores["score_knn_known"], scores["score_knn_unknown"])
                                if len(scores["score_knn_unknown"]) else float("nan")),
             "probe_accuracy": float(scores["metric_probe_accuracy"])}
    w.log[-1].update(final)                                  # test metrics once, after the last epoch
    w.live.log({"epoch": t.epochs, **final})
    say(f"{w.label}: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items()))
    _write_run(w.staging, cfg, m, split, seed, net, data, w.log, scores, w.run_info())
    w.commit()


def _write_run(d: Path, cfg: Config, m: ContrastiveMethod, split, seed, net, data, log, scores, run_info):
    info = {"method": m.name, "track": TRACK, "split": split, "seed": seed, "dataset": cfg.data.dataset,
            "known_classes": data.known, **run_info}
    (d / "config.json").write_text(json.dumps({"run": info, **cfg.to_dict()}, indent=2))
    t = cfg.contrastive.train
    torch.save({"state_dict": net.encoder.state_dict(), "model": dataclasses.asdict(encoder_config(cfg)),
                "in_channels": data.in_channels, "num_classes": data.num_classes, "known": data.known,
                "mean": data.mean, "std": data.std, "head": net.head.state_dict(), "feat_dim": t.feat_dim,
                "head_kind": t.head}, d / "model.pt")
    write_log(d / "log.csv", log)
    np.savez(d / "scores.npz", labels_known=data.y_known.cpu().numpy(),
             labels_unknown=data.y_unknown.cpu().numpy(), known=np.asarray(data.known), **scores)


def _contrastive(cfg: Config):
    if getattr(cfg, "contrastive", None) is None:
        raise ConfigError("params has no 'contrastive' section; the contrastive track needs one")
    return cfg.contrastive


def load_net(run_dir: str | Path, device: str | torch.device = "cpu") -> ContrastiveNet:
    """The trained encoder + projection head of a contrastive run directory."""
    encoder = load_model(run_dir, device)
    path = Path(run_dir) / "model.pt"
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if "head" not in ckpt:
        raise ValueError(f"{path} has no projection head: not a contrastive run")
    net = ContrastiveNet(encoder, ckpt["feat_dim"], ckpt["head_kind"])
    net.head.load_state_dict(ckpt["head"])
    return net.to(device).eval()
