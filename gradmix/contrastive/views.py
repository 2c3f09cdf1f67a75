"""The contrastive model (encoder + projection head), random views, and one training step.

One step (:func:`make_step`; the authors' ``main_supcon_old.py`` order): two views v1, v2 of the
batch; the extra view x̃ of v1 (:func:`extra_view`); the loss and its backward. With GradMix's
``attribution_pass: separate`` (default) x̃'s maps come from a separate attribution pass that touches
no parameter gradient and no BatchNorm statistic, then :func:`loss_from_views` forwards [v1; v2; x̃]
at once. With ``shared`` the training forward of [v1; v2] gives the maps (a partial backward of the
attribution objective to the hooked stages, graph kept), x̃ is forwarded on its own, and one backward
of the whole loss follows: no attribution forward, and x̃ no longer shares BatchNorm statistics with
the clean views (the authors forward [v1; v2] and [x̃; v2] separately, too); ``bn`` must be
``batch`` there (the maps see train mode). Every forward runs under ``train.precision``'s autocast;
losses and maps in float32. No step reads a device value on the host: per-batch scalars come from the
run's host generator ``rng``, the loss terms stay device tensors (``EpochStats``).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attribution import attribute, cam, capture, combine, normalize_map, stage_maps
from ..colour import color_jitter, random_grayscale
from ..data import augment
from ..mixing import MIXERS
from ..mixing.boxes import mask_bounds
from ..mixing.gradmix import GradMixOptions, gradmix
from ..models import Classifier
from ..precision import Precision
from .config import ContrastiveConfig, ContrastiveMethod, ContrastiveTrainConfig, ViewConfig
from .losses import ntxent, supcon_loss


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


def view(x: torch.Tensor, generator: torch.Generator, cfg: ViewConfig, norm=None) -> torch.Tensor:
    """One random view of a batch x (N, C, H, W) on its device; see :class:`ViewConfig`.

    ``norm`` = (mean, std), the per-channel normalisation of x: the colour operations
    (``jitter_prob``, ``grayscale_prob``; :mod:`gradmix.colour`) work on [0, 1] pixels, as the
    authors' torchvision transforms do before ``Normalize``. Raises ValueError if they are on and
    ``norm`` is None. The crop pads with zeros of the normalised space: the normalisation mean colour.
    """
    if cfg.colour:
        if norm is None:
            raise ValueError("contrastive view: colour jitter / grayscale need the data's mean and std (norm=)")
        mu = torch.as_tensor(norm[0], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        sd = torch.as_tensor(norm[1], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        px = color_jitter(x * sd + mu, generator, cfg.jitter_prob, cfg.jitter_brightness, cfg.jitter_contrast,
                          cfg.jitter_saturation, cfg.jitter_hue)
        x = (random_grayscale(px, generator, cfg.grayscale_prob) - mu) / sd
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


def extra_mixed(net: ContrastiveNet, method: ContrastiveMethod, x: torch.Tensor, v1: torch.Tensor,
                v2: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
                cfg: ContrastiveConfig, maps: torch.Tensor | None = None, norm=None, rng=None):
    """(extra view (B, C, H, W), its weight (B,), the mixer's :class:`~gradmix.mixing.Mixed` or None).

    As :func:`extra_view`, plus what a trainer logs: the ``Mixed`` of the ``mixup`` | ``cutmix`` |
    ``gradmix`` view (its :func:`~gradmix.mixing.boxes.masked_fraction` and, for GradMix, which images
    fell back to a random centre, ``Mixed.fallback``); None for ``aug`` and ``none``. ``rng``: the host
    generator of the mixer's per-batch scalars (gradmix.mixing.boxes); None: ``generator``.
    """
    if method.view == "none":
        return None, None, None
    b = len(v1)
    mixed = None
    if method.view == "aug":
        xe, lam = view(x, generator, cfg.views, norm), torch.ones(b, device=x.device)
    elif method.view == "gradmix":
        o = method.options
        if o.centre == "peak" and maps is None:
            maps = contrastive_maps(net, torch.cat([v1, v2]), y, method, cfg.train)[:b]
        mixed = gradmix(v1, y, num_classes=num_classes, generator=generator, options=o, maps=maps, rng=rng)
        xe, lam = mixed.x, mixed.lam
    else:
        mixed = MIXERS[method.view].fn(v1, y, num_classes=num_classes, generator=generator, options=method.options,
                                       rng=rng)
        xe, lam = mixed.x, mixed.lam
    return xe, (lam if method.weight == "lam" else torch.ones_like(lam)), mixed


def extra_view(net: ContrastiveNet, method: ContrastiveMethod, x: torch.Tensor, v1: torch.Tensor,
               v2: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
               cfg: ContrastiveConfig, maps: torch.Tensor | None = None, stats=None, norm=None, rng=None):
    """The extra positive view of v1 (B, C, H, W) and its weight (B,), or (None, None) for ``none``.

    ``aug``: a third random view of the clean images x, weight 1. ``mixup`` | ``cutmix`` | ``gradmix``:
    the mixer of gradmix.mixing applied to v1; weight λ' = ``Mixed.lam`` (``weight: lam``) or 1.
    GradMix maps (B, H, W) of view 1 may be given; otherwise the attribution pass computes them (a
    view whose map is degenerate gets a random in-image box, as in the cross-entropy track).
    :func:`extra_mixed` also returns the mixer's output; ``stats`` (a gradmix.epochlog.EpochStats)
    records it (masked fraction, fallback). ``norm``: (mean, std) of x, for the ``aug`` view's colour
    operations (:func:`view`).
    """
    xe, w, mixed = extra_mixed(net, method, x, v1, v2, y, num_classes=num_classes, generator=generator, cfg=cfg,
                               maps=maps, norm=norm, rng=rng)
    if stats is not None and mixed is not None:
        stats.mixed(mixed)
    return xe, w


def loss_from_views(net: ContrastiveNet, method: ContrastiveMethod, v1: torch.Tensor, v2: torch.Tensor,
                    y: torch.Tensor, t: ContrastiveTrainConfig, extra: torch.Tensor | None = None,
                    weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """L = γ·L_SupCon + μ·L_SimCLR of views v1, v2 (B, C, H, W), plus the weighted extra-positive term,
    from one forward of [v1; v2; x̃] (BatchNorm statistics over all three).

    Returns (loss, parts) with parts: supcon, simclr (clean terms), extra (unweighted mean extra
    term), lam (mean extra-view weight), each a detached device scalar (reading them would stall a
    GPU step; the trainer sums them on the device per epoch).
    """
    z = net(torch.cat([v1, v2] + ([extra] if extra is not None else [])))
    return loss_from_features(method, z[:2 * len(y)], y, t, z[2 * len(y):] if extra is not None else None, weight)


def loss_from_features(method: ContrastiveMethod, zc: torch.Tensor, y: torch.Tensor, t: ContrastiveTrainConfig,
                       ze: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """:func:`loss_from_views` from the projections zc = [z(v1); z(v2)] (2B, d) and ze = z(x̃) (B, d)."""
    b = len(y)
    kw = dict(temperature=t.temperature, base_temperature=t.base_temperature)
    zero = zc.new_zeros((), dtype=torch.float32)
    sup = supcon_loss(zc, y, **kw) if method.gamma else zero
    ssl = ntxent(zc, **kw) if method.mu else zero
    parts = {"supcon": sup.detach(), "simclr": ssl.detach()}
    if ze is not None:
        za = torch.cat([ze, zc[b:]])                          # positives: [x̃; v2]
        wa = weight.repeat(2)                                 # anchor i and i + B belong to image i
        ell = ntxent(zc, positives=za, reduction="none", **kw)
        ssl = ssl + (wa * ell).mean()
        if method.supcon_extra:
            sup = sup + (wa * supcon_loss(zc, y, positives=za, reduction="none", **kw)).mean()
        parts.update(extra=ell.mean().detach(), lam=weight.mean().detach())
    return method.gamma * sup + method.mu * ssl, parts


def make_step(net: ContrastiveNet, method: ContrastiveMethod, cfg: ContrastiveConfig, precision: Precision,
              rng=None, stats=None, norm=None):
    """The training step of ``method``: ``step(x, y, num_classes, generator) -> (loss, parts)`` for clean
    images x (B, C, H, W) and labels y (B,): both views, the extra view, the loss under autocast and its
    backward (gradients accumulated into ``.grad``); loss and parts detached device scalars (see
    :func:`loss_from_views`). ``stats`` (gradmix.epochlog.EpochStats) records the mixer's output;
    ``norm`` = (mean, std) of x, for the views' colour operations (:func:`view`).
    """
    t = cfg.train
    o = method.options
    shared = method.view == "gradmix" and o.attribution_pass == "shared"
    stages = tuple(o.stages) if shared and o.centre == "peak" else ()

    def step(x, y, num_classes, generator):
        v1, v2 = view(x, generator, cfg.views, norm), view(x, generator, cfg.views, norm)
        kw = dict(num_classes=num_classes, generator=generator, cfg=cfg, stats=stats, norm=norm, rng=rng)
        if not shared:
            with precision.autocast(x):
                xe, w = extra_view(net, method, x, v1, v2, y, **kw)
                loss, parts = loss_from_views(net, method, v1, v2, y, t, xe, w)
        else:
            b = len(y)
            with precision.autocast(x), capture(net.encoder, stages) as acts:
                zc = net(torch.cat([v1, v2]))
            maps = None
            if stages:                       # partial backward of the objective to the stages; graph kept
                score = attribution_objective(method, y, t)(zc.float())
                grads = torch.autograd.grad(score, [acts[s] for s in stages], retain_graph=True)
                maps = combine({s: cam(acts[s].detach(), g, o.attribution) for s, g in zip(stages, grads)},
                               tuple(x.shape[-2:]), o.normalize)[:b]
            with precision.autocast(x):
                xe, w = extra_view(net, method, x, v1, v2, y, maps=maps, **kw)
                loss, parts = loss_from_features(method, zc, y, t, net(xe), w)
        precision.backward(loss)
        return loss.detach(), parts

    return step


def explain(net: ContrastiveNet, x: torch.Tensor, y: torch.Tensor, *, method: ContrastiveMethod,
            cfg: ContrastiveConfig, num_classes: int, generator: torch.Generator, norm=None) -> dict:
    """What contrastive GradMix does to images x (N, C, H, W): x is view 1, a random view of x is view 2.

    Returns, like :func:`gradmix.mixing.gradmix.explain`: per-stage maps of view 1 (normalised over
    both views, (N, h, w)), the summed map (N, H, W), the :class:`Mixed` result and its box bounds.
    """
    o = method.options
    n = len(x)
    both = torch.cat([x, view(x, generator, cfg.views, norm)])
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
