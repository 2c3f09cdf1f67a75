"""Evaluations beyond open-set recognition, on trained runs: OOD detection and corruption robustness.

Runs that share a dataset configuration and split share their test sets: every OOD set and every
corrupted copy is built once (seeded) and all methods are scored on identical images. Results are
one row per run (:func:`evaluate_ood`, :func:`evaluate_corruption`), aggregated over splits and seeds
by :func:`gradmix.evaluate.aggregate` into ``dataset -> method -> metric -> {mean, std, n}``:

* ``results/ood.json``: ``{set}/auroc_{score}``, ``{set}/fpr95_{score}``, ``near/…``, ``far/…``
  (definitions in :mod:`gradmix.ood`);
* ``results/corruption.json``: ``clean`` (accuracy on the same clean test images),
  ``{corruption}/s{k}`` (accuracy at severity k), ``{corruption}/mean`` (over severities),
  ``s{k}/mean`` (over corruptions) and ``mean`` (over every corruption and severity).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checks import ConfigError
from .config import CorruptionConfig, OODConfig
from .corruption import cifar10c, corrupt
from .data import load_openset
from .evaluate import aggregate, find_runs, planned_runs, run_config
from .ood import fit, ood_metrics, ood_set
from .report import results_table
from .train import load_model, predict, resolve_device

CIFAR10_FAMILY = ("cifar10", "cifar_plus_10", "cifar_plus_50")
EVAL_BATCH = 4096   # images per forward pass when scoring (memory only; results do not depend on it)


def _groups(run_dirs) -> list[tuple[object, int, list]]:
    """[(run config, split, [(run dir, run info), ...])] grouped by (data config, split)."""
    groups: dict[str, tuple] = {}
    for d in run_dirs:
        cfg, info = run_config(d)
        key = json.dumps([dataclasses.asdict(cfg.data), info["split"]], sort_keys=True)
        groups.setdefault(key, (cfg, info["split"], []))[2].append((Path(d), info))
    return list(groups.values())


def _test_set(cfg, split):
    """All known-class test images of the split (no balancing), on the CPU."""
    return load_openset(dataclasses.replace(cfg.data, balance_test=False), split, "cpu")


def _row(cfg, info) -> dict:
    return {"dataset": cfg.data.dataset, "method": info["method"], "split": info["split"], "seed": info["seed"]}


def evaluate_ood(run_dirs, ood: OODConfig, device: str = "auto") -> pd.DataFrame:
    """One row per run: the metrics of :func:`gradmix.ood.ood_metrics` on ``ood.near`` and ``ood.far``."""
    device = resolve_device(device)
    sets = list(ood.near) + list(ood.far)
    rows = []
    for cfg, split, runs in _groups(run_dirs):
        data = _test_set(cfg, split)
        pixels = data.denormalize(data.x_known).clamp(0, 1)
        models = {d: load_model(d, device) for d, _ in runs}
        logits_id = {d: predict(m, data.x_known.to(device), EVAL_BATCH).cpu().numpy() for d, m in models.items()}
        logits_ood = {d: {} for d in models}
        for name in sets:
            x = data.normalize(ood_set(name, cfg.data, ood, pixels)).to(device)
            for d, m in models.items():
                logits_ood[d][name] = predict(m, x, EVAL_BATCH).cpu().numpy()
        for d, info in runs:
            rows.append({**_row(cfg, info), **ood_metrics(logits_id[d], logits_ood[d], ood.near, ood.far,
                                                          ood.scores)})
    return pd.DataFrame(rows)


def _corrupted_sets(cfg, split, data, cc: CorruptionConfig):
    """Yield ([keys], pixels (N, C, S, S), labels (N,), sizes) batches: first ``clean``, then one batch per
    corruption holding all its severities (keys ``(corruption, severity)``, ``sizes`` images each)."""
    rng = np.random.default_rng(cc.seed)
    pixels = data.denormalize(data.x_known).clamp(0, 1)
    labels = data.y_known
    if cc.source == "on_the_fly":
        if cc.max_images and len(pixels) > cc.max_images:
            keep = torch.from_numpy(np.sort(rng.choice(len(pixels), cc.max_images, replace=False)))
            pixels, labels = pixels[keep], labels[keep]
        yield ["clean"], pixels, labels
        for c in cc.corruptions:
            yield ([(c, s) for s in cc.severities], torch.cat([corrupt(pixels, c, s, cc.seed) for s in cc.severities]),
                   labels.repeat(len(cc.severities)))
        return
    if cfg.data.dataset not in CIFAR10_FAMILY:
        raise ConfigError(f"corruption.source=cifar10c needs a CIFAR-10-trained run (data.dataset in "
                          f"{list(CIFAR10_FAMILY)}), not {cfg.data.dataset!r}; use source on_the_fly")
    lut = np.full(10, -1, dtype=np.int64)
    lut[data.known] = np.arange(len(data.known))
    if not cc.corruptions:
        yield ["clean"], pixels, labels
        return
    _, y0 = cifar10c(cfg.data, cc.corruptions[0], cc.severities[0])
    known_idx = np.flatnonzero(lut[y0] >= 0)    # CIFAR-10-C rows are the CIFAR-10 test set, in order
    if len(known_idx) != len(pixels):
        raise ValueError(f"CIFAR-10-C labels select {len(known_idx)} known-class images but the CIFAR-10 "
                         f"test set has {len(pixels)}: the archive does not match the test set")
    keep = known_idx
    if cc.max_images and len(keep) > cc.max_images:
        keep = np.sort(rng.choice(keep, cc.max_images, replace=False))
    pos = torch.from_numpy(np.searchsorted(known_idx, keep))
    yield ["clean"], pixels[pos], labels[pos]
    size, channels = pixels.shape[-1], pixels.shape[1]
    for c in cc.corruptions:
        xs, ys = zip(*(cifar10c(cfg.data, c, s) for s in cc.severities))
        yield ([(c, s) for s in cc.severities], torch.cat([fit(x[keep], size, channels) for x in xs]),
               torch.from_numpy(np.concatenate([lut[y[keep]] for y in ys])))


def evaluate_corruption(run_dirs, cc: CorruptionConfig, device: str = "auto") -> pd.DataFrame:
    """One row per run: accuracy on clean and on each corrupted copy of its known-class test images."""
    device = resolve_device(device)
    rows = []
    for cfg, split, runs in _groups(run_dirs):
        data = _test_set(cfg, split)
        models = {d: load_model(d, device) for d, _ in runs}
        acc = {d: {} for d in models}
        for keys, pixels, labels in _corrupted_sets(cfg, split, data, cc):
            x = data.normalize(pixels).to(device)
            for d, m in models.items():
                hit = (predict(m, x, EVAL_BATCH).argmax(1).cpu() == labels.cpu()).float().view(len(keys), -1)
                acc[d].update({k: float(h.mean()) for k, h in zip(keys, hit)})
        for d, info in runs:
            a = acc[d]
            row = {**_row(cfg, info), "clean": a["clean"]}
            for c in cc.corruptions:
                for s in cc.severities:
                    row[f"{c}/s{s}"] = a[(c, s)]
                row[f"{c}/mean"] = float(np.mean([a[(c, s)] for s in cc.severities]))
            for s in cc.severities:
                row[f"s{s}/mean"] = float(np.mean([a[(c, s)] for c in cc.corruptions]))
            if cc.corruptions:
                row["mean"] = float(np.mean([a[k] for k in a if k != "clean"]))
            rows.append(row)
    return pd.DataFrame(rows)


def write(df: pd.DataFrame, path: str | Path) -> dict:
    """Aggregate rows over splits and seeds and write them as JSON ({} when there is nothing to evaluate)."""
    summary = aggregate(df) if len(df) else {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(path)
    return summary


def run_all(runs_dir, cfg, out_dir, methods=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate every planned run (``cfg``'s splits x seeds of ``methods``) under ``runs_dir``; write
    ``ood.json`` and ``corruption.json`` to ``out_dir``. A missing or unfinished run fails by name."""
    dirs = find_runs(runs_dir, methods, planned_runs(cfg))
    device = cfg.train.device
    ood = evaluate_ood(dirs, cfg.ood, device) if (cfg.ood.near or cfg.ood.far) else pd.DataFrame()
    cor = evaluate_corruption(dirs, cfg.corruption, device) if cfg.corruption.corruptions else pd.DataFrame()
    write(ood, Path(out_dir) / "ood.json")
    write(cor, Path(out_dir) / "corruption.json")
    return ood, cor


# ---------------------------------------------------------------------------------------------
# tables (the figures are gradmix.figures.ood_figure and corruption_figure)


def ood_columns(ood: OODConfig, score: str, metric: str = "auroc") -> list[str]:
    return ([f"{s}/{metric}_{score}" for s in ood.near] + ([f"near/{metric}_{score}"] if ood.near else [])
            + [f"{s}/{metric}_{score}" for s in ood.far] + ([f"far/{metric}_{score}"] if ood.far else []))


def tables(ood_summary: dict, cor_summary: dict, cfg, methods, fmt: str = "md") -> dict[str, str]:
    """``{name: table}``: ``ood_<dataset>`` (AUROC and FPR@95 per set, primary score) and
    ``corruption_<dataset>`` (clean, per-corruption mean, overall mean), mean ± std in %."""
    out = {}
    score = cfg.evaluate.primary_score if cfg.evaluate.primary_score in cfg.ood.scores else cfg.ood.scores[0]
    for dataset in ood_summary:
        cols = ood_columns(cfg.ood, score, "auroc") + ood_columns(cfg.ood, score, "fpr95")
        out[f"ood_{dataset}"] = results_table(ood_summary, dataset, methods, cols, fmt,
                                              lower_is_better=tuple(c for c in cols if "/fpr95" in c))
    for dataset in cor_summary:
        cols = ["clean"] + [f"{c}/mean" for c in cfg.corruption.corruptions] + ["mean"]
        out[f"corruption_{dataset}"] = results_table(cor_summary, dataset, methods, cols, fmt, lower_is_better=())
    return out
