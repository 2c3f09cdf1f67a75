"""Datasets as open-set benchmarks, held as tensors on the training device.

A dataset loader returns raw images and labels for its train and test sets; :func:`load_openset`
turns them into one known/unknown split of the standard protocol (:mod:`gradmix.splits`), resized
to ``data.image_size`` and normalised with the training set's statistics. Batches are drawn from the
device-resident tensors (:func:`batches`, :func:`augment`), as in airbench's GPU loader, so a step
never waits for a CPU worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .config import DataConfig
from .splits import known_classes


@dataclass(frozen=True)
class RawDataset:
    """Images as float arrays in [0, 1], shape (N, C, H, W), with integer labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DatasetInfo:
    protocol: str                   # key of gradmix.splits.OSR_SPLITS
    channels: int
    num_classes: int
    load: Callable[[DataConfig], RawDataset]
    description: str


def _load_digits(cfg: DataConfig) -> RawDataset:
    """scikit-learn's bundled digits (1,797 images, 8x8, values 0..16), stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]          # (1797, 1, 8, 8) in [0, 1]
    y = d.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=cfg.test_fraction, stratify=y, random_state=cfg.split_seed)
    return RawDataset(x[idx_train], y[idx_train], x[idx_test], y[idx_test],
                      tuple(str(i) for i in range(10)))


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 1, 10, _load_digits,
                          "scikit-learn digits, 8x8 grey, 10 classes; MNIST's OSR splits"),
}


@dataclass
class OpenSetData:
    """One open-set split on one device.

    x_*: (N, C, S, S) float32, normalised; y_train / y_known: (N,) int64 in 0..K-1 (known-class
    index); y_unknown: (M,) original class ids of the unknown test images.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_known: torch.Tensor
    y_known: torch.Tensor
    x_unknown: torch.Tensor
    y_unknown: torch.Tensor
    known: list[int]                # original ids of the known classes, index = training label
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.known)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] pixel space, for display."""
        m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return x * s + m


def _resize(x: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t


def load_openset(cfg: DataConfig, split: int, device: torch.device | str = "cpu") -> OpenSetData:
    """Build split ``split`` of ``cfg.dataset``: known-class train set, known and unknown test sets."""
    info = DATASETS[cfg.dataset]
    raw = info.load(cfg)
    known = known_classes(info.protocol, split)
    lut = np.full(info.num_classes, -1, dtype=np.int64)
    lut[known] = np.arange(len(known))
    rng = np.random.default_rng(cfg.split_seed)

    train = np.flatnonzero(lut[raw.y_train] >= 0)
    if cfg.max_train and len(train) > cfg.max_train:
        train = np.sort(rng.permutation(train)[: cfg.max_train])
    test_known = np.flatnonzero(lut[raw.y_test] >= 0)
    test_unknown = np.flatnonzero(lut[raw.y_test] < 0)
    if cfg.balance_test:  # Vaze et al. balance_open_set_eval: subsample the larger side
        n = min(len(test_known), len(test_unknown))
        test_known = np.sort(rng.permutation(test_known)[:n])
        test_unknown = np.sort(rng.permutation(test_unknown)[:n])

    x_train = _resize(raw.x_train[train], cfg.image_size)
    mean = x_train.mean(dim=(0, 2, 3))
    std = x_train.std(dim=(0, 2, 3)).clamp_min(1e-6)

    def norm(t: torch.Tensor) -> torch.Tensor:
        return ((t - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).to(device)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(device)

    return OpenSetData(
        x_train=norm(x_train), y_train=labels(lut[raw.y_train[train]]),
        x_known=norm(_resize(raw.x_test[test_known], cfg.image_size)), y_known=labels(lut[raw.y_test[test_known]]),
        x_unknown=norm(_resize(raw.x_test[test_unknown], cfg.image_size)), y_unknown=labels(raw.y_test[test_unknown]),
        known=known, mean=tuple(mean.tolist()), std=tuple(std.tolist()),
        class_names=tuple(raw.class_names[k] for k in known),
    )


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches over ``n`` items; the last partial batch is dropped when n > batch_size."""
    perm = torch.randperm(n, generator=generator, device=generator.device)
    stop = n - n % batch_size if n > batch_size else n
    for i in range(0, stop, batch_size):
        yield perm[i:i + batch_size]


def augment(x: torch.Tensor, generator: torch.Generator, crop_padding: int = 0,
            hflip: bool = False) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip of a batch (N, C, H, W), on its device."""
    n, c, h, w = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=generator.device).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=generator.device).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                   torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if hflip:
        flip = torch.rand(n, generator=generator, device=generator.device).to(x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x
