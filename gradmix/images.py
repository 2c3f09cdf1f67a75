"""Image files -> pixel arrays in [0, 1]: every Pillow mode the loaders accept, scaled by its bit depth.

:func:`decode` reads one file (Pillow), brings it to grey (``"L"``, 1 channel) or colour
(``"RGB"``, 3 channels), resizes its shorter side and centre-crops it. How each Pillow mode is read:

==========================================  ===============================================================
Pillow mode                                 rule
==========================================  ===============================================================
``1``, ``L``                                8-bit grey: value / 255 (``1``: 0 or 1)
``LA``, ``La``                              grey + alpha: alpha dropped (see below)
``I;16``, ``I;16L``, ``I;16B``, ``I;16N``   16-bit grey (PNG, TIFF; microscopy, medical imaging): value / 65535
``I``                                       32-bit integer grey, as Pillow opens many 16-bit files: value /
                                            65535; a value outside 0..65535 fails naming the file
``F``                                       32-bit float grey: taken as intensities already in [0, 1]; a
                                            value outside [0, 1] or NaN/inf fails naming the file (rescale
                                            such files yourself, e.g. to 16-bit)
``RGB``, ``RGBX``                           8-bit colour: value / 255
``RGBA``, ``RGBa``                          colour + alpha: alpha dropped (``RGBa``, premultiplied, is
                                            un-premultiplied by Pillow first)
``P``, ``PA``                               palette: each index replaced by its palette colour; palette
                                            transparency and alpha dropped
``CMYK``, ``YCbCr``, ``HSV``, ``LAB``       converted to RGB by Pillow (CMYK: (255 - C)(255 - K)/255 ...)
anything else                               ValueError naming the file and its mode
==========================================  ===============================================================

**Alpha is dropped**: the stored colour (or grey) values are kept as they are, not composited over a
background, so a transparent pixel shows whatever colour it stores. Datasets with meaningful
transparency should be flattened onto the background you want before training.

Grey images in a colour dataset are repeated over the three channels; colour images in a grey
dataset (only possible in ``test/``) become Pillow's luma ``L = 0.299 R + 0.587 G + 0.114 B``.
8-bit images are resized as uint8 (Pillow bilinear), exactly as before 16-bit support; high-bit-depth
modes are resized as 32-bit floats (Pillow ``F``, bilinear) and returned as float32.
"""
from __future__ import annotations

import numpy as np

HIGH_BIT = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
GREY = {"1", "L", "LA", "La", *HIGH_BIT}
COLOUR = {"RGB", "RGBX", "RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "HSV", "LAB"}
MODES = GREY | COLOUR


def check_mode(mode: str, path) -> None:
    """ValueError naming ``path`` if Pillow ``mode`` is not one the loader can scale to [0, 1]."""
    if mode not in MODES:
        raise ValueError(f"{path}: Pillow image mode {mode!r} is not supported; supported modes: {sorted(MODES)} "
                         f"(convert the file, e.g. to 8-bit RGB or 16-bit grey PNG)")


def _eight_bit(im, mode: str):
    """Pillow image of an 8-bit mode -> ``mode`` ("L" or "RGB"), alpha and palettes resolved."""
    if im.mode == "La":
        im = im.convert("LA")
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")            # palette colours (and transparency, dropped below)
    if im.mode not in ("1", "L", "LA", "RGB"):
        im = im.convert("RGB")             # RGBA/RGBa/RGBX/CMYK/YCbCr/HSV/LAB
    return im.convert(mode)


def _resize_crop(im, size: int, resample):
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), resample)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def decode(path, mode: str, size: int = 0, as_float: bool = False) -> np.ndarray:
    """One image file -> (C, S, S): ``mode`` "L" (C = 1) or "RGB" (C = 3); shorter side resized to
    ``size`` (0 = keep) and centre-cropped. See the module docstring for each Pillow mode.

    Returns uint8 (0..255), or float32 in [0, 1] with ``as_float`` (ImageFolder decodes a dataset
    holding any high-bit-depth file this way). With ``as_float`` False a high-bit-depth file is
    rounded to uint8 (scaled, never clipped). Raises ValueError naming the file for an unsupported
    mode or out-of-range values.
    """
    from PIL import Image

    with Image.open(path) as im:
        check_mode(im.mode, path)
        if im.mode not in HIGH_BIT:
            im = _eight_bit(im, mode)
            if size:
                im = _resize_crop(im, size, Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            return a.astype(np.float32) / np.float32(255.0) if as_float else a
        scale = HIGH_BIT[im.mode]
        f = im.convert("F")
        raw = np.asarray(f, dtype=np.float32)
        if not np.isfinite(raw).all() or raw.min() < 0 or raw.max() > scale:
            lo, hi = float(np.nanmin(raw)), float(np.nanmax(raw))
            raise ValueError(f"{path}: Pillow mode {im.mode!r} values span [{lo:g}, {hi:g}] (or are not finite); "
                             f"the loader reads this mode as intensities in [0, {scale:g}] (module gradmix.images); "
                             f"rescale the file, e.g. to 16-bit")
        if size:
            f = _resize_crop(f, size, Image.BILINEAR)
        a = np.clip(np.asarray(f, dtype=np.float32) / np.float32(scale), 0.0, 1.0)[None]
    if mode == "RGB":
        a = np.repeat(a, 3, axis=0)
    return a if as_float else np.round(a * 255.0).astype(np.uint8)
