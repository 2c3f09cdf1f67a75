"""Colour jitter and random grayscale, per sample, on the device, seeded: the GradMix authors' views.

The authors' contrastive views (gawainxu/GradMix ``datautil.py`` ``get_train_datasets``, CIFAR /
SVHN / TinyImageNet branch) are ``RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)`` and
``RandomGrayscale(p=0.2)`` (torchvision), around a resized crop and a flip; their MNIST views only
rotate. This module gives both operations with torchvision's semantics on a batch of [0, 1] images
(N, C, H, W):

* :func:`color_jitter`: with probability ``p`` per image, brightness, contrast, saturation and hue
  factors drawn uniformly from [max(0, 1 - b), 1 + b], [max(0, 1 - c), 1 + c], [max(0, 1 - s), 1 + s]
  and [-h, h], applied in an order drawn per image (torchvision draws one permutation per call,
  i.e. per image in a per-image transform): brightness x·f; contrast and saturation blend with the
  image's grey mean / grey image (ITU-R 601 luma 0.2989, 0.587, 0.114); hue rotates the HSV hue by
  f turns; each step clamped to [0, 1].
* :func:`random_grayscale`: with probability ``p`` per image, the luma replicated to every channel.

Saturation, hue and grayscale leave 1-channel images unchanged (torchvision does the same).

Why not torchvision's or kornia's transforms: torchvision's ``ColorJitter`` applied to a batch tensor
draws one set of factors and one order for the whole batch, from torch's global RNG; kornia's
``ColorJitter`` draws per-sample factors but one order per batch, and also from the global RNG.
Here every image draws its own, from the run's ``torch.Generator`` on the device (no host copy), so
same-seed reruns and resumed runs are bit-identical; each operation is computed for the whole batch
and kept where an image drew it. The tests check each operation against torchvision's
``transforms.v2.functional`` on single images.
"""
from __future__ import annotations

import torch

LUMA = (0.2989, 0.587, 0.114)      # torchvision rgb_to_grayscale


def _bcast(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def luma(x: torch.Tensor) -> torch.Tensor:
    """Grey value (N, 1, H, W) of [0, 1] images (N, C, H, W): the ITU-R 601 luma of RGB; C = 1: x."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x·f per image (f: (N,)), clamped to [0, 1]."""
    return (x * _bcast(f)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean grey value: f·x + (1 - f)·mean(luma(x)), clamped to [0, 1]."""
    mean = luma(x).mean(dim=(1, 2, 3), keepdim=True)
    return (_bcast(f) * x + (1 - _bcast(f)) * mean).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the grey image: f·x + (1 - f)·luma(x), clamped; 1-channel images unchanged."""
    if x.shape[1] == 1:
        return x
    return (_bcast(f) * x + (1 - _bcast(f)) * luma(x)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of RGB images by f turns (f: (N,) in [-0.5, 0.5]); 1-channel images unchanged."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eq = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eq, ones, maxc)
    crd = torch.where(eq, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.remainder(h + f.view(-1, 1, 1), 1.0)
    v = maxc
    i = torch.floor(h * 6.0)
    fr = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * fr)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - fr))).clamp(0, 1)
    table = torch.stack([torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
                                                      (v, p, q))], 1)            # (N, 6, 3, H, W)
    return table.gather(1, i[:, None, None].expand(-1, 1, 3, -1, -1)).squeeze(1)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator, device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=generator, device=generator.device)).to(device)


def color_jitter(x: torch.Tensor, generator: torch.Generator, p: float, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1) -> torch.Tensor:
    """``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)`` per image of [0, 1]
    images x (N, C, H, W) (module docstring); the same shape, dtype and device. ``p = 0`` returns x
    and draws nothing. Raises ValueError for a probability outside [0, 1], a negative strength or
    ``hue`` > 0.5."""
    if not 0 <= p <= 1 or min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise ValueError(f"color_jitter: p {p} must lie in [0, 1], strengths >= 0, hue <= 0.5")
    if p == 0:
        return x
    n, dev = len(x), x.device
    apply = _uniform(n, 0, 1, generator, dev) < p
    factors = [_uniform(n, max(0.0, 1 - brightness), 1 + brightness, generator, dev),
               _uniform(n, max(0.0, 1 - contrast), 1 + contrast, generator, dev),
               _uniform(n, max(0.0, 1 - saturation), 1 + saturation, generator, dev),
               _uniform(n, -hue, hue, generator, dev)]
    order = torch.rand(n, 4, generator=generator, device=generator.device).argsort(1).to(dev)
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    out = x
    for position in range(4):
        step = out
        for k, op in enumerate(ops):
            step = torch.where(_bcast(order[:, position] == k), op(out, factors[k]), step)
        out = step
    return torch.where(_bcast(apply), out, x)


def random_grayscale(x: torch.Tensor, generator: torch.Generator, p: float) -> torch.Tensor:
    """``RandomGrayscale(p)`` per image of [0, 1] images x (N, C, H, W): the luma in every channel.
    ``p = 0`` returns x and draws nothing; 1-channel images are unchanged (one draw per image still)."""
    if not 0 <= p <= 1:
        raise ValueError(f"random_grayscale: p {p} must lie in [0, 1]")
    if p == 0:
        return x
    apply = _uniform(len(x), 0, 1, generator, x.device) < p
    return torch.where(_bcast(apply), luma(x).expand_as(x), x)
