"""Shared pieces of the mixing methods: Beta sampling, boxes, pairing, soft targets, pasting.

All functions are batched and follow their inputs' device; randomness comes only from the
generators passed in. Per-sample draws (permutations, box centres, noise) come from the
``torch.Generator`` on the training device; per-batch scalars (the ``prob`` coin, one λ, R-Mix's grid
and Dirichlet weight) from a host ``numpy.random.Generator`` (``rng``), so that a training step never
reads a device value back to the host (docs/speed.md). Without ``rng`` (display, notebooks) the
scalars are drawn from the torch generator and read back, as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mixed:
    """Output of every mixer.

    x: (N, C, H, W) mixed images in the input's dtype and on its device (a new tensor; the input is
        never modified).
    target: (N, K) float32 soft labels, rows sum to 1.
    lam: (N,) float32 fraction of each image that is still its own (1 - mixed area; Mixup's λ).
    weight: (N,) float32 loss weight of each mixed sample.
    mask: (N, 1, H, W) bool, True where pixels were replaced (a box, grafted cells, R-Mix's
        partner-won pixels); all False when a box method leaves the batch unmixed (``prob``); None
        for blending methods (Mixup), mixed or not. :func:`masked_fraction` reads it.
    partner: (N,) index in the batch of each sample's mixing partner; None when the batch was not
        mixed (or the method does not report it). Distillation needs it (:mod:`gradmix.distill`).
    fallback: (N,) bool, True where an attribution-centred box could not use its map (all zero,
        constant or non-finite) and took a random in-image centre instead; None where no map was
        used (other mixers, ``centre: random``, a batch left unmixed).
    """

    x: torch.Tensor
    target: torch.Tensor
    lam: torch.Tensor
    weight: torch.Tensor
    mask: torch.Tensor | None = None
    partner: torch.Tensor | None = None
    fallback: torch.Tensor | None = None


def masked_fraction(mixed: Mixed) -> torch.Tensor | None:
    """Fraction of each image's pixels that were replaced, (N,) float32, or None for blending methods.

    The exact share of True pixels of ``mixed.mask`` (a box clipped or not, grafted cells, R-Mix's
    partner-won pixels); 0 for a batch a box method left unmixed. Trainers log its batch mean per
    epoch so that rows of a table can be compared at equal occlusion.
    """
    return None if mixed.mask is None else mask_area(mixed.mask)


def mixer_inputs(x: torch.Tensor, y: torch.Tensor, where: str) -> torch.Tensor:
    """Check a mixer's inputs; return the labels as int64 (any integer dtype is accepted).

    x: (N, C, H, W) floating point images; y: (N,) integer class indices. Raises TypeError for
    non-floating images or non-integer labels, ValueError for mismatched shapes.
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise TypeError(f"{where}: images must be a floating-point (N, C, H, W) tensor; got {x.dtype} "
                        f"with shape {tuple(x.shape)}")
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"{where}: labels must be (N,) = ({len(x)},); got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{where}: labels must be integer class indices (any integer dtype); got {y.dtype}")
    return y.long()


def unmixed(x: torch.Tensor, y: torch.Tensor, num_classes: int, box: bool = True) -> Mixed:
    """The identity mix: a copy of x, one-hot targets, λ = 1, weight 1, an all-False mask
    (``box=False``, for blending methods: no mask)."""
    ones = torch.ones(len(x), device=x.device)
    mask = torch.zeros((len(x), 1, *x.shape[2:]), dtype=torch.bool, device=x.device) if box else None
    return Mixed(x.clone(), F.one_hot(y.long(), num_classes).float(), ones, ones, mask)


def coin(prob: float, source) -> bool:
    """True with probability ``prob``.

    ``source``: a host ``numpy.random.Generator`` (the trainers': a Python draw, no device work) or a
    ``torch.Generator`` (one draw on its device read back to the host: a synchronisation on a GPU, so
    only for use outside a training step). No draw when ``prob`` >= 1.
    """
    if prob >= 1.0:
        return True
    if isinstance(source, np.random.Generator):
        return bool(source.random() < prob)
    return bool(torch.rand(1, generator=source, device=source.device).item() < prob)


def choice_index(k: int, source) -> int:
    """A uniform index in [0, k) from ``source`` (as :func:`coin`)."""
    if isinstance(source, np.random.Generator):
        return int(source.integers(k))
    return int(torch.randint(0, k, (1,), generator=source, device=source.device).item())


def host_tensor(values: np.ndarray, device, dtype=torch.float32) -> torch.Tensor:
    """Host draws (n,) as a tensor on ``device`` without a host synchronisation: one value is written by
    a fill kernel (``torch.full``), several are copied from pinned memory asynchronously on a GPU."""
    values = np.asarray(values)
    device = torch.device(device)
    if values.size == 1:
        return torch.full(values.shape, float(values.reshape(-1)[0]), dtype=dtype, device=device)
    t = torch.from_numpy(np.ascontiguousarray(values)).to(dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def sample_beta(a: float, b: float, n: int, source, device=None) -> torch.Tensor:
    """``n`` draws from Beta(a, b) as a float32 tensor (n,) on ``device``.

    ``source``: a host ``numpy.random.Generator`` (drawn there, moved by :func:`host_tensor`; device
    default: the CPU) or a ``torch.Generator``: torch's Beta sampler takes no generator, so one integer
    drawn from it seeds NumPy's (a host synchronisation on a GPU; device default: the generator's).
    """
    if isinstance(source, np.random.Generator):
        return host_tensor(source.beta(a, b, size=n), device or "cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=source, device=source.device).item())
    draws = np.random.default_rng(seed).beta(a, b, size=n)
    return host_tensor(draws, device or source.device)


def beta_value(a: float, b: float, source) -> float:
    """One Beta(a, b) draw as a Python float (a per-batch λ the host computes with), from ``source``
    as :func:`sample_beta` (a torch generator's draw is read back: a synchronisation on a GPU)."""
    if isinstance(source, np.random.Generator):
        return float(source.beta(a, b))
    return float(sample_beta(a, b, 1, source)[0])


def pairing(n: int, generator: torch.Generator, device) -> torch.Tensor:
    """A random partner index per sample (a permutation, as in the official CutMix/Mixup code)."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def cut_sizes(lam: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Box side lengths for an area of (1 - lam)·H·W: ``int(H·sqrt(1 - lam))`` (CutMix ``rand_bbox``)."""
    cut = torch.sqrt(1.0 - lam)
    return (h * cut).long(), (w * cut).long()


def uniform_centres(n: int, h: int, w: int, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Box centres uniform over the whole image: rows in [0, H), columns in [0, W) (CutMix's rule;
    :func:`box_bounds` then clips the box, so boxes near the border are smaller)."""
    cy = torch.randint(0, h, (n,), generator=generator, device=generator.device).to(device)
    cx = torch.randint(0, w, (n,), generator=generator, device=generator.device).to(device)
    return cy, cx


def inside_centres(cut_h: torch.Tensor, cut_w: torch.Tensor, h: int, w: int, generator: torch.Generator,
                   device) -> tuple[torch.Tensor, torch.Tensor]:
    """Box centres that keep each box inside the image: rows uniform in [cut_h//2, H - cut_h//2), columns
    likewise (the GradMix authors' ``rand_bbox`` without an activation: ``np.random.randint(cut_h // 2,
    img_h - cut_h // 2)``), so the box [c - cut//2, c + cut//2) is never clipped. cut_h, cut_w: (N,).

    A side of the whole image (an empty range) gives the centre cut//2. One uniform float64 draw per
    coordinate from ``generator``: row draws for all N, then column draws.
    """
    def draw(cut: torch.Tensor, size: int) -> torch.Tensor:
        half = (cut // 2).to(device)
        span = (size - 2 * half).clamp_min(1)
        u = torch.rand(len(cut), generator=generator, device=generator.device, dtype=torch.float64).to(device)
        return half + (u * span).long().clamp_max(span - 1)

    return draw(cut_h, h), draw(cut_w, w)


def box_bounds(cy, cx, cut_h, cut_w, h: int, w: int):
    """Clipped box [y1, y2) x [x1, x2) centred at (cy, cx), as in CutMix's ``rand_bbox``; each (N,)."""
    y1 = (cy - cut_h // 2).clamp(0, h)
    y2 = (cy + cut_h // 2).clamp(0, h)
    x1 = (cx - cut_w // 2).clamp(0, w)
    x2 = (cx + cut_w // 2).clamp(0, w)
    return y1, y2, x1, x2


def box_mask(bounds, h: int, w: int) -> torch.Tensor:
    """Boolean mask (N, 1, H, W), True inside each sample's box."""
    y1, y2, x1, x2 = bounds
    rows = torch.arange(h, device=y1.device)
    cols = torch.arange(w, device=y1.device)
    in_rows = (rows >= y1[:, None]) & (rows < y2[:, None])
    in_cols = (cols >= x1[:, None]) & (cols < x2[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def mask_area(mask: torch.Tensor) -> torch.Tensor:
    """Exact fraction of pixels inside each mask (N, 1, H, W) -> (N,)."""
    return mask.flatten(1).float().mean(1)


def soft_targets(y: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor, num_classes: int) -> torch.Tensor:
    """lam·onehot(y) + (1 - lam)·onehot(y[partner]): (N, K) rows summing to 1, at most two non-zeros."""
    one = F.one_hot(y.long(), num_classes).float()
    return lam[:, None] * one + (1.0 - lam[:, None]) * one[partner]


def resized_into_boxes(source: torch.Tensor, bounds, h: int, w: int) -> torch.Tensor:
    """Each whole ``source`` image (N, C, H, W) bilinearly resized into its box (ResizeMix style).

    Returns (N, C, H, W); only pixels inside the boxes are meaningful.
    """
    y1, y2, x1, x2 = (b.to(source.dtype) for b in bounds)
    rows = torch.arange(h, device=source.device, dtype=source.dtype) + 0.5
    cols = torch.arange(w, device=source.device, dtype=source.dtype) + 0.5
    # position inside the box in [0, 1] -> grid_sample coordinates in [-1, 1] over the whole source
    gy = (rows[None] - y1[:, None]) / (y2 - y1).clamp_min(1)[:, None] * 2 - 1      # (N, H)
    gx = (cols[None] - x1[:, None]) / (x2 - x1).clamp_min(1)[:, None] * 2 - 1      # (N, W)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mask_bounds(mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Bounding box (y1, y2, x1, x2), each (N,), of each mask (N, 1, H, W); (0, 0, 0, 0) if empty."""
    rows, cols = mask[:, 0].any(2), mask[:, 0].any(1)

    def span(a):
        idx = torch.arange(a.shape[1], device=a.device)
        first = torch.where(a, idx, a.shape[1]).amin(1)
        last = torch.where(a, idx + 1, 0).amax(1)
        return torch.where(a.any(1), first, 0), last

    y1, y2 = span(rows)
    x1, x2 = span(cols)
    return y1, y2, x1, x2
