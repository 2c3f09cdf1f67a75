"""Common corruptions: CIFAR-10-C from its official archive, and the same corruptions on the fly.

**Archive.** CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019; Zenodo record 2535967, md5-verified by
:mod:`gradmix.download`): one ``<corruption>.npy`` (50000, 32, 32, 3) uint8 per corruption, the
10,000 CIFAR-10 test images at severity 1 (rows 0..9999) to 5 (rows 40000..49999), and
``labels.npy``. :func:`cifar10c` reads one corruption and severity.

**On the fly.** :data:`CORRUPTIONS` re-implements 13 of its 19 corruptions as batched torch
functions ``f(x, severity, generator) -> x'`` on images (N, C, H, W) in [0, 1], on their device,
random only through ``generator``. Constants per severity are those of ``make_cifar_c.py``
(hendrycks/robustness, CIFAR version), in pixels, so they apply to any dataset and resolution
(the embedded digits included). Deviations from the original, all for batching and determinism:
impulse noise flips each value independently with probability c (skimage flips exactly ⌈c·n⌉);
motion blur is ImageMagick's one-sided Gaussian line kernel rebuilt in torch (edge pixels
replicated); pixelate uses Pillow's box-filter weights without the uint8 rounding in between;
images stay float (no uint8 quantisation) except for JPEG (Pillow, as the original). Not re-implemented (use the archive):
glass_blur, snow, frost, fog, spatter, elastic_transform, and saturate on 1-channel images
(identity there, since saturation is undefined for grey).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# The 15 benchmark corruptions, then the 4 extra ones, as named in the archive.
CIFAR10C_BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                      "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                      "elastic_transform", "pixelate", "jpeg_compression")
CIFAR10C_CORRUPTIONS = CIFAR10C_BENCHMARK + ("speckle_noise", "gaussian_blur", "spatter", "saturate")


def _sev(values, severity: int):
    return values[severity - 1]


def gaussian_noise(x, severity, gen):
    c = _sev([0.04, 0.06, 0.08, 0.09, 0.10], severity)
    return (x + c * torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)).clamp(0, 1)


def shot_noise(x, severity, gen):
    c = _sev([500, 250, 100, 75, 50], severity)
    return (torch.poisson((x * c).to(gen.device), generator=gen).to(x.device) / c).clamp(0, 1)


def impulse_noise(x, severity, gen):
    c = _sev([0.01, 0.02, 0.03, 0.05, 0.07], severity)
    u = torch.rand((2, *x.shape), generator=gen, device=gen.device).to(x.device)
    return torch.where(u[0] < c, (u[1] < 0.5).to(x.dtype), x)


def speckle_noise(x, severity, gen):
    c = _sev([0.06, 0.1, 0.12, 0.16, 0.2], severity)
    return (x + x * c * torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)).clamp(0, 1)


def _conv(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Convolve every channel of x (N, C, H, W) with one 2-D kernel (kh, kw), padding by ``mode``."""
    kh, kw = kernel.shape
    n, c, h, w = x.shape
    ph, pw = kh // 2, kw // 2
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    y = F.pad(x.reshape(n * c, 1, h, w), (pw, pw, ph, ph), mode=mode)
    return F.conv2d(y, kernel.to(x)[None, None]).reshape(n, c, h, w)


def _gauss1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x, severity, gen):
    """skimage.filters.gaussian(sigma=c): truncate 4 sigma, 'nearest' borders."""
    k = _gauss1d(_sev([0.4, 0.6, 0.7, 0.8, 1.0], severity))
    return _conv(x, torch.outer(k, k).float(), "replicate").clamp(0, 1)


def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    """make_cifar_c.disk: aliased disk on a 17x17 grid, normalised, then a 3x3 Gaussian (cv2) of alias_blur."""
    r = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(r, r)
    d = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    d /= d.sum()
    g = np.exp(-0.5 * (np.arange(-1, 2) / alias_blur) ** 2)
    g /= g.sum()
    k = torch.from_numpy(d)[None, None]
    k = F.conv2d(F.pad(k, (1, 1, 1, 1), mode="reflect"), torch.from_numpy(np.outer(g, g))[None, None])[0, 0]
    nz = torch.nonzero(k > 1e-12)
    lo, hi = nz.min(0).values, nz.max(0).values
    c = k.shape[0] // 2
    m = int(max(c - lo.min(), hi.max() - c))                     # symmetric crop to the support
    return k[c - m:c + m + 1, c - m:c + m + 1].float()


def defocus_blur(x, severity, gen):
    radius, alias = _sev([(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)], severity)
    return _conv(x, _disk(radius, alias), "reflect").clamp(0, 1)


def motion_blur(x, severity, gen):
    """ImageMagick -motion-blur radius x sigma at an angle ~ U(-45°, 45°) per image: a one-sided line
    of 2·radius+1 taps with weights exp(-i²/2σ²), edges replicated."""
    radius, sigma = _sev([(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)], severity)
    n, c, h, w = x.shape
    width = 2 * radius + 1
    i = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(i ** 2) / (2 * sigma ** 2))
    weights = (weights / weights.sum()).to(x)
    angle = (torch.rand(n, generator=gen, device=gen.device, dtype=torch.float64) * 90 - 45).cpu()
    rad = angle * math.pi / 180
    dy = torch.round(i[None] * torch.sin(rad)[:, None]).long().to(x.device)      # (N, width)
    dx = torch.round(i[None] * torch.cos(rad)[:, None]).long().to(x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    out = torch.zeros_like(x)
    batch = torch.arange(n, device=x.device)[:, None, None]
    for k in range(width):
        r = (rows[None] + dy[:, k:k + 1]).clamp(0, h - 1)                          # (N, H)
        q = (cols[None] + dx[:, k:k + 1]).clamp(0, w - 1)                          # (N, W)
        shifted = x[batch, :, r[:, :, None], q[:, None, :]]                        # (N, H, W, C)
        out += weights[k] * shifted.permute(0, 3, 1, 2)
    return out.clamp(0, 1)


def _clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    h = x.shape[-1]
    ch = int(math.ceil(h / z))
    top = (h - ch) // 2
    crop = x[..., top:top + ch, top:top + ch]
    out = int(round(ch * z))
    up = F.interpolate(crop, size=(out, out), mode="bilinear", align_corners=True)   # scipy zoom, order 1
    t = (out - h) // 2
    return up[..., t:t + h, t:t + h]


def zoom_blur(x, severity, gen):
    top = _sev([1.06, 1.11, 1.16, 1.21, 1.26], severity)
    zooms = np.arange(1, top, 0.01)
    out = x.clone()
    for z in zooms:
        out += _clipped_zoom(x, float(z))
    return (out / (len(zooms) + 1)).clamp(0, 1)


def contrast(x, severity, gen):
    c = _sev([0.75, 0.5, 0.4, 0.3, 0.15], severity)
    m = x.mean(dim=(2, 3), keepdim=True)
    return ((x - m) * c + m).clamp(0, 1)


def brightness(x, severity, gen):
    """HSV value + c (as make_cifar_c via skimage): RGB scales by V'/V; a black pixel becomes grey V'."""
    c = _sev([0.05, 0.1, 0.15, 0.2, 0.3], severity)
    v = x.max(dim=1, keepdim=True).values
    v2 = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v2 / v.clamp_min(1e-12), v2.expand_as(x)).clamp(0, 1)


def saturate(x, severity, gen):
    """HSV saturation·c0 + c1, hue and value kept (RGB only; identity on grey images)."""
    c0, c1 = _sev([(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)], severity)
    if x.shape[1] != 3:
        return x
    v = x.max(dim=1, keepdim=True).values
    mn = x.min(dim=1, keepdim=True).values
    s = torch.where(v > 0, (v - mn) / v.clamp_min(1e-12), torch.zeros_like(v))
    s2 = (s * c0 + c1).clamp(0, 1)
    scaled = v - (v - x) * s2 / s.clamp_min(1e-12)
    grey = torch.cat([v, v * (1 - s2), v * (1 - s2)], dim=1)      # hue 0 (skimage's choice for s = 0)
    return torch.where(s > 0, scaled, grey).clamp(0, 1)


def _box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's box-filter resampling weights (Resample.c precompute_coeffs) as an (n_out, n_in) matrix."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):
        center = (j + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - center + 0.5) / fscale
            m[j, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        m[j] /= m[j].sum()
    return m


def pixelate(x, severity, gen):
    c = _sev([0.95, 0.9, 0.85, 0.75, 0.65], severity)
    h, w = x.shape[-2:]
    sh, sw = int(h * c), int(w * c)
    down_h, down_w = _box_matrix(h, sh).to(x), _box_matrix(w, sw).to(x)
    up_h, up_w = _box_matrix(sh, h).to(x), _box_matrix(sw, w).to(x)
    small = down_h @ x @ down_w.T
    return (up_h @ small @ up_w.T).clamp(0, 1)


def jpeg_compression(x, severity, gen):
    """JPEG at quality c with Pillow, as the original (uint8, on the CPU)."""
    import io

    from PIL import Image

    q = _sev([80, 65, 58, 50, 40], severity)
    u8 = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    out = []
    for img in u8:
        a = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=q)
        d = torch.from_numpy(np.asarray(Image.open(buf)).copy())
        out.append(d[None] if d.ndim == 2 else d.permute(2, 0, 1))
    return (torch.stack(out).float() / 255).to(x.device)


CORRUPTIONS = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, speckle_noise, gaussian_blur, defocus_blur, motion_blur,
    zoom_blur, contrast, brightness, saturate, pixelate, jpeg_compression)}


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``CORRUPTIONS[name]`` at ``severity`` (1..5) on x (N, C, H, W) in [0, 1], seeded per (name, severity).

    The same seed gives the same corrupted images, so every method is evaluated on identical inputs.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid: {sorted(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity {severity} out of range; valid: 1..5")
    gen = torch.Generator(device=x.device if x.device.type == "cuda" else "cpu")
    gen.manual_seed(int(seed) * 1000 + sorted(CORRUPTIONS).index(name) * 10 + severity)
    with torch.no_grad():
        return CORRUPTIONS[name](x, severity, gen)


def cifar10c(cfg, name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10-C images (10000, 3, 32, 32) uint8 and labels of one corruption and severity."""
    from .datasets import extracted

    if name not in CIFAR10C_CORRUPTIONS:
        raise ValueError(f"unknown CIFAR-10-C corruption {name!r}; valid: {list(CIFAR10C_CORRUPTIONS)}")
    folder = extracted("cifar10c", cfg) / "CIFAR-10-C"
    labels = np.load(folder / "labels.npy", mmap_mode="r")
    per = len(labels) // 5                                      # 10,000 in the official archive
    rows = slice((severity - 1) * per, severity * per)
    x = np.load(folder / f"{name}.npy", mmap_mode="r")[rows]
    y = labels[rows]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.asarray(y, dtype=np.int64)
