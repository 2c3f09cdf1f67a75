"""RandAugment as Vaze et al. train the cross-entropy baseline, per sample, on the device, seeded.

Vaze et al. ("Open-Set Recognition: a Good Closed-Set Classifier is All You Need?", ICLR 2022;
sgvaze/osr_closed_set_all_you_need ``data/augmentations/randaugment.py``, from ildoonet's
pytorch-randaugment) insert ``RandAugment(N, M)`` before the crop and flip of every training image:
for each image, N operations drawn uniformly *with* replacement from a list, each applied at the
fixed magnitude ``v = M/30·(max - min) + min`` of its range, the geometric ones with a random sign.
Their lists (:data:`POLICIES`):

* ``standard`` (CIFAR, TinyImageNet, ...): the 16 operations of :data:`RANGES`;
* ``digits`` (their ``augment_list_svhn``, used for MNIST and SVHN): the same without ``rotate``,
  ``translate_x`` and ``translate_y``.

The operations follow the PIL ones they use, on 8-bit images (what PIL works on): an image in
[0, 1] is rounded to 8 bits on the way in (≤ 0.5/255 per pixel) and returned in [0, 1]. Pixel
magnitudes (``translate_*``: up to 100 px; ``cutout``: a square of up to 40 px, PIL's inclusive
rectangle from a uniform corner, filled with (125, 123, 114), or its luma 123 on 1-channel images)
are pixels of the image as it enters the trainer, as Vaze's act on the dataset's native images.
Their quirks are kept, since they are what the published numbers used: ``posterize`` keeps
``max(1, int(v))`` bits with v in [0, 4] (1 bit at M < 15), ``color``, ``contrast``, ``brightness``
and ``sharpness`` blend with a fixed factor (< 1, i.e. weaker, for M < 15), ``solarize_add`` adds v
then solarizes at 128.

Why not a library's RandAugment: kornia's ``kornia.augmentation.auto.RandAugment`` and torchvision's
``transforms.v2.RandAugment`` draw the operations once per *batch* (every image of a batch gets the
same ones), from torch's global RNG, and their lists and ranges differ from Vaze's (kornia:
translation ±10 % of the side, posterize 4–8 bits, no cutout; torchvision: magnitude bins). Here
each image draws its own operations and signs from the run's ``torch.Generator`` (on the device:
nothing is copied to the host), so same-seed reruns and resumed runs are bit-identical. Every
operation is computed for the whole batch and kept where an image drew it (``torch.where``): no
data-dependent indexing, no host synchronisation. The per-image arithmetic is torchvision's
``transforms.v2.functional`` (PIL-compatible on uint8 tensors); the tests check each operation
against PIL (Vaze's implementation) and against kornia's functional operations where they agree.
"""
from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF

# operation -> (min, max) of Vaze et al.'s augment_list (the magnitude v = M/30·(max - min) + min)
RANGES = {
    "auto_contrast": (0, 1), "equalize": (0, 1), "invert": (0, 1), "rotate": (0, 30), "posterize": (0, 4),
    "solarize": (0, 256), "solarize_add": (0, 110), "color": (0.1, 1.9), "contrast": (0.1, 1.9),
    "brightness": (0.1, 1.9), "sharpness": (0.1, 1.9), "shear_x": (0.0, 0.3), "shear_y": (0.0, 0.3),
    "cutout": (0, 40), "translate_x": (0.0, 100), "translate_y": (0.0, 100),
}
SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")   # ± at random, per image
POLICIES = {
    "standard": tuple(RANGES),
    "digits": tuple(op for op in RANGES if op not in ("rotate", "translate_x", "translate_y")),
}
CUTOUT_FILL = (125, 123, 114)      # Vaze's CutoutAbs colour; 1-channel images: its luma, 123
MAX_M = 30


def magnitude(op: str, m: float) -> float:
    """Vaze's value of ``op`` at magnitude ``m`` (0..30): ``m/30·(max - min) + min``."""
    lo, hi = RANGES[op]
    return m / MAX_M * (hi - lo) + lo


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> 8-bit images (rounded, clamped)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _nearest(x8: torch.Tensor, **affine) -> torch.Tensor:
    return TF.affine(x8, interpolation=TF.InterpolationMode.NEAREST, fill=0,
                     **{"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": [0.0, 0.0], **affine})


def _solarize(x8: torch.Tensor, threshold: float) -> torch.Tensor:
    """PIL's solarize: pixels >= threshold inverted (threshold 256, M = 30: none; torchvision refuses it)."""
    return torch.where(x8.to(torch.float32) >= threshold, 255 - x8, x8)


def apply_op(op: str, x8: torch.Tensor, v: float, corner: torch.Tensor | None = None) -> torch.Tensor:
    """Operation ``op`` at value ``v`` (signed for the geometric ones) on a uint8 batch x8 (N, C, H, W).

    As PIL applies it in Vaze's list: ``rotate`` v degrees counter-clockwise about the centre,
    ``shear_x``/``shear_y`` the affine (1, v, 0, 0, 1, 0) / (1, 0, 0, v, 1, 0) about the top-left
    corner, ``translate_x``/``translate_y`` by v pixels (output (x, y) = input (x + v, y)), all with
    nearest sampling and black fill; ``cutout`` needs ``corner`` (N, 2): the uniform draws (x, y) in
    [0, W) × [0, H) of each image's square. Returns uint8 (N, C, H, W) on x8's device.
    """
    if op == "auto_contrast":
        return TF.autocontrast(x8)
    if op == "equalize":
        return TF.equalize(x8)
    if op == "invert":
        return TF.invert(x8)
    if op == "rotate":
        return TF.rotate(x8, v, interpolation=TF.InterpolationMode.NEAREST, fill=0)
    if op == "posterize":
        return TF.posterize(x8, max(1, int(v)))
    if op == "solarize":
        return _solarize(x8, v)
    if op == "solarize_add":
        added = (x8.to(torch.float32) + v).clamp(0, 255).floor().to(torch.uint8)   # astype(uint8) truncates
        return _solarize(added, 128)
    if op == "color":
        return TF.adjust_saturation(x8, v)
    if op == "contrast":
        return TF.adjust_contrast(x8, v)
    if op == "brightness":
        return TF.adjust_brightness(x8, v)
    if op == "sharpness":
        return TF.adjust_sharpness(x8, v)
    if op == "shear_x":
        return _nearest(x8, shear=[math.degrees(math.atan(v)), 0.0], center=[0, 0])
    if op == "shear_y":
        return _nearest(x8, shear=[0.0, math.degrees(math.atan(v))], center=[0, 0])
    if op == "translate_x":
        return _nearest(x8, translate=[-v, 0.0])
    if op == "translate_y":
        return _nearest(x8, translate=[0.0, -v])
    if op == "cutout":
        return cutout(x8, v, corner)
    raise ValueError(f"unknown RandAugment operation {op!r}; valid: {list(RANGES)}")


def cutout(x8: torch.Tensor, v: float, corner: torch.Tensor) -> torch.Tensor:
    """Vaze's CutoutAbs per image: corner (N, 2) = (x, y) uniform in [0, W) × [0, H); the square
    x0 = int(max(0, x - v/2)), x1 = min(W, x0 + v) (same for y), filled inclusively as PIL's
    ``ImageDraw.rectangle`` does, with :data:`CUTOUT_FILL`."""
    n, c, h, w = x8.shape
    if v < 0:
        return x8
    x0 = (corner[:, 0] - v / 2).clamp_min(0).floor()
    y0 = (corner[:, 1] - v / 2).clamp_min(0).floor()
    x1 = (x0 + v).clamp_max(w)
    y1 = (y0 + v).clamp_max(h)
    cols = torch.arange(w, device=x8.device, dtype=x0.dtype)
    rows = torch.arange(h, device=x8.device, dtype=x0.dtype)
    # PIL rasterises the rectangle's float corners to pixels [round(x0), round(x1)] inclusive
    inside_x = (cols[None] >= x0.round()[:, None]) & (cols[None] <= x1.round()[:, None])
    inside_y = (rows[None] >= y0.round()[:, None]) & (rows[None] <= y1.round()[:, None])
    box = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]
    fill = CUTOUT_FILL if c == 3 else (round(0.299 * 125 + 0.587 * 123 + 0.114 * 114),) * c
    fill = torch.tensor(fill, dtype=torch.uint8, device=x8.device).view(1, c, 1, 1)
    return torch.where(box, fill, x8)


def rand_augment(x8: torch.Tensor, generator: torch.Generator, n: int, m: float,
                 policy: str = "standard") -> torch.Tensor:
    """Vaze et al.'s RandAugment(N=n, M=m) on a uint8 batch x8 (N, C, H, W), per image (module docstring).

    Each of the ``n`` rounds draws, per image and from ``generator`` (on the generator's device), an
    operation of ``POLICIES[policy]``, a sign and a cutout corner. Returns uint8 (N, C, H, W) on
    x8's device; ``n = 0`` returns x8 and draws nothing. Raises ValueError for an unknown policy or
    an ``m`` outside [0, 30].
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown RandAugment policy {policy!r}; valid: {sorted(POLICIES)}")
    if not 0 <= m <= MAX_M:
        raise ValueError(f"RandAugment magnitude {m!r} out of range; valid: [0, {MAX_M}]")
    ops = POLICIES[policy]
    b, _, h, w = x8.shape
    gdev = generator.device
    for _ in range(n):
        pick = torch.randint(len(ops), (b,), generator=generator, device=gdev).to(x8.device)
        flip = (torch.rand(b, generator=generator, device=gdev) > 0.5).to(x8.device)   # Vaze: v = -v
        corner = (torch.rand(b, 2, generator=generator, device=gdev)
                  * torch.tensor([w, h], device=gdev)).to(x8.device)
        out = x8
        for k, op in enumerate(ops):
            v = magnitude(op, m)
            y = apply_op(op, x8, v, corner)
            if op in SIGNED:
                y = torch.where(flip[:, None, None, None], apply_op(op, x8, -v), y)
            out = torch.where((pick == k)[:, None, None, None], y, out)
        x8 = out
    return x8


def rand_augment_normalized(x: torch.Tensor, generator: torch.Generator, n: int, m: float, policy: str,
                            mean, std) -> torch.Tensor:
    """:func:`rand_augment` of a batch x (N, C, H, W) normalised with per-channel ``mean``/``std`` (the
    trainer's input space): de-normalised to [0, 1], augmented as 8-bit images, normalised back;
    float (N, C, H, W) in x's dtype and device."""
    if n == 0:
        return x
    mu = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    sd = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    x8 = to_uint8(x.float() * sd + mu)
    out = rand_augment(x8, generator, n, m, policy).float() / 255
    return ((out - mu) / sd).to(x.dtype)
