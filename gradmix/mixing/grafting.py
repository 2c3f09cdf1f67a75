"""Saliency Grafting (Park, Yang, Shin, Hwang, Yang; AAAI 2022, arXiv 2112.08796).

No code is public and the paper's method section could not be read.
The paper states three ingredients: (a) a saliency map that is temperature-scaled, normalised and
truncated by a threshold; (b) candidate regions sampled stochastically (Bernoulli) and grafted
from one sample onto another; (c) a label mixed in a saliency-calibrated way, not by area. Every
formula below is our reconstruction of those sentences; each choice is an option in params.yaml.

For a batch x (N, C, H, W), y (N,) and a permuted partner j = perm(i) (the *source*; image i is the
*target*, whose label is y_i):

1. Saliency [choice]: S = channel-RMS of ∂CE/∂A (:func:`~gradmix.mixing.saliency.gradient_saliency`),
   A = the input (``source: input``, as R-Mix / PuzzleMix / Co-Mixup) or a named model stage, average-
   pooled to ``grid × grid`` cells: the candidate regions.
2. Temperature and normalisation [choice]: with s̃ = S / max(S) per image (so T is scale free),
   p = softmax(s̃ / T) over the cells, divided by its maximum so that it is a Bernoulli probability:
   p = exp((s̃ - 1) / T). The most salient cell has p = 1; a small T keeps only the peak, a large T
   makes every cell likely.
3. Truncation [choice]: p < ``threshold`` is set to 0 (those regions are never grafted).
4. Grafting: M ~ Bernoulli(p_j) independently per cell of the source, upsampled to pixels by nearest
   neighbour; x̃_i = M ⊙ x_j + (1 - M) ⊙ x_i.
5. Calibrated label [choice]: with each image's grid saliency normalised to sum 1 (so saliency is
   comparable across images) and measured on pixels,
   λ_src = Σ S_j ⊙ M / (Σ S_j ⊙ M + Σ S_i ⊙ (1 - M)): the source's saliency grafted against the
   target's saliency kept; ỹ_i = (1 - λ_src)·y_i + λ_src·y_j. If both masses are 0, λ_src falls back
   to the grafted area. ``label: area`` uses the grafted area instead (the CutMix-style ablation).

``Mixed.lam`` is 1 - λ_src (the target's own label weight), ``Mixed.mask`` is M, the weight is 1.
The saliency pass's BatchNorm / dropout mode is ``bn`` (default ``batch``: batch statistics, running
statistics untouched; see :mod:`gradmix.mixing.saliency`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_choice, check_range
from .boxes import Mixed, coin, mixer_inputs, pairing, unmixed
from .saliency import SALIENCY_BN, gradient_saliency, pool_to_grid, upsample_cells

LABELS = ("saliency", "area")


@dataclass(frozen=True)
class GraftingOptions:
    source: str = "input"           # input | a model stage: where the CE-gradient saliency is taken
    grid: int = 4                   # candidate regions: grid x grid cells
    temperature: float = 0.25       # T of p = softmax(s̃/T) / max
    threshold: float = 0.1          # p < threshold -> never grafted (truncation)
    label: str = "saliency"         # saliency (calibrated, the paper) | area (ablation)
    bn: str = "batch"               # saliency pass: batch | eval | train
    prob: float = 1.0               # probability that a batch is mixed

    def __post_init__(self):
        check_range("grafting.grid", self.grid, 1)
        check_range("grafting.temperature", self.temperature, 0.0, low_open=True)
        check_range("grafting.threshold", self.threshold, 0.0, 1.0)
        check_choice("grafting.label", self.label, LABELS)
        check_choice("grafting.bn", self.bn, SALIENCY_BN)
        check_range("grafting.prob", self.prob, 0.0, 1.0)

    @property
    def stages(self) -> tuple[str, ...]:
        """The model stages this method needs (checked against the model before training)."""
        return () if self.source == "input" else (self.source,)


def graft_probabilities(cells: torch.Tensor, temperature: float, threshold: float) -> torch.Tensor:
    """Bernoulli probabilities (N, g, g) of grid saliency (N, g, g): steps 2-3 of the module docstring."""
    top = cells.flatten(1).amax(1).clamp_min(torch.finfo(cells.dtype).tiny)[:, None, None]
    p = torch.exp((cells / top - 1.0) / temperature)
    return torch.where(p < threshold, torch.zeros_like(p), p)


def grafting_parts(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
                   options: GraftingOptions, model=None, saliency: torch.Tensor | None = None,
                   rng: np.random.Generator | None = None) -> dict | None:
    """Everything Saliency Grafting computes for a batch, or None when the batch is not mixed (prob).

    Keys: ``saliency`` (N, h, w), ``cells`` (N, g, g) grid saliency normalised to sum 1, ``p`` (N, g, g)
    Bernoulli probabilities, ``partner`` (N,) source index, ``cell_mask`` (N, g, g) bool (sampled on the
    source's p), ``mask`` (N, 1, H, W) bool, ``lam_source`` (N,), ``mixed`` (:class:`Mixed`).
    ``saliency`` may be given to skip the gradient pass. ``rng``: the host generator of the coin
    (gradmix.mixing.boxes); None: ``generator``.
    """
    o = options
    y = mixer_inputs(x, y, "grafting")
    if not coin(o.prob, generator if rng is None else rng):
        return None
    n, _, h, w = x.shape
    if o.grid > min(h, w):
        raise ValueError(f"grafting.grid: {o.grid} cells per side exceed the {h}x{w} images; "
                         f"valid: 1..{min(h, w)}")
    if saliency is None:
        if model is None:
            raise ValueError("grafting needs the model for its saliency pass")
        saliency = gradient_saliency(model, x, y, o.source, o.bn)
    cells = pool_to_grid(saliency.float(), o.grid)        # float32 whatever the model's dtype
    cells = cells / cells.flatten(1).sum(1).clamp_min(torch.finfo(cells.dtype).tiny)[:, None, None]
    p = graft_probabilities(cells, o.temperature, o.threshold)
    perm = pairing(n, generator, x.device)
    draws = torch.rand(p.shape, generator=generator, device=generator.device).to(p.device)
    cell_mask = draws < p[perm]                                   # sampled on the source's map
    mask = upsample_cells(cell_mask, (h, w)) > 0.5
    mixed_x = torch.where(mask, x[perm], x)
    area = mask.flatten(1).float().mean(1)
    if o.label == "area":
        lam_source = area
    else:
        pix = upsample_cells(cells, (h, w))[:, 0]                 # (N, H, W) grid saliency on pixels
        pix = pix / pix.flatten(1).sum(1)[:, None, None].clamp_min(torch.finfo(pix.dtype).tiny)
        m = mask[:, 0].float()
        grafted = (pix[perm] * m).flatten(1).sum(1)
        kept = (pix * (1 - m)).flatten(1).sum(1)
        total = grafted + kept
        lam_source = torch.where(total > 0, grafted / total.clamp_min(torch.finfo(total.dtype).tiny), area)
    one = F.one_hot(y, num_classes).float()
    target = (1 - lam_source)[:, None] * one + lam_source[:, None] * one[perm]
    mixed = Mixed(mixed_x, target, 1 - lam_source, torch.ones(n, device=x.device), mask, partner=perm)
    return {"saliency": saliency, "cells": cells, "p": p, "partner": perm, "cell_mask": cell_mask,
            "mask": mask, "lam_source": lam_source, "mixed": mixed}


def grafting(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
             options: GraftingOptions, model=None, saliency: torch.Tensor | None = None,
             rng: np.random.Generator | None = None) -> Mixed:
    """Saliency Grafting of a batch x (N, C, H, W) (floating point; the result keeps its dtype and
    device) with labels y (N,) of any integer dtype; see the module docstring."""
    parts = grafting_parts(x, y, num_classes=num_classes, generator=generator, options=options, model=model,
                           saliency=saliency, rng=rng)
    return unmixed(x, y, num_classes) if parts is None else parts["mixed"]
