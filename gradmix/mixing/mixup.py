"""Mixup (Zhang et al., ICLR 2018; official facebookresearch/mixup-cifar10 ``mixup_data``).

One λ ~ Beta(α, α) per batch; x̃ = λ·x + (1 - λ)·x[perm]; target λ·y + (1 - λ)·y[perm].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_range
from .boxes import Mixed, coin, mixer_inputs, pairing, sample_beta, soft_targets, unmixed


@dataclass(frozen=True)
class MixupOptions:
    alpha: float = 1.0      # Beta(α, α)
    prob: float = 1.0       # probability that a batch is mixed

    def __post_init__(self):
        check_range("mixup.alpha", self.alpha, 0.0, low_open=True)
        check_range("mixup.prob", self.prob, 0.0, 1.0)


def mixup(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
          options: MixupOptions, model=None, rng: np.random.Generator | None = None) -> Mixed:
    """Mix a batch x (N, C, H, W) (floating point; the result keeps its dtype and device) with labels
    y (N,) of any integer dtype; see the module docstring. Blending leaves no mask (``Mixed.mask`` None).
    ``rng``: the host generator of the per-batch coin and λ (gradmix.mixing.boxes); None: ``generator``."""
    y = mixer_inputs(x, y, "mixup")
    src = generator if rng is None else rng
    if not coin(options.prob, src):
        return unmixed(x, y, num_classes, box=False)
    n = len(x)
    lam = sample_beta(options.alpha, options.alpha, 1, src, x.device).expand(n)
    perm = pairing(n, generator, x.device)
    l4 = lam[:, None, None, None].to(x.dtype)       # float32 λ would promote fp16/bf16 images
    return Mixed(l4 * x + (1 - l4) * x[perm], soft_targets(y, perm, lam, num_classes), lam.clone(),
                 torch.ones(n, device=x.device), partner=perm)
