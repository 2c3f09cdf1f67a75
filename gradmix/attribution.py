"""Batched, on-device attribution maps: LayerCAM and Grad-CAM over named model stages.

For stage activations A (N, K, h, w) and the gradient G = dS/dA of a summed per-sample score S:

* LayerCAM (Jiang et al., TIP 2021; the GradMix authors' ``layer_salient_maps``):
  M = ReLU(sum_k A_k * ReLU(G_k)).
* Grad-CAM (Selvaraju et al., ICCV 2017): M = ReLU(sum_k mean_hw(G_k) * A_k).

Gradients are taken with ``torch.autograd.grad`` with respect to the hooked activations only, so
parameter ``.grad`` is never touched. The pass runs in :func:`attribution_mode`: dropout off and
BatchNorm either normalising with batch statistics without updating its running statistics
(``bn="batch"``, what the training forward sees) or using its running statistics (``bn="eval"``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice

METHODS = ("layercam", "gradcam")
OBJECTIVES = ("gt_logit", "pred_logit", "ce")
NORMALIZE = ("batch", "image")
BN_MODES = ("batch", "eval")


@contextmanager
def attribution_mode(model: nn.Module, bn: str = "batch") -> Iterator[None]:
    """Dropout off; BatchNorm frozen (``bn`` as in the module docstring); modes restored on exit."""
    check_choice("attribution bn", bn, BN_MODES)
    saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in model.modules()]
    model.eval()
    if bn == "batch":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
                m.track_running_stats = False  # batch statistics, running buffers left untouched
    try:
        yield
    finally:
        for m, training, track in saved:
            m.training = training
            if track is not None:
                m.track_running_stats = track


def class_objective(name: str, y: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-sample score from logits (N, K): the ground-truth logit, the predicted logit, or the CE loss."""
    check_choice("attribution objective", name, OBJECTIVES)
    if name != "pred_logit" and y is None:
        raise ValueError(f"objective {name!r} needs the labels y")
    if name == "gt_logit":
        return lambda logits: logits.gather(1, y[:, None]).squeeze(1)
    if name == "pred_logit":
        return lambda logits: logits.max(1).values
    return lambda logits: F.cross_entropy(logits, y, reduction="none")


def cam(activations: torch.Tensor, gradients: torch.Tensor, method: str = "layercam") -> torch.Tensor:
    """Map (N, h, w), float32, from activations and gradients (N, K, h, w) of any floating dtype (bf16 /
    fp16 under autocast: cast to float32 before the products and the sum over channels); see the
    module docstring."""
    check_choice("attribution method", method, METHODS)
    activations, gradients = activations.float(), gradients.float()
    if method == "layercam":
        m = (activations * gradients.clamp_min(0)).sum(1)
    else:
        m = (gradients.mean((2, 3), keepdim=True) * activations).sum(1)
    return m.clamp_min(0)


@contextmanager
def capture(model: nn.Module, stages: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, each forward of ``model`` stores the output of each stage in the yielded dict
    {stage: activations (N, K, h, w)} (the last forward wins); the hooks are removed on exit."""
    acts: dict[str, torch.Tensor] = {}
    hooks = [model.stage(s).register_forward_hook(lambda _m, _i, out, s=s: acts.__setitem__(s, out))
             for s in stages]
    try:
        yield acts
    finally:
        for h in hooks:
            h.remove()


def stage_maps(model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor],
               stages: Sequence[str], method: str = "layercam", bn: str = "batch",
               forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Raw attribution maps {stage: (N, h_s, w_s)} of ``objective(forward(x))`` (summed over the batch).

    ``forward`` defaults to ``model``; pass e.g. a projection-head forward for a contrastive objective.
    An objective returning a scalar (a batch loss) works too. Under autocast the forward runs in the
    autocast dtype; the objective gets the outputs as float32 and the maps are float32.
    """
    with capture(model, stages) as acts, attribution_mode(model, bn), torch.enable_grad():
        score = objective((forward or model)(x).float()).sum()
        grads = torch.autograd.grad(score, [acts[s] for s in stages])
    return {s: cam(acts[s].detach(), g, method) for s, g in zip(stages, grads)}


def normalize_map(m: torch.Tensor, how: str = "batch", eps: float = 1e-8) -> torch.Tensor:
    """Min-max normalise maps (N, h, w) over the whole batch (authors' code) or per image."""
    check_choice("attribution normalize", how, NORMALIZE)
    dims = (0, 1, 2) if how == "batch" else (1, 2)
    lo = m.amin(dim=dims, keepdim=True)
    hi = m.amax(dim=dims, keepdim=True)
    return (m - lo) / (hi - lo + eps)


def combine(maps: dict[str, torch.Tensor], size: tuple[int, int], normalize: str = "batch") -> torch.Tensor:
    """Normalise each stage's map, upsample it bilinearly to ``size`` and sum over stages: (N, H, W)."""
    out = None
    for m in maps.values():
        up = F.interpolate(normalize_map(m, normalize)[:, None], size=size, mode="bilinear",
                           align_corners=False)[:, 0]
        out = up if out is None else out + up
    return out


def attribute(model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor],
              stages: Sequence[str], method: str = "layercam", normalize: str = "batch",
              bn: str = "batch", forward=None) -> torch.Tensor:
    """Attribution map (N, H, W) at the input resolution, summed over ``stages``."""
    maps = stage_maps(model, x, objective, stages, method, bn, forward)
    return combine(maps, tuple(x.shape[-2:]), normalize)


def degenerate(maps: torch.Tensor) -> torch.Tensor:
    """(N,) bool: True where a map (N, H, W) has no peak to use: any non-finite value, or every
    pixel equal (all zero, e.g. Grad-CAM when every channel weight is negative, or constant).

    Its arg-max would be pixel (0, 0) (or wherever a NaN sits), which carries no information.
    """
    flat = maps.reshape(len(maps), -1)
    finite = torch.isfinite(flat).all(1)
    return ~finite | (flat.amax(1) == flat.amin(1))


def peak(maps: torch.Tensor, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column (N,), (N,) of each map's arg-max; maps (N, H, W).

    Ties go to the first pixel in row-major order (as ``np.argmax`` in the authors' ``rand_bbox``).
    Raises ValueError for non-finite maps (a NaN would win the arg-max); screen maps with
    :func:`degenerate` first, as :func:`gradmix.mixing.gradmix.gradmix` does, which then passes
    ``check=False``: the check reads a device value on the host (a synchronisation on a GPU).
    """
    n, h, w = maps.shape
    flat = maps.reshape(n, -1)
    if check and not torch.isfinite(flat).all():
        raise ValueError("attribution peak: the maps hold NaN or inf values; screen them with degenerate()")
    idx = flat.argmax(1)
    return idx // w, idx % w
