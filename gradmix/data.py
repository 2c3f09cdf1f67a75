"""Datasets as open-set benchmarks, held as tensors on the training device.

A dataset loader returns raw images and labels for its train and test sets; :func:`load_openset`
turns them into one known/unknown split of the standard protocol (:mod:`gradmix.splits`), resized
to ``data.image_size``, stored compactly on the training device (``data.storage``: uint8 or float16)
and normalised per batch with the training set's statistics. Batches are drawn from the
device-resident tensors (:func:`batches`, :meth:`OpenSetData.train_batch`, :func:`augment`), as in
airbench's GPU loader, so a step never waits for a CPU worker.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .checks import ConfigError  # "DataConfig" below: gradmix.config.DataConfig (config imports this module)
from .datasets import DATASETS_EXTRA, DatasetInfo, RawDataset  # noqa: F401  (re-exported)
from .splits import OSR_SPLITS, known_classes, resolve_classes


def _load_digits(cfg: "DataConfig") -> RawDataset:
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
                          "scikit-learn digits, 8x8 grey, 10 classes; MNIST's OSR splits", native_size=8),
    **DATASETS_EXTRA,  # the downloaded OSR benchmarks and ImageFolder data (gradmix.datasets)
}


STORAGE = ("auto", "uint8", "float16", "float32")
PIXEL_DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32}
PIXEL_BYTES = {"uint8": 1, "float16": 2, "float32": 4}


@dataclass
class OpenSetData:
    """One open-set split on one device.

    pixels_*: (N, C, S, S) images in [0, 1] as stored on the device (``data.storage``): uint8 (value
    = pixel·255), float16 or float32. y_train / y_known: (N,) int64 in 0..K-1 (known-class index);
    y_unknown: (M,) original class ids of the unknown test images.

    The model's inputs are the normalised float32 images ``(pixels - mean) / std``: a training step
    takes them per batch (:meth:`train_batch`, :meth:`images`), so the device holds the compact pixels
    only; ``x_train``, ``x_known`` and ``x_unknown`` give a whole set normalised (a new float32 tensor
    at each access; evaluation, figures and robustness use them).
    """

    pixels_train: torch.Tensor
    y_train: torch.Tensor
    pixels_known: torch.Tensor
    y_known: torch.Tensor
    pixels_unknown: torch.Tensor
    y_unknown: torch.Tensor
    known: list[int]                # original ids of the known classes, index = training label
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    def __post_init__(self):
        device = self.pixels_train.device          # mean/std on the device once: no copy per batch
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1).to(device)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1).to(device)

    @property
    def num_classes(self) -> int:
        return len(self.known)

    @property
    def num_train(self) -> int:
        return len(self.pixels_train)

    @property
    def in_channels(self) -> int:
        return self.pixels_train.shape[1]

    @property
    def storage(self) -> str:
        """How the pixels are stored: uint8 | float16 | float32."""
        return {v: k for k, v in PIXEL_DTYPES.items()}[self.pixels_train.dtype]

    def images(self, pixels: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised float32 images (n, C, S, S) of ``pixels[idx]`` (all if idx is None), on their device."""
        p = pixels if idx is None else pixels[idx]
        t = p.float().div_(255.0) if p.dtype == torch.uint8 else p.float()
        return (t - self._mean.to(t.device)) / self._std.to(t.device)

    def train_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The training images ``idx`` (n,), normalised: (n, C, S, S) float32."""
        return self.images(self.pixels_train, idx)

    @property
    def x_train(self) -> torch.Tensor:
        return self.images(self.pixels_train)

    @property
    def x_known(self) -> torch.Tensor:
        return self.images(self.pixels_known)

    @property
    def x_unknown(self) -> torch.Tensor:
        return self.images(self.pixels_unknown)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] pixel space, for display."""
        m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return x * s + m

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (N, C, H, W) -> the model's input space, with this split's mean and std."""
        m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - m) / s


def to_storage(sets: list[torch.Tensor], storage: str) -> tuple[list[torch.Tensor], str]:
    """[0, 1] float32 image sets as ``storage`` (``data.storage``), and the storage used.

    ``uint8`` rounds to the nearest of 256 levels (exact for 8-bit sources at their native size; a
    resized image loses up to 1/510 per pixel); ``float16`` keeps ~3 significant digits (error at most
    2.4e-4 in [0, 1]); ``float32`` is exact; ``auto`` is uint8 when every set is exactly 8-bit, else
    float16.
    """
    quantised = [(t * 255.0).round_().clamp_(0, 255).to(torch.uint8) for t in sets] \
        if storage in ("auto", "uint8") else None
    if storage == "auto":
        exact = all(torch.equal(q.float().div_(255.0), t) for q, t in zip(quantised, sets))
        storage = "uint8" if exact else "float16"
    if storage == "uint8":
        return quantised, storage
    return [t.to(PIXEL_DTYPES[storage]) for t in sets], storage


def memory_budget(device) -> tuple[int, str] | None:
    """(bytes, what they are) the data check compares with: a CUDA device's total memory, or the CPU's
    available RAM (psutil, else ``os.sysconf``); None where it cannot be told (then nothing is checked)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return total, f"the {total / 2**30:.1f} GiB of {device} ({free / 2**30:.1f} GiB free now)"
    if device.type == "cpu":
        try:
            import psutil
            avail = psutil.virtual_memory().available
        except ImportError:
            import os
            try:
                avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                return None
        return avail, f"the {avail / 2**30:.1f} GiB of RAM available now"
    return None


def check_fits(nbytes: int, device, fraction: float, what: str) -> None:
    """Raise ConfigError before any image is decoded onto ``device`` if ``nbytes`` exceed ``fraction`` of
    its memory (:func:`memory_budget`); ``fraction`` 0 checks nothing."""
    if not fraction:
        return
    budget = memory_budget(device)
    if budget is None:
        return
    total, desc = budget
    if nbytes > fraction * total:
        raise ConfigError(f"{what}: the images need about {nbytes / 2**30:.2f} GiB on {device}, more than "
                          f"train.max_data_fraction {fraction} of {desc}; lower data.image_size or "
                          f"data.max_train, store them smaller (data.storage uint8 or float16), or raise "
                          f"train.max_data_fraction")


def _resize(x: np.ndarray, size: int) -> torch.Tensor:
    """(N, C, H, W) uint8 (0..255) or float ([0, 1]) -> float32 in [0, 1] at size x size."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t


def open_set_classes(cfg: "DataConfig", info: DatasetInfo, raw: RawDataset,
                     split: int) -> tuple[list[int], list[int] | None]:
    """(known class ids, unknown class ids or None = every other class) of ``split``, by ``data.known``.

    protocol: the dataset's standard OSR split (for CIFAR+N the unknowns are the listed CIFAR-100
    classes); all: every training class known, no unknowns (closed set); list: ``data.known_classes``
    (:func:`gradmix.splits.resolve_classes`: class names; integers are folder names for ImageFolder,
    class ids otherwise; an ambiguous integer is reported as a warning); random: ``data.num_known``
    classes drawn by ``numpy.random.default_rng([known_seed, split])``, so each split index is its own
    fixed draw.
    """
    names = raw.class_names
    if cfg.known == "protocol":
        if info.protocol is None:
            raise ConfigError(f"data.known: {cfg.dataset!r} has no standard splits; set data.known "
                              f"to 'list' or 'random' (valid: all, list, random)")
        known = known_classes(info.protocol, split)
        unknown = ([c + info.unknown_offset for c in OSR_SPLITS[info.unknown_protocol][split]]
                   if info.unknown_protocol else None)
        return known, unknown
    present = sorted(int(c) for c in np.unique(raw.y_train))
    if cfg.known == "all":
        return present, []
    if cfg.known == "random":
        if cfg.num_known >= len(present):
            raise ConfigError(f"data.num_known: {cfg.num_known} leaves no unknown class; "
                              f"valid: 1..{len(present) - 1}")
        rng = np.random.default_rng([cfg.known_seed, split])
        return sorted(int(c) for c in rng.choice(present, cfg.num_known, replace=False)), None
    known, notes = resolve_classes(cfg.known_classes, names, by_name=cfg.dataset == "imagefolder")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if len(set(known)) != len(known) or len(known) >= len(names):
        raise ConfigError(f"data.known_classes: {list(cfg.known_classes)} must be distinct and leave "
                          f"at least one unknown class (of {len(names)})")
    return known, None


def stratified_subset(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of at most ``cap`` items of ``labels`` (N,), every class kept (``data.max_train``).

    Each class gets max(1, ⌊cap·n_c/N⌋) items (at most n_c), then the rest of ``cap`` goes one by one
    to the classes with the largest remainder of cap·n_c/N (ties: lower class first); the items of a
    class are ``rng.choice`` without replacement, classes in sorted order. scikit-learn's stratified
    split (used as the test oracle for the class shares) can drop a small class entirely, which
    leaves a known class without training images. Raises ConfigError if ``cap`` is below the number
    of classes.
    """
    classes, counts = np.unique(labels, return_counts=True)
    if cap >= len(labels):
        return np.arange(len(labels))
    if cap < len(classes):
        raise ConfigError(f"data.max_train: {cap} training images cannot hold the {len(classes)} known classes; "
                          f"valid: 0 (all) or >= {len(classes)}")
    share = cap * counts / counts.sum()
    quota = np.minimum(np.maximum(1, np.floor(share)).astype(np.int64), counts)
    while quota.sum() > cap:                       # the ≥1 floors overshot: trim the largest
        quota[np.argmax(np.where(quota > 1, quota, -1))] -= 1
    rest = share - quota
    while quota.sum() < cap:
        i = int(np.argmax(np.where(quota < counts, rest, -np.inf)))
        quota[i] += 1
        rest[i] -= 1
    picks = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks))


def _where(cfg: "DataConfig") -> str:
    return f"data.folder {cfg.folder}" if cfg.dataset == "imagefolder" else f"data.dataset {cfg.dataset}"


def check_split(cfg: "DataConfig", split: int, names, y_train: np.ndarray, y_test: np.ndarray, known,
                unknown) -> None:
    """Fail before training if ``split`` cannot give its metrics: a known class without training or test
    images, or (unless ``data.known: all``) no unknown test image. One ConfigError names the classes
    and the data."""
    def named(ids):
        return [names[i] for i in ids][:20]

    no_train = [k for k in known if not np.any(y_train == k)]
    no_test = [k for k in known if not np.any(y_test == k)]
    problems = []
    if no_train:
        problems.append(f"known class(es) {named(no_train)} have no training images")
    if no_test:
        problems.append(f"known class(es) {named(no_test)} have no test images")
    if cfg.known != "all":
        unk = np.isin(y_test, unknown) if unknown is not None else ~np.isin(y_test, known)
        if not unk.any():
            others = unknown if unknown is not None else [i for i in range(len(names)) if i not in set(known)]
            problems.append(f"the unknown test set is empty: unknown class(es) {named(others)} have no test images")
    if problems:
        raise ConfigError(f"{_where(cfg)}, split {split}: " + "; ".join(problems) +
                          " (the open-set metrics need train and test images of every known class and at least "
                          "one unknown test image; data.known: all runs closed-set)")


def check_splits(cfg: "DataConfig") -> None:
    """Run :func:`check_split` on every split of ``data.splits`` (labels only where the dataset can give
    them without decoding images); call before the first run trains."""
    info = DATASETS[cfg.dataset]
    if info.labels is not None:
        y_train, y_test, names = info.labels(cfg)
        raw = RawDataset(np.empty((len(y_train), 0)), y_train, np.empty((len(y_test), 0)), y_test, names)
    else:
        raw = info.load(cfg)
    for split in cfg.splits:
        known, unknown = open_set_classes(cfg, info, raw, split)
        check_split(cfg, split, raw.class_names, np.asarray(raw.y_train), np.asarray(raw.y_test), known, unknown)


def load_openset(cfg: "DataConfig", split: int, device: torch.device | str = "cpu",
                 max_fraction: float = 0.0) -> OpenSetData:
    """Build split ``split`` of ``cfg.dataset``: known-class train set, known and unknown test sets.

    Downloads (once, verified) what the dataset needs. The split is checked first (:func:`check_split`).
    With ``data.balance_test`` the larger of the known and unknown test sets is subsampled *without*
    replacement to the smaller one's size (seeded by ``split_seed``); Vaze et al.'s
    ``get_equal_len_datasets`` draws with replacement (``np.random.choice``), so theirs can repeat images;
    ``data.max_train`` keeps every known class (:func:`stratified_subset`, seeded by ``split_seed``). Images are resized to ``data.image_size``
    (0 = the dataset's native size) and stored on ``device`` as ``data.storage`` (:func:`to_storage`);
    they are normalised per batch (:class:`OpenSetData`) with ``data.mean``/``data.std``, or, when those
    are empty, with the per-channel statistics of the known-class training images (before storage).
    ``max_fraction`` > 0 (``train.max_data_fraction``): fail with the estimated size before resizing
    when the images would take more than that share of the device's memory (:func:`check_fits`).
    """
    info = DATASETS[cfg.dataset]
    raw = info.load(cfg)
    known, unknown = open_set_classes(cfg, info, raw, split)
    lut = np.full(len(raw.class_names), -1, dtype=np.int64)
    lut[known] = np.arange(len(known))
    rng = np.random.default_rng(cfg.split_seed)

    check_split(cfg, split, raw.class_names, np.asarray(raw.y_train), np.asarray(raw.y_test), known, unknown)
    train = np.flatnonzero(lut[raw.y_train] >= 0)
    if cfg.max_train and len(train) > cfg.max_train:
        train = train[stratified_subset(lut[raw.y_train[train]], cfg.max_train, rng)]
    test_known = np.flatnonzero(lut[raw.y_test] >= 0)
    test_unknown = (np.flatnonzero(np.isin(raw.y_test, unknown)) if unknown is not None
                    else np.flatnonzero(lut[raw.y_test] < 0))
    if cfg.balance_test and len(test_unknown):  # Vaze et al. balance_open_set_eval, but without replacement
        n = min(len(test_known), len(test_unknown))
        test_known = np.sort(rng.permutation(test_known)[:n])
        test_unknown = np.sort(rng.permutation(test_unknown)[:n])

    size = cfg.image_size or raw.x_train.shape[-1]
    count = len(train) + len(test_known) + len(test_unknown)
    per_pixel = PIXEL_BYTES.get(cfg.storage, 2)          # auto: at most float16
    check_fits(count * (raw.x_train.shape[1] * size * size * per_pixel + 8), device, max_fraction,
               f"{_where(cfg)}, split {split} ({count} images, {size}x{size}, {cfg.storage})")
    x_train = _resize(raw.x_train[train], size)
    if cfg.mean:
        if len(cfg.mean) != x_train.shape[1]:
            raise ConfigError(f"data.mean/std: {len(cfg.mean)} values for {x_train.shape[1]}-channel images; "
                              f"give {x_train.shape[1]} or leave them empty to compute them")
        mean, std = torch.tensor(cfg.mean), torch.tensor(cfg.std)
    else:
        mean = x_train.mean(dim=(0, 2, 3))
        std = x_train.std(dim=(0, 2, 3)).clamp_min(1e-6)
    (p_train, p_known, p_unknown), _ = to_storage(
        [x_train, _resize(raw.x_test[test_known], size), _resize(raw.x_test[test_unknown], size)], cfg.storage)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64)).to(device)

    return OpenSetData(
        pixels_train=p_train.to(device), y_train=labels(lut[raw.y_train[train]]),
        pixels_known=p_known.to(device), y_known=labels(lut[raw.y_test[test_known]]),
        pixels_unknown=p_unknown.to(device), y_unknown=labels(raw.y_test[test_unknown]),
        known=list(known), mean=tuple(mean.tolist()), std=tuple(std.tolist()),
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
    """Per-sample random crop and horizontal flip of a batch (N, C, H, W), on its device.

    The crop pads with zeros of x's space; x being normalised (:func:`load_openset`), that is the
    normalisation mean colour: ``data.mean``, or the known-class training images' mean. (Vaze et
    al.'s torchvision ``RandomCrop(padding=4)`` pads before normalising, i.e. black.)"""
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
