"""The standard open-set benchmarks, fetched from their official sources, and your own ImageFolder data.

Every loader returns a :class:`RawDataset` (images (N, C, H, W) as uint8 or float in [0, 1], integer
labels, class names); :func:`gradmix.data.load_openset` turns it into one known/unknown split.

Sources (:data:`RESOURCES`): the URLs, file names and md5 sums are taken from torchvision's own
dataset classes (CIFAR10/100, MNIST, SVHN, DTD, Places365), so they are the ones torchvision trusts;
TinyImageNet comes from its official cs231n archive and CIFAR-10-C from its Zenodo record. Files
are fetched, verified and extracted by :mod:`gradmix.download` into ``data.root``:
``downloads/`` (the verified archives, what ``data.dvc`` tracks) and ``prepared/`` (extracted
folders and array caches, derived, ignored by DVC).

Benchmarks (Neal et al. 2018; splits of Vaze et al. 2022, :mod:`gradmix.splits`):

=================  ======================================  ==================================
name               known classes (train + test)            unknown test classes
=================  ======================================  ==================================
mnist, svhn        6 of 10 digits                          the other 4 digits
cifar10            6 of 10 CIFAR-10 classes                the other 4
cifar_plus_10/50   4 CIFAR-10 classes (non-animal)         10 / 50 CIFAR-100 classes (test set)
tinyimagenet       20 of 200 classes (val set as test)     the other 180
imagefolder        data.known: a list, or a seeded draw    the rest
=================  ======================================  ==================================

Class ids follow torchvision (CIFAR, MNIST, SVHN with label 10 -> 0) and, for TinyImageNet and
ImageFolder, the sorted folder names, as torchvision's ImageFolder numbers them (Vaze et al.).
CIFAR+N test labels of CIFAR-100 images are ``10 + fine label``.
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urljoin

import numpy as np
import torchvision.datasets as tvd

from .download import Resource, fetch, safe_extract
from .images import GREY, HIGH_BIT, check_mode, decode


@dataclass(frozen=True)
class RawDataset:
    """Images (N, C, H, W), uint8 in 0..255 or float in [0, 1], with integer labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset.

    ``protocol``: key of ``gradmix.splits.OSR_SPLITS`` listing the known classes per split (None: no
    standard splits; choose them with ``data.known``). ``unknown_protocol``: for CIFAR+N, the key
    listing the unknown classes, whose labels are offset by ``unknown_offset``; None = all other
    classes are unknown. ``channels``/``num_classes``: 0 = read from the data. ``resources``: keys of
    :data:`RESOURCES` it downloads (empty: embedded or local). ``labels``: cfg -> (train labels, test
    labels, class names) without decoding images, for the split check before training (None: ``load``).
    """

    protocol: str | None
    channels: int
    num_classes: int
    load: Callable
    description: str
    unknown_protocol: str | None = None
    unknown_offset: int = 0
    resources: tuple[str, ...] = field(default_factory=tuple)
    native_size: int = 0
    labels: Callable | None = None     # cfg -> (y_train, y_test, class names) without pixels (None: use load)


def _tv_resources() -> dict[str, Resource]:
    c10, c100, mn, sv = tvd.CIFAR10, tvd.CIFAR100, tvd.MNIST, tvd.SVHN
    out = {
        "cifar10": Resource(c10.filename, (c10.url,), md5=c10.tgz_md5),
        "cifar100": Resource(c100.filename, (c100.url,), md5=c100.tgz_md5),
        "svhn/train": Resource(sv.split_list["train"][1], (sv.split_list["train"][0],), md5=sv.split_list["train"][2]),
        "svhn/test": Resource(sv.split_list["test"][1], (sv.split_list["test"][0],), md5=sv.split_list["test"][2]),
        "dtd": Resource(Path(tvd.DTD._URL).name, (tvd.DTD._URL,), md5=tvd.DTD._MD5),
        "places365/val_256": Resource("val_256.tar", (urljoin(tvd.Places365._BASE_URL, "val_256.tar"),),
                                      md5=tvd.Places365._IMAGES_META[("val", True)][1]),
    }
    for name, md5 in mn.resources:
        out[f"mnist/{name}"] = Resource(name, tuple(m + name for m in mn.mirrors), md5=md5)
    return out


RESOURCES: dict[str, Resource] = {
    **_tv_resources(),
    # Official TinyImageNet archive (Stanford CS231n); md5 and size as published and used across OSR code.
    "tinyimagenet": Resource("tiny-imagenet-200.zip", ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
                             md5="90528d7ca1a48142e341f4ef8d21d0de", size=248_100_043),
    # CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), Zenodo record 2535967; md5 and size as listed there.
    "cifar10c": Resource("CIFAR-10-C.tar", ("https://zenodo.org/records/2535967/files/CIFAR-10-C.tar",),
                         md5="56bf5dcef84df0e2308c6dcbcbbd8499", size=2_918_471_680),
}
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def prepared_dir(cfg) -> Path:
    return Path(cfg.root) / "prepared"


def download(key: str, cfg, progress: bool = True) -> Path:
    """Fetch and verify :data:`RESOURCES` ``[key]`` into ``<data.root>/downloads`` (once)."""
    return fetch(RESOURCES[key], cfg.root, cfg.mirror, progress=progress)


def extracted(key: str, cfg, members=None) -> Path:
    """The archive of ``key``, downloaded, verified and safely extracted into ``prepared/<key>``."""
    dest = prepared_dir(cfg) / key
    if not dest.is_dir():                   # safe_extract renames into place only when complete
        safe_extract(download(key, cfg), dest, members)
    return dest


def cached(folder: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays saved as ``folder/<name>.npy`` (memory-mapped on load); ``build()`` makes them once."""
    if not folder.is_dir():
        arrays = build()
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for k, v in arrays.items():
            np.save(tmp / f"{k}.npy", v)
        os.replace(tmp, folder)
    return {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}


# ---------------------------------------------------------------------------------------------
# readers of the official formats


def read_cifar(folder: Path, files, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR python batches (pickled dicts, ``data`` (N, 3072) uint8) -> (N, 3, 32, 32), labels."""
    xs, ys = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _cifar_names(folder: Path, meta: str, key: str) -> tuple[str, ...]:
    with open(folder / meta, "rb") as f:
        return tuple(pickle.load(f, encoding="latin1")[key])


def cifar10(cfg) -> tuple[RawDataset, Path]:
    folder = extracted("cifar10", cfg) / tvd.CIFAR10.base_folder
    xtr, ytr = read_cifar(folder, [n for n, _ in tvd.CIFAR10.train_list], "labels")
    xte, yte = read_cifar(folder, [n for n, _ in tvd.CIFAR10.test_list], "labels")
    return RawDataset(xtr, ytr, xte, yte, _cifar_names(folder, "batches.meta", "label_names")), folder


def cifar100(cfg) -> RawDataset:
    folder = extracted("cifar100", cfg) / tvd.CIFAR100.base_folder
    xtr, ytr = read_cifar(folder, ["train"], "fine_labels")
    xte, yte = read_cifar(folder, ["test"], "fine_labels")
    return RawDataset(xtr, ytr, xte, yte, _cifar_names(folder, "meta", "fine_label_names"))


def _load_cifar10(cfg) -> RawDataset:
    return cifar10(cfg)[0]


def _load_cifar_plus(cfg) -> RawDataset:
    """CIFAR-10 train (known classes are CIFAR-10's); test = CIFAR-10 test + CIFAR-100 test (labels 10 + c)."""
    c10, c100 = cifar10(cfg)[0], cifar100(cfg)
    return RawDataset(c10.x_train, c10.y_train, np.concatenate([c10.x_test, c100.x_test]),
                      np.concatenate([c10.y_test, 10 + c100.y_test]), c10.class_names + c100.class_names)


def mnist(cfg) -> RawDataset:
    """MNIST from its four idx.gz files (torchvision's mirrors and md5 sums), 28x28 grey."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    folder = prepared_dir(cfg) / "mnist"
    for name in MNIST_FILES:
        raw = folder / name[:-3]
        if not raw.is_file():
            gz = download(f"mnist/{name}", cfg)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = raw.with_name(raw.name + ".tmp")
            with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, raw)
    x = {s: read_image_file(str(folder / f"{p}-images-idx3-ubyte")).numpy()[:, None] for s, p in
         (("train", "train"), ("test", "t10k"))}
    y = {s: read_label_file(str(folder / f"{p}-labels-idx1-ubyte")).numpy().astype(np.int64) for s, p in
         (("train", "train"), ("test", "t10k"))}
    return RawDataset(x["train"], y["train"], x["test"], y["test"], tuple(str(i) for i in range(10)))


def read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN ``*_32x32.mat``: X (32, 32, 3, N) -> (N, 3, 32, 32) uint8; label 10 means digit 0 (as torchvision)."""
    import scipy.io as sio

    mat = sio.loadmat(str(path))
    x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)
    y = mat["y"].astype(np.int64).reshape(-1)
    y[y == 10] = 0
    return x, y


def svhn(cfg) -> RawDataset:
    xtr, ytr = read_svhn(download("svhn/train", cfg))
    xte, yte = read_svhn(download("svhn/test", cfg))
    return RawDataset(xtr, ytr, xte, yte, tuple(str(i) for i in range(10)))


def tinyimagenet(cfg) -> RawDataset:
    """TinyImageNet-200 (64x64 RGB): train 500/class, val 50/class (val_annotations.txt) used as test.

    Class id = index of the wnid in sorted order (torchvision ImageFolder order, as Vaze et al.).
    Decoded once into uint8 arrays under ``prepared/tinyimagenet/arrays``.
    """
    def build():
        root = extracted("tinyimagenet", cfg) / "tiny-imagenet-200"
        wnids = sorted((root / "wnids.txt").read_text().split())
        idx = {w: i for i, w in enumerate(wnids)}
        train = sorted((str(p), idx[w]) for w in wnids for p in (root / "train" / w / "images").glob("*.JPEG"))
        val = []
        for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                val.append((str(root / "val" / "images" / parts[0]), idx[parts[1]]))
        val.sort()
        out = {}
        for split, items in (("train", train), ("test", val)):
            out[f"x_{split}"] = np.stack([decode(p, "RGB") for p, _ in items])
            out[f"y_{split}"] = np.asarray([c for _, c in items], dtype=np.int64)
        out["wnids"] = np.asarray(wnids)
        return out

    a = cached(prepared_dir(cfg) / "tinyimagenet" / "arrays", build)
    return RawDataset(a["x_train"], np.asarray(a["y_train"]), a["x_test"], np.asarray(a["y_test"]),
                      tuple(str(w) for w in a["wnids"]))


# ---------------------------------------------------------------------------------------------
# your own data


def hidden(name: str) -> bool:
    """Names starting with '.' (``.ipynb_checkpoints``, ``.thumbs``, ``.DS_Store``, macOS ``._x.png``)
    are never classes and never images."""
    return name.startswith(".")


def folder_classes(folder: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``folder`` (torchvision ImageFolder's numbering)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not hidden(e.name))


def folder_images(folder: Path, classes) -> list[tuple[str, int]]:
    """(path, class index) of every image file under ``folder/<class>/`` (any depth), sorted as
    torchvision's ``make_dataset``; hidden files and anything inside hidden folders are skipped."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

    def valid(path: str) -> bool:
        rel = Path(path).relative_to(folder).parts[1:]           # below the class folder
        return has_file_allowed_extension(path, IMG_EXTENSIONS) and not any(hidden(p) for p in rel)

    present = [c for c in classes if (folder / c).is_dir()]
    idx = {c: classes.index(c) for c in present}
    return make_dataset(str(folder), idx, is_valid_file=valid, allow_empty=True)


def image_folder_index(cfg) -> dict:
    """The files of ``data.folder`` without decoding them: ``classes`` (sorted train/ folder names),
    ``train`` / ``test`` lists of (path, class index), ``y_train`` / ``y_test`` (int64), ``sizes``
    (shorter side of each training image) and ``modes`` (Pillow modes of the training images, plus
    the high-bit-depth modes of the test images). Every check of :func:`image_folder` that needs no
    pixels runs here: missing folders, extra test classes, empty classes, unsupported modes."""
    from PIL import Image

    root = Path(cfg.folder)
    missing = [d for d in ("train", "test") if not (root / d).is_dir()]
    if not cfg.folder or missing:
        raise FileNotFoundError(f"data.folder={cfg.folder!r}: expected an ImageFolder tree with "
                                f"train/<class>/* and test/<class>/*; missing: {missing or ['data.folder']}")
    classes = folder_classes(root / "train")
    if not classes:
        raise FileNotFoundError(f"no class folders under {root / 'train'} (expected train/<class>/*)")
    extra = sorted(set(folder_classes(root / "test")) - set(classes))
    if extra:
        raise ValueError(f"{root / 'test'} has classes absent from train/: {extra[:10]}")
    train = folder_images(root / "train", classes)
    test = folder_images(root / "test", classes)
    y_train = np.asarray([c for _, c in train], dtype=np.int64)
    empty = [c for k, c in enumerate(classes) if not (y_train == k).any()]
    if empty:
        raise FileNotFoundError(f"{root / 'train'}: class folder(s) {empty[:10]} hold no image files "
                                f"(hidden entries are ignored); every class needs training images")
    if not test:
        raise FileNotFoundError(f"no images under {root / 'test'}")
    sizes, modes = [], set()
    for items, is_train in ((train, True), (test, False)):
        for p, _ in items:
            with Image.open(p) as im:
                check_mode(im.mode, p)
                if is_train:
                    sizes.append(min(im.size))
                    modes.add(im.mode)
                elif im.mode in HIGH_BIT:
                    modes.add(im.mode)
    return {"classes": classes, "train": train, "test": test, "y_train": y_train,
            "y_test": np.asarray([c for _, c in test], dtype=np.int64), "sizes": sizes, "modes": modes}


def image_folder(cfg) -> RawDataset:
    """``data.folder`` in ImageFolder layout: ``train/<class>/*`` and ``test/<class>/*``.

    Classes are the sorted folder names of ``train/`` (torchvision's numbering); ``test/`` may lack
    some classes but may not add new ones. Entries whose name starts with '.' (``.ipynb_checkpoints``,
    ``.thumbs``, ``.DS_Store``) are ignored, as classes and as files. Every class needs at least one
    training image. Images are grey (1 channel) if every training image has a grey Pillow mode, else
    RGB; every Pillow mode is scaled to [0, 1] by its bit depth (:mod:`gradmix.images`; 16-bit by
    65535), and a file of a mode the loader cannot scale fails naming it before any decoding.
    Resolution: ``data.image_size``, or 0 = the median shorter side of the training images; each image
    is resized (shorter side) and centre-cropped to it. Arrays are uint8, or float32 in [0, 1] when any
    file has a high bit depth. The checks that need no pixels are :func:`image_folder_index`'s.
    """
    idx = image_folder_index(cfg)
    modes = idx["modes"]
    mode = "L" if modes <= GREY else "RGB"
    as_float = bool(modes & set(HIGH_BIT))
    size = cfg.image_size or int(np.median(idx["sizes"]))

    def arrays(items):
        return (np.stack([decode(p, mode, size, as_float) for p, _ in items]),
                np.asarray([c for _, c in items], dtype=np.int64))

    return RawDataset(*arrays(idx["train"]), *arrays(idx["test"]), tuple(idx["classes"]))


def image_folder_labels(cfg) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(train labels, test labels, class names) of ``data.folder`` without decoding any image."""
    idx = image_folder_index(cfg)
    return idx["y_train"], idx["y_test"], tuple(idx["classes"])


DATASETS_EXTRA: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 1, 10, mnist, "MNIST, 28x28 grey, 10 digits; 6 known / 4 unknown",
                         resources=tuple(f"mnist/{n}" for n in MNIST_FILES), native_size=28),
    "svhn": DatasetInfo("svhn", 3, 10, svhn, "SVHN (cropped digits), 32x32 RGB; 6 known / 4 unknown",
                        resources=("svhn/train", "svhn/test"), native_size=32),
    "cifar10": DatasetInfo("cifar-10-10", 3, 10, _load_cifar10, "CIFAR-10, 32x32; 6 known / 4 unknown",
                           resources=("cifar10",), native_size=32),
    "cifar_plus_10": DatasetInfo("cifar-10-100", 3, 110, _load_cifar_plus,
                                 "CIFAR+10: 4 CIFAR-10 classes known, 10 CIFAR-100 classes unknown",
                                 "cifar-10-100-10", 10, ("cifar10", "cifar100"), 32),
    "cifar_plus_50": DatasetInfo("cifar-10-100", 3, 110, _load_cifar_plus,
                                 "CIFAR+50: 4 CIFAR-10 classes known, 50 CIFAR-100 classes unknown",
                                 "cifar-10-100-50", 10, ("cifar10", "cifar100"), 32),
    "tinyimagenet": DatasetInfo("tinyimagenet", 3, 200, tinyimagenet,
                                "TinyImageNet-200, 64x64; 20 known / 180 unknown (val set as test)",
                                resources=("tinyimagenet",), native_size=64),
    "imagefolder": DatasetInfo(None, 0, 0, image_folder,
                               "your ImageFolder tree at data.folder (train/<class>/*, test/<class>/*)",
                               labels=image_folder_labels),
}


def resources_of(dataset: str) -> tuple[str, ...]:
    info = DATASETS_EXTRA.get(dataset)
    return info.resources if info else ()


# OOD sets and CIFAR-10-C: the resources each one downloads (gradmix.ood, gradmix.corruption).
OOD_RESOURCES = {"cifar100": ("cifar100",), "tinyimagenet": ("tinyimagenet",),
                 "mnist": tuple(f"mnist/{n}" for n in MNIST_FILES), "svhn": ("svhn/test",),
                 "dtd": ("dtd",), "places365": ("places365/val_256",)}
