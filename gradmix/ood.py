"""Out-of-distribution (OOD) detection: OOD test sets and their metrics.

**Protocol.** In-distribution (ID) = the known-class test images of a run (all of them, not the
balanced OSR subset); with ``data.known: all`` on CIFAR-10 that is the OpenOOD v1.5 CIFAR-10
benchmark's ID set. Each OOD set is resized to the run's resolution, converted to its channels
(RGB -> grey by ITU-R 601 luma, grey -> RGB by repetition) and normalised with the run's
statistics. The paper's sets follow OpenOOD v1.5's CIFAR-10 split:

* near-OOD: ``cifar100`` (CIFAR-100 test, 10,000) and ``tinyimagenet`` (TinyImageNet val, 10,000;
  OpenOOD additionally removes images overlapping CIFAR-10 classes, we keep all);
* far-OOD: ``mnist`` (test, 10,000), ``svhn`` (test, 26,032), ``dtd`` (Textures, all 5,640 images,
  shorter side resized and centre-cropped) and ``places365`` (a fixed subset: ``ood.places365_subset``
  images of Places365-Standard ``val_256``, drawn without replacement by ``ood.seed`` from the sorted
  file names).

The embedded default needs no download: ``rotated`` (the ID test images rotated by 90°, near),
``photo_patches`` (random crops of scikit-learn's two bundled photos, far) and ``uniform_noise``
(far).

**Metrics** (per set, then the plain mean over the near sets and over the far sets), for each score
of ``ood.scores`` (higher = more in-distribution; MSP or MLS of :mod:`gradmix.scores`), with ID as
the positive class:

* AUROC = P(s_id > s_ood) + ½·P(s_id = s_ood);
* FPR@95%TPR = the fraction of OOD images accepted at the threshold that accepts 95 % of ID images,
  θ* = max{θ : |{s_id ≥ θ}| / |ID| ≥ 0.95}, FPR = |{s_ood ≥ θ*}| / |OOD| (Hendrycks & Gimpel; ODIN).
  OpenOOD and pytorch-ood report the mirror image (OOD positive).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .metrics import auroc, check_scores, fpr_at_tpr
from .scores import SCORES

PAPER_NEAR = ("cifar100", "tinyimagenet")
PAPER_FAR = ("mnist", "svhn", "dtd", "places365")


def _pixels(x) -> torch.Tensor:
    t = torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else x   # a copy: x may be a read-only memmap
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


def fit(x, size: int, channels: int) -> torch.Tensor:
    """Images (N, C, H, W) uint8/float -> float (N, channels, size, size) in [0, 1] (CPU)."""
    from .data import _resize

    t = _pixels(x)
    if t.shape[1] == 3 and channels == 1:
        t = (0.299 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3])
    elif t.shape[1] == 1 and channels == 3:
        t = t.expand(-1, 3, -1, -1)
    return _resize(t.contiguous().numpy(), size)


def _subsample(x, n: int, rng: np.random.Generator):
    if n and len(x) > n:
        return x[np.sort(rng.choice(len(x), n, replace=False))]
    return x


# ---------------------------------------------------------------------------------------------
# the sets: each returns images (N, C, H, W), uint8 or float in [0, 1], at any size


def _rotated(ctx):
    return torch.rot90(ctx["id_pixels"], 1, dims=(2, 3))


def _photo_patches(ctx):
    """Square crops (side U[16, 160] px, random position) of sklearn's china.jpg and flower.jpg."""
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in load_sample_images().images]
    rng = np.random.default_rng([ctx["ood"].seed, 1])
    size = ctx["size"]
    out = []
    for _ in range(ctx["ood"].num_generated):
        p = photos[rng.integers(len(photos))]
        side = int(rng.integers(16, 161))
        y, x = int(rng.integers(p.shape[1] - side + 1)), int(rng.integers(p.shape[2] - side + 1))
        out.append(fit(p[None, :, y:y + side, x:x + side], size, 3)[0])
    return torch.stack(out)


def _uniform_noise(ctx):
    g = torch.Generator().manual_seed(int(ctx["ood"].seed) * 7 + 2)
    return torch.rand(ctx["ood"].num_generated, ctx["channels"], ctx["size"], ctx["size"], generator=g)


def _cifar100(ctx):
    from .datasets import cifar100

    return cifar100(ctx["data"]).x_test


def _tinyimagenet(ctx):
    from .datasets import tinyimagenet

    return tinyimagenet(ctx["data"]).x_test


def _mnist(ctx):
    from .datasets import mnist

    return mnist(ctx["data"]).x_test


def _svhn(ctx):
    from .datasets import download, read_svhn

    return read_svhn(download("svhn/test", ctx["data"]))[0]


def _decoded(folder: Path, paths, size: int, key: str):
    """Decode image files once into ``prepared/<key>/images_<size>.npy`` (RGB, resize + centre crop)."""
    from .datasets import cached
    from .images import decode

    return cached(folder / f"{key}_{size}", lambda: {"x": np.stack([decode(str(p), "RGB", size) for p in paths])})["x"]


def _dtd(ctx):
    from .datasets import extracted, prepared_dir

    root = extracted("dtd", ctx["data"])
    paths = sorted(p for p in root.rglob("*.jpg") if p.parent.parent.name == "images")
    if not paths:
        raise FileNotFoundError(f"no DTD images under {root}/**/images/<class>/*.jpg")
    return _decoded(prepared_dir(ctx["data"]) / "dtd", paths, ctx["size"], "images")


def _places365(ctx):
    """A fixed subset of Places365-Standard val_256: ``places365_subset`` names drawn by ``seed``."""
    from .datasets import download, prepared_dir
    from .download import archive_members, safe_extract

    o = ctx["ood"]
    key = f"subset{o.places365_subset}-seed{o.seed}"
    folder = prepared_dir(ctx["data"]) / "places365"
    dest = folder / key
    if not dest.is_dir():
        tar = download("places365/val_256", ctx["data"])
        names = sorted(n for n in archive_members(tar) if n.lower().endswith(".jpg"))
        if len(names) < o.places365_subset:
            raise ValueError(f"ood.places365_subset={o.places365_subset} but val_256 has {len(names)} images")
        rng = np.random.default_rng(o.seed)
        pick = sorted(names[i] for i in rng.choice(len(names), o.places365_subset, replace=False))
        safe_extract(tar, dest, members=pick)
    paths = sorted(dest.rglob("*.jpg"))
    return _decoded(folder, paths, ctx["size"], f"{key}-images")


OOD_SETS = {
    "rotated": _rotated, "photo_patches": _photo_patches, "uniform_noise": _uniform_noise,
    "cifar100": _cifar100, "tinyimagenet": _tinyimagenet, "mnist": _mnist, "svhn": _svhn,
    "dtd": _dtd, "places365": _places365,
}


def ood_set(name: str, data_cfg, ood_cfg, id_pixels: torch.Tensor) -> torch.Tensor:
    """OOD set ``name`` as float (N, C, S, S) in [0, 1] matching ``id_pixels`` (the ID test images, (M, C, S, S))."""
    size, channels = id_pixels.shape[-1], id_pixels.shape[1]
    ctx = {"data": data_cfg, "ood": ood_cfg, "size": size, "channels": channels, "id_pixels": id_pixels.cpu()}
    x = OOD_SETS[name](ctx)
    rng = np.random.default_rng([ood_cfg.seed, sorted(OOD_SETS).index(name)])
    x = _subsample(x, ood_cfg.max_images, rng)
    return fit(np.asarray(x) if not isinstance(x, torch.Tensor) else x, size, channels)


def ood_metrics(logits_id: np.ndarray, logits_ood: dict[str, np.ndarray], near, far,
                scores=("msp", "mls")) -> dict[str, float]:
    """``{set}/auroc_{score}``, ``{set}/fpr95_{score}`` per OOD set, and ``near/…``, ``far/…`` as their means.

    logits_id: (N, K); logits_ood: set -> (M, K). See the module docstring for the definitions.
    Raises ValueError naming the set when its logits are empty or hold NaN/inf.
    """
    for name, z in {"in-distribution": logits_id, **logits_ood}.items():
        check_scores(f"ood_metrics ({name} logits)", "in-distribution" if name == "in-distribution" else "OOD",
                     np.asarray(z, dtype=np.float64))
    out: dict[str, float] = {}
    for score in scores:
        s_id, _ = SCORES[score](logits_id)
        for name, z in logits_ood.items():
            s_ood, _ = SCORES[score](z)
            out[f"{name}/auroc_{score}"] = auroc(s_id, s_ood)
            out[f"{name}/fpr95_{score}"] = fpr_at_tpr(s_id, s_ood, 0.95)
        for group, sets in (("near", near), ("far", far)):
            if sets:
                for m in ("auroc", "fpr95"):
                    out[f"{group}/{m}_{score}"] = float(np.mean([out[f"{s}/{m}_{score}"] for s in sets]))
    return out
