"""Fetch, verify and prepare every file a configuration needs: ``python -m gradmix.prepare``.

:func:`needed_resources` lists the archives of a validated :class:`~gradmix.config.Config` (its
dataset, its OOD sets, CIFAR-10-C); :func:`prepare` downloads and verifies them
(:func:`gradmix.download.fetch`) and extracts and caches what the loaders of :mod:`gradmix.datasets`,
:mod:`gradmix.ood` and :mod:`gradmix.corruption` read, so that training and evaluation start
without a download. :func:`main` is the command line of ``make data``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import config
from .corruption import cifar10c
from .datasets import DATASETS_EXTRA, OOD_RESOURCES, RESOURCES, download, resources_of
from .download import urls_for
from .ood import ood_set


def needed_resources(cfg) -> list[str]:
    """Keys of :data:`RESOURCES` that a validated Config needs: its dataset, OOD sets and CIFAR-10-C."""
    keys = list(resources_of(cfg.data.dataset))
    for s in cfg.ood.near + cfg.ood.far:
        keys += OOD_RESOURCES.get(s, ())
    if cfg.corruption.source == "cifar10c" and cfg.corruption.corruptions:
        keys.append("cifar10c")
    return list(dict.fromkeys(keys))


def prepare(cfg, progress: bool = True) -> list[Path]:
    """Download, verify and prepare everything ``cfg`` needs (idempotent); return the verified archives."""
    paths = [download(k, cfg.data, progress) for k in needed_resources(cfg)]
    if cfg.data.dataset in DATASETS_EXTRA and cfg.data.dataset != "imagefolder":
        DATASETS_EXTRA[cfg.data.dataset].load(cfg.data)          # extract and cache
    size = cfg.data.image_size or DATASETS_EXTRA.get(cfg.data.dataset, DATASETS_EXTRA["cifar10"]).native_size or 32
    for s in cfg.ood.near + cfg.ood.far:
        if s in OOD_RESOURCES:
            ood_set(s, cfg.data, cfg.ood, torch.zeros(1, 3, size, size))
    if cfg.corruption.source == "cifar10c" and cfg.corruption.corruptions:
        cifar10c(cfg.data, cfg.corruption.corruptions[0], 1)
    return paths


DATA_README = """\
# data/ (managed by gradmix.prepare; tracked by ../data.dvc)

downloads/   the official archives, verified against their published checksums (DVC-tracked)
prepared/    extracted folders and array caches, derived from downloads/ (ignored by DVC)
quarantine/  files that failed verification, never used (ignored by DVC)

Fetch what a profile needs:  make data PROFILE=paper   (or: python -m gradmix.prepare --profile paper)
"""


def main(argv=None) -> int:
    """``python -m gradmix.prepare``: fetch, verify and prepare the data of one or more profiles."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m gradmix.prepare", description=main.__doc__)
    ap.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    ap.add_argument("--profile", default="",
                    help="a profile name, 'paper' (every paper_* profile) or 'all'; default: params.yaml's own")
    ap.add_argument("--list", action="store_true", help="only list the files, URLs and checksums")
    args = ap.parse_args(argv)
    names = config.profile_names(args.params)
    if args.profile in ("paper", "all"):
        chosen = [n for n in names if args.profile == "all" or n.startswith("paper_")]
    else:
        chosen = [args.profile or None]
    cfgs = [config.load(args.params, profile=n) for n in chosen]   # validate every profile first
    root = Path(cfgs[0].data.root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(DATA_README)
    for name, cfg in zip(chosen, cfgs):
        keys = needed_resources(cfg)
        print(f"profile {name or cfg.profile.name}: {cfg.data.dataset}; {len(keys)} file(s)")
        for k in keys:
            r = RESOURCES[k]
            print(f"  {r.filename:32s} {r.expected()[0]} {r.expected()[1]}  {urls_for(r, cfg.data.mirror)[0]}")
        if not args.list:
            prepare(cfg)
    if not args.list:
        print(f"ready under {root.resolve()}; record it with `dvc add {root}` (make data does), share it with `dvc push`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
