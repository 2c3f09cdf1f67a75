"""The contrastive track: SupCon + SimCLR with an extra positive view (GradMix as its authors train it).

Follows gawainxu/GradMix ``main_supcon_old.py`` (shared/research/methods.md §1.3-1.10). For a batch
of B images with two augmented views v1, v2 and Z = normalize(head(encoder([v1; v2]))) (2B, d):

    L = γ·L_SupCon(Z, y) + μ·L_SimCLR(Z)

Both terms are :func:`supcon_loss` (Khosla et al. 2020, "L_out"; without labels it is SimCLR's
NT-Xent). With an extra view x̃ of v1 (GradMix, Mixup, CutMix or a third augmentation), the
positives' features become Za = [f(x̃); f(v2)] in the numerator while the denominator keeps the clean
Z (the authors' ``features_positive``; a view-2 anchor's positive is then x̃), and

    L_SimCLR <- L_SimCLR(Z) + mean_i w_i·ℓ_i(Z, positives=Za)     (L_SupCon too if ``supcon_extra``)

with w = λ', the fraction of the image the view leaves unmixed (``weight: lam``; the authors' single
``lam``), or 1. GradMix's box comes from LayerCAM maps of the contrastive loss (``objective``:
the unsupervised NT-Xent over both views, as the authors), computed by
:func:`gradmix.attribution.attribute` in a separate pass with BatchNorm statistics frozen and
gradients taken w.r.t. stage activations only, so nothing leaks into the parameter update (the
authors' ``main_supcon.py`` leaks; methods.md §1.15). Maps of both views are normalised over the
whole 2B batch; view 1's maps place the box (:func:`gradmix.mixing.gradmix.gradmix`, same box and
fill options as the cross-entropy track).

Choices where the sources are silent or impractical on a CPU, all selectable in params.yaml:
* One forward of [v1; v2; x̃] (3B images) per step, as the cross-entropy track's ``extra``; the
  authors forward [v1; v2] and [x̃; v2] separately (v2 twice, BatchNorm statistics per pass).
* Views (:func:`view`): gradmix.data's random crop plus an on-device random rotation/zoom and
  brightness/contrast jitter of the normalised pixels; a ±1-pixel crop alone makes instance
  discrimination on 16x16 digits trivial. Authors: ColorJitter + RandomResizedCrop on CIFAR,
  RandomRotation(±5°) on MNIST.
* Adam with cosine decay per step from lr to lr·lr_decay_rate³ (authors: per epoch).
* Evaluation (:func:`evaluate_net`): class-wise kNN (:mod:`gradmix.knn`) and a linear probe
  (:mod:`gradmix.probe`) on the encoder features of the un-augmented images.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .attribution import attribute, combine, normalize_map, stage_maps
from .config import Config, ConfigError, build, check_choice, check_range
from .data import OpenSetData, augment, batches, load_openset
from .knn import KnnConfig, knn_scores
from .mixing import MIXERS
from .mixing.boxes import mask_bounds
from .mixing.gradmix import GradMixOptions, gradmix
from .models import Classifier, build_model
from .probe import ProbeConfig, linear_probe

VIEWS = ("none", "aug", "mixup", "cutmix", "gradmix")
OBJECTIVES = ("simclr", "supcon", "loss")       # what the GradMix attribution pass differentiates
TRACK = "contrastive"


# ----------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class ContrastiveTrainConfig:
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3                # Adam (authors: 1e-3)
    weight_decay: float = 0.0       # authors: parsed, not passed to Adam
    schedule: str = "cosine"        # cosine (to lr·lr_decay_rate³, authors) | constant
    lr_decay_rate: float = 0.8
    temperature: float = 0.05       # τ (authors: 0.05)
    base_temperature: float = 0.07  # loss × τ/τ_base (SupContrast's SupConLoss default)
    feat_dim: int = 128             # projection output
    head: str = "mlp"               # mlp: D -> D -> ReLU -> feat_dim (SupConResNet) | linear

    def __post_init__(self):
        w = "contrastive.train"
        check_range(f"{w}.epochs", self.epochs, 1)
        check_range(f"{w}.batch_size", self.batch_size, 2)
        check_range(f"{w}.lr", self.lr, 0.0, low_open=True)
        check_range(f"{w}.weight_decay", self.weight_decay, 0.0)
        check_choice(f"{w}.schedule", self.schedule, {"cosine", "constant"})
        check_range(f"{w}.lr_decay_rate", self.lr_decay_rate, 0.0, 1.0)
        check_range(f"{w}.temperature", self.temperature, 0.0, low_open=True)
        check_range(f"{w}.base_temperature", self.base_temperature, 0.0, low_open=True)
        check_range(f"{w}.feat_dim", self.feat_dim, 1)
        check_choice(f"{w}.head", self.head, {"mlp", "linear"})


@dataclass(frozen=True)
class ViewConfig:
    """The random view of an image: crop, then rotation/zoom, then brightness/contrast (0 = off)."""

    crop_padding: int = 2           # gradmix.data.augment random crop
    hflip: bool = False
    rotation: float = 10.0          # degrees, uniform in [-rotation, rotation]
    scale: float = 0.1              # zoom factor uniform in [1 - scale, 1 + scale]
    brightness: float = 0.4         # + uniform in [-b, b] (normalised pixels)
    contrast: float = 0.4           # × uniform in [1 - c, 1 + c]

    def __post_init__(self):
        check_range("contrastive.views.crop_padding", self.crop_padding, 0)
        check_range("contrastive.views.rotation", self.rotation, 0.0, 180.0)
        check_range("contrastive.views.scale", self.scale, 0.0, 0.9)
        check_range("contrastive.views.brightness", self.brightness, 0.0)
        check_range("contrastive.views.contrast", self.contrast, 0.0, 1.0)


_METHOD_KEYS = {"none": ("gamma", "mu", "view"),
                "aug": ("gamma", "mu", "view", "weight", "supcon_extra"),
                "mixup": ("gamma", "mu", "view", "weight", "supcon_extra", "options"),
                "cutmix": ("gamma", "mu", "view", "weight", "supcon_extra", "options"),
                "gradmix": ("gamma", "mu", "view", "weight", "supcon_extra", "objective", "options")}


@dataclass(frozen=True)
class ContrastiveMethod:
    """One contrastive method: loss weights, the extra view and its options."""

    name: str
    gamma: float = 1.0              # SupCon weight γ (0 = self-supervised)
    mu: float = 1.0                 # SimCLR weight μ
    view: str = "none"              # none | aug | mixup | cutmix | gradmix
    weight: str = "lam"             # extra-view weight: lam (λ', unmixed fraction, authors) | one
    supcon_extra: bool = False      # also add the extra positive to L_SupCon (authors' --supcon_aug)
    objective: str = "simclr"       # GradMix attribution loss: simclr (authors) | supcon | loss (γ·SupCon+μ·SimCLR)
    options: Any = None             # the mixer's options dataclass (mixup | cutmix | gradmix)

    @classmethod
    def from_dict(cls, name: str, values: Mapping[str, Any]) -> "ContrastiveMethod":
        where = f"contrastive.methods.{name}"
        if not isinstance(values, Mapping) or "view" not in values:
            raise ConfigError(f"{where}: needs a 'view' key; valid views: {list(VIEWS)}")
        values = dict(values)
        check_choice(f"{where}.view", values["view"], VIEWS)
        keys = _METHOD_KEYS[values["view"]]
        unknown = sorted(set(values) - set(keys))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} for view {values['view']!r}; valid keys: {list(keys)}")
        options = None
        if values["view"] in ("mixup", "cutmix", "gradmix"):
            raw = dict(values.pop("options", None) or {})
            if values["view"] == "gradmix":
                clash = sorted({"objective", "weight"} & set(raw))
                if clash:
                    raise ConfigError(f"{where}.options: {clash} belong to the cross-entropy track; here set "
                                      f"the method's own 'objective' {list(OBJECTIVES)} and 'weight' [lam, one]")
            options = build(MIXERS[values["view"]].options, raw, f"{where}.options")
        kw = {k: v for k, v in values.items() if k != "options"}
        hints = {"gamma": float, "mu": float, "view": str, "weight": str, "supcon_extra": bool, "objective": str}
        from .config import _coerce
        kw = {k: _coerce(f"{where}.{k}", v, hints[k]) for k, v in kw.items()}
        m = cls(name=name, options=options, **kw)
        check_range(f"{where}.gamma", m.gamma, 0.0)
        check_range(f"{where}.mu", m.mu, 0.0)
        check_choice(f"{where}.weight", m.weight, {"lam", "one"})
        check_choice(f"{where}.objective", m.objective, OBJECTIVES)
        if m.gamma == 0 and m.mu == 0:
            raise ConfigError(f"{where}: gamma and mu are both 0; nothing to train")
        if m.view != "none" and m.mu == 0 and not m.supcon_extra:
            raise ConfigError(f"{where}: the extra view enters L_SimCLR, whose weight mu is 0; set mu > 0 "
                              f"or supcon_extra: true")
        if m.view == "gradmix" and m.objective == "supcon" and m.gamma == 0:
            raise ConfigError(f"{where}.objective: 'supcon' uses labels, but gamma = 0 (self-supervised); use simclr")
        return m

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in _METHOD_KEYS[self.view] if k != "options"}
        if self.options is not None:
            opts = dataclasses.asdict(self.options)
            if self.view == "gradmix":          # the cross-entropy track's knobs, unused here
                opts = {k: v for k, v in opts.items() if k not in ("objective", "weight")}
            out["options"] = opts
        return out


@dataclass(frozen=True)
class ContrastiveConfig:
    train: ContrastiveTrainConfig = field(default_factory=ContrastiveTrainConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    methods: dict = field(default_factory=dict)       # name -> ContrastiveMethod
    pipeline: tuple[str, ...] = ()                    # the methods `dvc repro` trains, in table order

    SECTIONS = ("train", "views", "knn", "probe", "methods", "pipeline")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ContrastiveConfig":
        if not isinstance(raw, Mapping):
            raise ConfigError(f"contrastive: expected a mapping, got {raw!r}")
        unknown = sorted(set(raw) - set(cls.SECTIONS))
        if unknown:
            raise ConfigError(f"contrastive: unknown key(s) {unknown}; valid keys: {list(cls.SECTIONS)}")
        methods_raw = raw.get("methods") or {}
        if not isinstance(methods_raw, Mapping):
            raise ConfigError("contrastive.methods: expected a mapping name -> method options")
        methods = {n: ContrastiveMethod.from_dict(n, v) for n, v in methods_raw.items()}
        pipeline = raw.get("pipeline", list(methods))
        if not isinstance(pipeline, (list, tuple)):
            raise ConfigError(f"contrastive.pipeline: expected a list of method names, got {pipeline!r}")
        for m in pipeline:
            check_choice("contrastive.pipeline", m, methods)
        return cls(train=build(ContrastiveTrainConfig, raw.get("train"), "contrastive.train"),
                   views=build(ViewConfig, raw.get("views"), "contrastive.views"),
                   knn=build(KnnConfig, raw.get("knn"), "contrastive.knn"),
                   probe=build(ProbeConfig, raw.get("probe"), "contrastive.probe"),
                   methods=methods, pipeline=tuple(pipeline))

    def to_dict(self) -> dict:
        return {"train": dataclasses.asdict(self.train), "views": dataclasses.asdict(self.views),
                "knn": dataclasses.asdict(self.knn), "probe": dataclasses.asdict(self.probe),
                "methods": {k: m.to_dict() for k, m in self.methods.items()}, "pipeline": list(self.pipeline)}

    def method(self, name: str) -> ContrastiveMethod:
        if name not in self.methods:
            raise ConfigError(f"unknown contrastive method {name!r}; valid methods: {sorted(self.methods)}")
        return self.methods[name]

    def merged(self, overrides: Mapping[str, Any] | None, where: str = "override") -> "ContrastiveConfig":
        """A copy with ``overrides`` (e.g. ``{"train": {"epochs": 1}}``) merged in, re-validated."""
        def merge(a, b):
            if isinstance(a, dict) and isinstance(b, Mapping):
                return {**a, **{k: merge(a.get(k), v) for k, v in b.items()}}
            return b
        try:
            return ContrastiveConfig.from_dict(merge(self.to_dict(), overrides or {}))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------- losses

def supcon_loss(z: torch.Tensor, labels: torch.Tensor | None = None, *, views: int = 2,
                positives: torch.Tensor | None = None, temperature: float = 0.05,
                base_temperature: float = 0.07, reduction: str = "mean") -> torch.Tensor:
    """SupCon (Khosla et al. 2020, L_out; SupContrast ``SupConLoss``, contrast_mode "all").

    z: (V·B, d) L2-normalised features, view-major ([view 1 of all B images; view 2; ...]).
    labels: (B,), or None for SimCLR's NT-Xent (each image is its own class).
    positives: (V·B, d) features used in the numerator instead of z (the authors' ``features_positive``).
    For anchor i with positives P(i) = {p ≠ i : same label} and q = positives or z:

        ℓ_i = -(τ/τ_base) · 1/|P(i)| · Σ_{p∈P(i)} [ z_i·q_p/τ - log Σ_{a≠i} exp(z_i·z_a/τ) ]

    Returns the mean over the V·B anchors, or ℓ (V·B,) with ``reduction="none"``.
    """
    n = len(z)
    if n % views:
        raise ValueError(f"supcon_loss: {n} features are not {views} views of equal batches")
    b = n // views
    ids = labels if labels is not None else torch.arange(b, device=z.device)
    if len(ids) != b:
        raise ValueError(f"supcon_loss: {len(ids)} labels for {b} images")
    ids = ids.repeat(views)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (ids[:, None] == ids[None, :]) & ~eye
    logits = z @ z.T / temperature
    log_denom = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    num = logits if positives is None else z @ positives.T / temperature
    log_prob = torch.where(pos, num - log_denom, torch.zeros((), device=z.device))
    loss = -(temperature / base_temperature) * log_prob.sum(1) / pos.sum(1)
    return loss.mean() if reduction == "mean" else loss


def ntxent(z: torch.Tensor, **kw) -> torch.Tensor:
    """SimCLR's NT-Xent: :func:`supcon_loss` without labels (the other views of an image are its positives)."""
    return supcon_loss(z, None, **kw)


# ----------------------------------------------------------------------------- model and views

class ContrastiveNet(nn.Module):
    """Encoder (a :class:`~gradmix.models.Classifier`, whose ``fc`` is unused) + projection head.

    ``features(x)``: encoder features (N, D); ``forward(x)``: L2-normalised projections (N, feat_dim).
    """

    def __init__(self, encoder: Classifier, feat_dim: int = 128, head: str = "mlp"):
        super().__init__()
        d = encoder.feat_dim
        self.encoder = encoder
        self.head = (nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, feat_dim))
                     if head == "mlp" else nn.Linear(d, feat_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(x)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(h), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))


def _uniform(n: int, half_width: float, generator: torch.Generator, device) -> torch.Tensor:
    return ((torch.rand(n, generator=generator, device=generator.device) * 2 - 1) * half_width).to(device)


def view(x: torch.Tensor, generator: torch.Generator, cfg: ViewConfig) -> torch.Tensor:
    """One random view of a batch x (N, C, H, W) on its device; see :class:`ViewConfig`."""
    x = augment(x, generator, cfg.crop_padding, cfg.hflip)
    n = len(x)
    if cfg.rotation or cfg.scale:
        angle = _uniform(n, math.radians(cfg.rotation), generator, x.device)
        zoom = 1.0 + _uniform(n, cfg.scale, generator, x.device)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.contrast or cfg.brightness:
        c = 1.0 + _uniform(n, cfg.contrast, generator, x.device)
        b = _uniform(n, cfg.brightness, generator, x.device)
        x = x * c.view(-1, 1, 1, 1) + b.view(-1, 1, 1, 1)
    return x


# ----------------------------------------------------------------------------- one training step

def attribution_objective(method: ContrastiveMethod, labels: torch.Tensor, t: ContrastiveTrainConfig):
    """The scalar loss of z = [view 1; view 2] (2B, d) whose gradients GradMix's maps use."""
    kw = dict(temperature=t.temperature, base_temperature=t.base_temperature)
    if method.objective == "simclr":
        return lambda z: ntxent(z, **kw)
    if method.objective == "supcon":
        return lambda z: supcon_loss(z, labels, **kw)
    return lambda z: method.gamma * supcon_loss(z, labels, **kw) + method.mu * ntxent(z, **kw)


def contrastive_maps(net: ContrastiveNet, v: torch.Tensor, labels: torch.Tensor, method: ContrastiveMethod,
                     t: ContrastiveTrainConfig) -> torch.Tensor:
    """GradMix maps (2B, H, W) of both views v = [v1; v2], from the contrastive loss; no parameter grads."""
    o = method.options
    return attribute(net.encoder, v, attribution_objective(method, labels, t), o.stages, o.attribution,
                     o.normalize, o.bn, forward=net)


def extra_view(net: ContrastiveNet, method: ContrastiveMethod, x: torch.Tensor, v1: torch.Tensor,
               v2: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
               cfg: ContrastiveConfig, maps: torch.Tensor | None = None):
    """The extra positive view of v1 (B, C, H, W) and its weight (B,), or (None, None) for ``none``.

    ``aug``: a third random view of the clean images x, weight 1. ``mixup`` | ``cutmix`` | ``gradmix``:
    the mixer of gradmix.mixing applied to v1; weight λ' = ``Mixed.lam`` (``weight: lam``) or 1.
    GradMix maps (B, H, W) of view 1 may be given; otherwise the attribution pass computes them.
    """
    if method.view == "none":
        return None, None
    b = len(v1)
    if method.view == "aug":
        xe, lam = view(x, generator, cfg.views), torch.ones(b, device=x.device)
    elif method.view == "gradmix":
        o = method.options
        if o.centre == "peak" and maps is None:
            maps = contrastive_maps(net, torch.cat([v1, v2]), y, method, cfg.train)[:b]
        mixed = gradmix(v1, y, num_classes=num_classes, generator=generator, options=o, maps=maps)
        xe, lam = mixed.x, mixed.lam
    else:
        mixed = MIXERS[method.view].fn(v1, y, num_classes=num_classes, generator=generator, options=method.options)
        xe, lam = mixed.x, mixed.lam
    return xe, (lam if method.weight == "lam" else torch.ones_like(lam))


def loss_from_views(net: ContrastiveNet, method: ContrastiveMethod, v1: torch.Tensor, v2: torch.Tensor,
                    y: torch.Tensor, t: ContrastiveTrainConfig, extra: torch.Tensor | None = None,
                    weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """L = γ·L_SupCon + μ·L_SimCLR of views v1, v2 (B, C, H, W), plus the weighted extra-positive term.

    Returns (loss, parts) with parts: supcon, simclr (clean terms), extra (unweighted mean extra
    term), lam (mean extra-view weight).
    """
    b = len(y)
    kw = dict(temperature=t.temperature, base_temperature=t.base_temperature)
    z = net(torch.cat([v1, v2] + ([extra] if extra is not None else [])))
    zc = z[:2 * b]
    zero = z.new_zeros(())
    sup = supcon_loss(zc, y, **kw) if method.gamma else zero
    ssl = ntxent(zc, **kw) if method.mu else zero
    parts = {"supcon": sup.item(), "simclr": ssl.item()}
    if extra is not None:
        za = torch.cat([z[2 * b:], zc[b:]])                   # positives: [x̃; v2]
        wa = weight.repeat(2)                                 # anchor i and i + B belong to image i
        ell = ntxent(zc, positives=za, reduction="none", **kw)
        ssl = ssl + (wa * ell).mean()
        if method.supcon_extra:
            sup = sup + (wa * supcon_loss(zc, y, positives=za, reduction="none", **kw)).mean()
        parts.update(extra=ell.mean().item(), lam=weight.mean().item())
    return method.gamma * sup + method.mu * ssl, parts


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def embed(net: ContrastiveNet, x: torch.Tensor, which: str = "backbone", batch_size: int = 512) -> torch.Tensor:
    """Encoder features (N, D) or normalised projections (N, feat_dim) in eval mode."""
    was = net.training
    net.eval()
    f = net.features if which == "backbone" else net
    out = torch.cat([f(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    net.train(was)
    return out


def evaluate_net(net: ContrastiveNet, data: OpenSetData, cfg: ContrastiveConfig, seed: int = 0) -> dict:
    """kNN scores on the known and unknown test sets and the linear-probe accuracy, as numpy arrays."""
    k = cfg.knn
    feats = {w: (embed(net, data.x_train, w), embed(net, data.x_known, w))
             for w in dict.fromkeys((k.features, cfg.probe.features))}
    train_f, known_f = feats[k.features]
    s_k, p_k, _ = knn_scores(known_f, train_f, data.y_train, data.num_classes, k.k, k.normalize)
    s_u, _, _ = knn_scores(embed(net, data.x_unknown, k.features), train_f, data.y_train, data.num_classes,
                           k.k, k.normalize)
    train_p, known_p = feats[cfg.probe.features]
    acc, _ = linear_probe(train_p, data.y_train, known_p, data.y_known, data.num_classes, cfg.probe, seed)
    return {"score_knn_known": s_k.cpu().numpy(), "pred_knn_known": p_k.cpu().numpy(),
            "score_knn_unknown": s_u.cpu().numpy(), "metric_probe_accuracy": np.float64(acc)}


# ----------------------------------------------------------------------------- training runs

def check_method(method: ContrastiveMethod, model: Classifier) -> None:
    """Fail before training if the method names stages the model does not have."""
    for stage in getattr(method.options, "stages", ()):
        if stage not in model.stages:
            raise ConfigError(f"contrastive.methods.{method.name}.options.stages: {stage!r} is not a stage of "
                              f"{type(model).__name__}; valid stages: {list(model.stages)}")


def build_net(cfg: Config, in_channels: int, num_classes: int) -> ContrastiveNet:
    t = cfg.contrastive.train
    return ContrastiveNet(build_model(cfg.model, in_channels, num_classes), t.feat_dim, t.head)


def _schedule(opt, t: ContrastiveTrainConfig, total_steps: int):
    floor = t.lr_decay_rate ** 3

    def factor(step: int) -> float:
        if t.schedule == "constant":
            return 1.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / max(1, total_steps)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_run(cfg: Config, method: str, split: int, seed: int, out_dir: str | Path,
              data: OpenSetData | None = None) -> Path:
    """Train contrastive ``method`` on ``split`` with ``seed``; write the run directory ``out_dir``.

    The directory has the cross-entropy track's files (gradmix.train.RUN_FILES); ``scores.npz`` holds
    precomputed kNN scores (``score_knn_*``, ``pred_knn_known``) and ``metric_probe_accuracy``
    instead of logits, which :mod:`gradmix.evaluate` reads.
    """
    from .train import resolve_device, run_name

    c = _contrastive(cfg)
    m, t = c.method(method), c.train
    device = resolve_device(cfg.train.device)
    data = data if data is not None else load_openset(cfg.data, split, device)
    torch.manual_seed(seed)
    net = build_net(cfg, data.x_train.shape[1], data.num_classes).to(device)
    check_method(m, net.encoder)
    params = [p for n, p in net.named_parameters() if not n.startswith("encoder.fc.")]
    opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    n = len(data.x_train)
    steps = max(1, n // t.batch_size) if n > t.batch_size else 1
    sched = _schedule(opt, t, t.epochs * steps)
    gen = torch.Generator(device=device).manual_seed(seed)

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log, start = [], time.perf_counter()
    bar = tqdm(range(t.epochs), desc=f"{method} {run_name(split, seed)}", disable=not cfg.train.progress,
               mininterval=1.0)
    for epoch in bar:
        net.train()
        sums: dict = {}
        count = 0
        for idx in batches(n, t.batch_size, gen):
            x, y = data.x_train[idx], data.y_train[idx]
            v1, v2 = view(x, gen, c.views), view(x, gen, c.views)
            xe, w = extra_view(net, m, x, v1, v2, y, num_classes=data.num_classes, generator=gen, cfg=c)
            loss, parts = loss_from_views(net, m, v1, v2, y, t, xe, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for key, v in {"loss": loss.item(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + v * len(idx)
            count += len(idx)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], **{k: v / count for k, v in sums.items()},
               "seconds": time.perf_counter() - start}
        log.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
    scores = evaluate_net(net, data, c, seed)
    log[-1].update(knn_accuracy=float(np.mean(scores["pred_knn_known"] == data.y_known.cpu().numpy())),
                   probe_accuracy=float(scores["metric_probe_accuracy"]))
    _write_run(tmp, cfg, m, split, seed, device, net, data, log, scores)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def _write_run(d: Path, cfg: Config, m: ContrastiveMethod, split, seed, device, net, data, log, scores):
    info = {"method": m.name, "track": TRACK, "split": split, "seed": seed, "dataset": cfg.data.dataset,
            "known_classes": data.known, "device": str(device), "torch": torch.__version__}
    (d / "config.json").write_text(json.dumps({"run": info, **cfg.to_dict()}, indent=2))
    t = cfg.contrastive.train
    torch.save({"state_dict": net.encoder.state_dict(), "model": cfg.to_dict()["model"],
                "in_channels": data.x_train.shape[1], "num_classes": data.num_classes, "known": data.known,
                "mean": data.mean, "std": data.std, "head": net.head.state_dict(), "feat_dim": t.feat_dim,
                "head_kind": t.head}, d / "model.pt")
    keys = list(dict.fromkeys(k for row in log for k in row))
    with open(d / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(log)
    np.savez(d / "scores.npz", labels_known=data.y_known.cpu().numpy(),
             labels_unknown=data.y_unknown.cpu().numpy(), known=np.asarray(data.known), **scores)


def _contrastive(cfg: Config):
    if getattr(cfg, "contrastive", None) is None:
        raise ConfigError("params has no 'contrastive' section; the contrastive track needs one")
    return cfg.contrastive


def train_method(cfg: Config, method: str, out_root: str | Path) -> list[Path]:
    """Train contrastive ``method`` on every split and train.seeds; runs go to ``out_root/<method>/<split>-<seed>``."""
    from .train import resolve_device, run_name

    _contrastive(cfg).method(method)
    device = resolve_device(cfg.train.device)
    out = []
    for split in cfg.data.splits:
        data = load_openset(cfg.data, split, device)
        for seed in cfg.train.seeds:
            out.append(train_run(cfg, method, split, seed, Path(out_root) / method / run_name(split, seed), data))
    return out


def train_methods(cfg: Config, methods, out_root: str | Path) -> Path:
    """Train each contrastive method on every split and seed into ``out_root``; every name and stage is
    validated before the first run starts."""
    from .data import DATASETS

    c = _contrastive(cfg) if methods else None
    probe = build_model(cfg.model, DATASETS[cfg.data.dataset].channels, 2)
    for name in methods:
        check_method(c.method(name), probe)
    for name in methods:
        train_method(cfg, name, out_root)
    return Path(out_root)


def load_net(run_dir: str | Path, device: str | torch.device = "cpu") -> ContrastiveNet:
    """The trained encoder + projection head of a contrastive run directory."""
    from .train import load_model

    encoder = load_model(run_dir, device)
    path = Path(run_dir) / "model.pt"
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if "head" not in ckpt:
        raise ValueError(f"{path} has no projection head: not a contrastive run")
    net = ContrastiveNet(encoder, ckpt["feat_dim"], ckpt["head_kind"])
    net.head.load_state_dict(ckpt["head"])
    return net.to(device).eval()


# ----------------------------------------------------------------------------- display

def explain(net: ContrastiveNet, x: torch.Tensor, y: torch.Tensor, *, method: ContrastiveMethod,
            cfg: ContrastiveConfig, num_classes: int, generator: torch.Generator) -> dict:
    """What contrastive GradMix does to images x (N, C, H, W): x is view 1, a random view of x is view 2.

    Returns, like :func:`gradmix.mixing.gradmix.explain`: per-stage maps of view 1 (normalised over
    both views, (N, h, w)), the summed map (N, H, W), the :class:`Mixed` result and its box bounds.
    """
    o = method.options
    n = len(x)
    both = torch.cat([x, view(x, generator, cfg.views)])
    maps = stage_maps(net.encoder, both, attribution_objective(method, y, cfg.train), o.stages, o.attribution,
                      o.bn, forward=net)
    combined = combine(maps, tuple(x.shape[-2:]), o.normalize)[:n]
    mixed = gradmix(x, y, num_classes=num_classes, generator=generator, options=o, maps=combined)
    return {"stage_maps": {s: normalize_map(v, o.normalize)[:n] for s, v in maps.items()},
            "combined": combined, "mixed": mixed, "bounds": mask_bounds(mixed.mask)}


def explain_method(cfg: ContrastiveConfig, method: str, stages: tuple[str, ...]) -> ContrastiveMethod:
    """The run's own method if it is a GradMix one, else the authors' default GradMix view on ``stages``."""
    m = cfg.method(method)
    if m.view == "gradmix":
        return m
    return dataclasses.replace(m, view="gradmix", objective="simclr", options=GradMixOptions(stages=tuple(stages)),
                               mu=m.mu or 1.0)
