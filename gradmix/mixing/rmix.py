"""R-Mix (Luu et al., "Expeditious Saliency-guided Mix-up through Random Gradient Thresholding",
arXiv 2212.04875; official minhlong94/Random-Mixup ``environment.py: compute_saliency`` and
``mixup.py: mix_topleast_choose_top``, the CIFAR path).

Per batch:

1. Saliency: the channel-RMS of the input gradient of the ground-truth cross-entropy
   (:func:`~gradmix.mixing.saliency.gradient_saliency`), average-pooled to a ``g × g`` grid with g drawn
   uniformly from ``grids`` once per batch (official: pooling kernel drawn from {8, 16} px on 32-px
   CIFAR, i.e. grids 4 and 2), each map normalised to sum 1.
2. Threshold: a quantile level q_i drawn uniformly per image from linspace(0, q_max, q_levels)
   (official: linspace(0, 0.99, 10)); cells with saliency >= the q_i-quantile of image i are its
   salient cells M_i (linear interpolation between order statistics, as ``torch.quantile`` in the
   official code; :func:`row_quantiles`, which needs no host synchronisation); M is upsampled to
   pixels by nearest neighbour.
3. Mix with a permuted partner j: where M_i == M_j (both salient or neither) the images are blended
   w1·x_i + w2·x_j with (w1, w2) ~ Dirichlet(α, α) once per batch (official ``dirichlet_alpha`` 1.0);
   elsewhere the salient image wins.
4. Label: by area, (a·w1 + b)·y_i + (a·w2 + c)·y_j with a, b, c the exact pixel fractions of the
   blended region, of i's winning pixels and of j's winning pixels (a + b + c = 1).

``Mixed.lam`` is image i's own share a·w1 + b; ``Mixed.mask`` marks the pixels where the partner
won; the weight is 1. The saliency pass's BatchNorm / dropout mode is the option ``bn`` (default
``train``, the official code's, which also updates BN running statistics; see
:mod:`gradmix.mixing.saliency`). Computing saliency for a batch right before its training step
equals the official order (end of the previous step, after its optimiser update: same weights).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import ConfigError, check_choice, check_range
from .boxes import Mixed, choice_index, coin, mixer_inputs, pairing, sample_beta, unmixed
from .saliency import SALIENCY_BN, gradient_saliency, pool_to_grid, upsample_cells


@dataclass(frozen=True)
class RMixOptions:
    grids: tuple[int, ...] = (2, 4)     # cells per side, one drawn per batch (official {8, 16}-px kernels on 32 px)
    q_levels: int = 10                  # quantile levels linspace(0, q_max, q_levels), one drawn per image
    q_max: float = 0.99
    alpha: float = 1.0                  # (w1, w2) ~ Dirichlet(α, α) per batch (official parse_args: 1.0)
    bn: str = "train"                   # saliency pass: train (official) | batch | eval
    prob: float = 1.0                   # probability that a batch is mixed (official: every batch)

    def __post_init__(self):
        if not self.grids:
            raise ConfigError("rmix.grids: empty; give at least one grid size (cells per side)")
        for g in self.grids:
            check_range("rmix.grids", g, 1)
        check_range("rmix.q_levels", self.q_levels, 1)
        check_range("rmix.q_max", self.q_max, 0.0, 1.0)
        check_range("rmix.alpha", self.alpha, 0.0, low_open=True)
        check_choice("rmix.bn", self.bn, SALIENCY_BN)
        check_range("rmix.prob", self.prob, 0.0, 1.0)


def _draw_int(high: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=generator.device)


def row_quantiles(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The q_i-quantile of each row of ``values`` (N, M), q (N,) in [0, 1]: linear interpolation between
    the order statistics at position q_i·(M - 1), which is ``torch.quantile(values, q, dim=1).diagonal()``
    (the official R-Mix threshold) in O(N·M log M) instead of O(N²·M). Written here because
    ``torch.quantile`` checks q's range on the host (a synchronisation per call on a GPU)."""
    ordered = values.sort(dim=1).values
    pos = q.to(ordered.dtype) * (values.shape[1] - 1)
    lo = pos.floor().long().clamp(0, values.shape[1] - 1)
    hi = (lo + 1).clamp_max(values.shape[1] - 1)
    a, b = ordered.gather(1, lo[:, None])[:, 0], ordered.gather(1, hi[:, None])[:, 0]
    return a + (b - a) * (pos - lo.to(pos.dtype))


def rmix_parts(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
               options: RMixOptions, model=None, saliency: torch.Tensor | None = None,
               rng: np.random.Generator | None = None) -> dict | None:
    """Everything R-Mix computes for a batch, or None when the batch is not mixed (prob).

    Keys: ``saliency`` (N, H, W) pixel saliency, ``cells`` (N, g, g) normalised grid saliency,
    ``q`` (N,), ``salient`` (N, 1, H, W) bool M, ``partner`` (N,), ``w1`` (scalar tensor),
    ``blend`` / ``own`` / ``other`` (N, 1, H, W) bool regions, ``mixed`` (:class:`Mixed`).
    ``saliency`` may be given to skip the gradient pass. ``rng``: the host generator of the coin, the
    grid and the Dirichlet weight (gradmix.mixing.boxes); None: ``generator``.
    """
    o = options
    y = mixer_inputs(x, y, "rmix")
    src = generator if rng is None else rng
    if not coin(o.prob, src):
        return None
    n, _, h, w = x.shape
    g = o.grids[choice_index(len(o.grids), src)]
    if g > min(h, w):
        raise ValueError(f"rmix.grids: {g} cells per side exceed the {h}x{w} images; valid: 1..{min(h, w)}")
    if saliency is None:
        if model is None:
            raise ValueError("rmix needs the model for its saliency pass")
        saliency = gradient_saliency(model, x, y, "input", o.bn)
    cells = pool_to_grid(saliency.float(), g)          # float32 whatever the model's dtype (quantile needs it)
    cells = cells / cells.flatten(1).sum(1).clamp_min(torch.finfo(cells.dtype).tiny)[:, None, None]
    levels = torch.linspace(0.0, o.q_max, o.q_levels, device=x.device)
    q = levels[_draw_int(o.q_levels, n, generator).to(x.device)]
    flat = cells.flatten(1)
    thresholds = row_quantiles(flat, q)                               # image i's own q_i-quantile
    salient = upsample_cells(cells >= thresholds[:, None, None], (h, w)) > 0.5
    w1 = sample_beta(o.alpha, o.alpha, 1, src, x.device)[0]           # Dirichlet(α, α) = (B, 1 - B)
    perm = pairing(n, generator, x.device)
    partner_salient = salient[perm]
    blend = salient == partner_salient
    own = ~blend & salient
    other = ~blend & partner_salient
    xp = x[perm]
    wx = w1.to(x.dtype)                                                 # keep the images' dtype
    mixed_x = torch.where(blend, wx * x + (1 - wx) * xp, torch.where(salient, x, xp))
    area = lambda m: m.flatten(1).float().mean(1)  # noqa: E731
    a, b, c = area(blend), area(own), area(other)
    one = F.one_hot(y, num_classes).float()
    lam = a * w1 + b
    target = lam[:, None] * one + (a * (1 - w1) + c)[:, None] * one[perm]
    mixed = Mixed(mixed_x, target, lam, torch.ones(n, device=x.device), other, partner=perm)
    return {"saliency": saliency, "cells": cells, "q": q, "salient": salient, "partner": perm, "w1": w1,
            "blend": blend, "own": own, "other": other, "mixed": mixed}


def rmix(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
         options: RMixOptions, model=None, saliency: torch.Tensor | None = None,
         rng: np.random.Generator | None = None) -> Mixed:
    """R-Mix a batch x (N, C, H, W) (floating point; the result keeps its dtype and device) with labels
    y (N,) of any integer dtype; see the module docstring."""
    parts = rmix_parts(x, y, num_classes=num_classes, generator=generator, options=options, model=model,
                       saliency=saliency, rng=rng)
    return unmixed(x, y, num_classes) if parts is None else parts["mixed"]
