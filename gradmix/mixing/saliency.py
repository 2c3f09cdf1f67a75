"""Gradient saliency of the saliency-guided mixers (R-Mix, Saliency Grafting).

``gradient_saliency(model, x, y, source, bn)`` -> (N, h, w): the root-mean-square over channels of
∂L/∂A, with L = Σ_i CE(f(x_i), y_i) the ground-truth cross-entropy and A either the input images
(``source="input"``: the Co-Mixup / PuzzleMix / R-Mix saliency, R-Mix's ``compute_saliency``:
``sqrt(mean_c(grad²))``) or the output of a named model stage. The official R-Mix loss is
``mean_i 2·CE_i / K``; any positive scale of L leaves the mixers unchanged (they use normalised maps
and quantiles), so the sum is used.

The gradient is taken with ``torch.autograd.grad`` with respect to A only, so parameter ``.grad``
is never touched. How the pass treats BatchNorm and dropout is an explicit choice (``bn``):

* ``train``: the model in train mode, as it is during the training step. Dropout is active and
  BatchNorm normalises with batch statistics **and updates its running statistics** with this
  clean batch. This is what the official R-Mix code does (``self.model.train()`` before the
  saliency forward in ``environment.py: compute_saliency``).
* ``batch``: dropout off, BatchNorm with batch statistics, running statistics untouched
  (:func:`gradmix.attribution.attribution_mode` ``"batch"``).
* ``eval``: eval mode, BatchNorm with its running statistics.

Every module's mode (and BatchNorm's ``track_running_stats``) is restored on exit.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..attribution import attribution_mode
from ..checks import check_choice

SALIENCY_BN = ("train", "batch", "eval")


@contextmanager
def saliency_mode(model: nn.Module, bn: str = "train") -> Iterator[None]:
    """The model's mode during a saliency pass (see the module docstring); restored on exit."""
    check_choice("saliency bn", bn, SALIENCY_BN)
    if bn != "train":
        with attribution_mode(model, bn):
            yield
        return
    saved = [(m, m.training) for m in model.modules()]
    model.train()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training


def gradient_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, source: str = "input",
                      bn: str = "train") -> torch.Tensor:
    """Saliency (N, h, w), float32, of images x (N, C, H, W) with labels y (N,); (h, w) = (H, W) for the
    input, else the stage's resolution. See the module docstring. Under autocast the pass runs in the
    autocast dtype; the loss and the reduction over channels in float32."""
    x = x.detach()
    with saliency_mode(model, bn), torch.enable_grad():
        if source == "input":
            x = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(x).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [x])
        else:
            acts: list[torch.Tensor] = []
            hook = model.stage(source).register_forward_hook(lambda _m, _i, out: acts.append(out))
            try:
                loss = F.cross_entropy(model(x).float(), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, [acts[0]])
            finally:
                hook.remove()
    return grad.float().pow(2).mean(1).sqrt()          # float32 under autocast too


def pool_to_grid(saliency: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool maps (N, h, w) to (N, grid, grid) cells (R-Mix: ``F.avg_pool2d`` with kernel h/grid)."""
    return F.adaptive_avg_pool2d(saliency[:, None], grid)[:, 0]


def upsample_cells(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Cell values (N, g, g) -> (N, 1, H, W) by nearest-neighbour upsampling (R-Mix's mask upsampling)."""
    return F.interpolate(cells[:, None].float(), size=size, mode="nearest")
