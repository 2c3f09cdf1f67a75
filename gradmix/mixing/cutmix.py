"""CutMix (Yun et al., ICCV 2019; official clovaai/CutMix-PyTorch ``train.py``).

With probability ``prob`` per batch: λ ~ Beta(β, β); one box of side int(S·sqrt(1 - λ)) centred
uniformly over the image and clipped; the co-located patch of a permuted partner is pasted in; λ is
recomputed from the clipped area; target λ·y + (1 - λ)·y[perm]. One λ and box per batch, as in the
official code (``per_sample: true`` draws one per image instead).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_range
from .boxes import (Mixed, box_bounds, box_mask, coin, cut_sizes, mask_area, mixer_inputs, pairing, sample_beta,
                    soft_targets, uniform_centres, unmixed)


@dataclass(frozen=True)
class CutMixOptions:
    beta: float = 1.0       # Beta(β, β)
    prob: float = 0.5       # cutmix_prob: 0.5 on CIFAR, 1.0 on ImageNet in the official README
    per_sample: bool = False

    def __post_init__(self):
        check_range("cutmix.beta", self.beta, 0.0, low_open=True)
        check_range("cutmix.prob", self.prob, 0.0, 1.0)


def cutmix(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
           options: CutMixOptions, model=None, rng: np.random.Generator | None = None) -> Mixed:
    """Mix a batch x (N, C, H, W) (floating point; the result keeps its dtype and device) with labels
    y (N,) of any integer dtype; see the module docstring. ``rng``: the host generator of the coin and
    λ (gradmix.mixing.boxes); None: ``generator``."""
    y = mixer_inputs(x, y, "cutmix")
    src = generator if rng is None else rng
    if not coin(options.prob, src):
        return unmixed(x, y, num_classes)
    n, _, h, w = x.shape
    k = n if options.per_sample else 1
    lam0 = sample_beta(options.beta, options.beta, k, src, x.device).expand(n)
    cy, cx = uniform_centres(k, h, w, generator, x.device)
    cut_h, cut_w = cut_sizes(lam0, h, w)
    bounds = box_bounds(cy.expand(n), cx.expand(n), cut_h, cut_w, h, w)
    mask = box_mask(bounds, h, w)
    perm = pairing(n, generator, x.device)
    lam = 1.0 - mask_area(mask)
    return Mixed(torch.where(mask, x[perm], x), soft_targets(y, perm, lam, num_classes), lam,
                 torch.ones(n, device=x.device), mask, partner=perm)
