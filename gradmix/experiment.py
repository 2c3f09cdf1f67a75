"""What DVC's experiment views read: the summary under ``metrics:`` and the data of ``plots:``.

The ``evaluate`` stage writes, beside ``results/metrics.json`` (every metric, mean/std/n per method):

* ``results/summary.json`` (:func:`summary`): dataset → method → accuracy, AUROC and OSCR means,
  tens of numbers, the one file ``dvc metrics show`` and ``dvc exp show`` display;
* ``results/plots/training.csv`` (:func:`training_curves`): per cross-entropy method and epoch, the
  mean over its runs (splits × seeds) of each column of the runs' ``log.csv`` (loss, lr, test
  accuracy, test AUROC, ...);
* ``results/plots/roc.csv`` (:func:`roc_points`): per method, its ROC curve (known = positive)
  averaged over its runs at FPR = 0, 0.01, ..., 1.

``dvc.yaml``'s top-level ``plots:`` draws both CSV files with ``.dvc/plots/methods.json``, a
Vega-Lite line template that colours by ``method`` and dashes by revision, so ``dvc plots show``
overlays every method and ``dvc plots diff`` compares experiments.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .evaluate import find_runs, precomputed_scores, read_run, run_scores
from .metrics import roc

FPR_GRID = np.linspace(0.0, 1.0, 101)
SUMMARY_METRICS = ("accuracy", "auroc", "oscr")


def tpr_at(fpr_grid: np.ndarray, fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """TPR of one ROC curve (``fpr``, ``tpr``: its points in ascending order, as
    :func:`gradmix.metrics.roc` returns them) at each FPR of ``fpr_grid``, read off the curve as drawn:
    linear between consecutive points, and where the curve is vertical (several points at one FPR)
    the highest TPR there, the best TPR reachable with at most that FPR."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    grid = np.asarray(fpr_grid, dtype=np.float64)
    i = np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, len(fpr) - 1)   # last point with FPR <= f
    j = np.minimum(i + 1, len(fpr) - 1)                                         # the next one (FPR > f)
    span = fpr[j] - fpr[i]
    t = np.divide(grid - fpr[i], span, out=np.zeros_like(grid), where=span > 0)
    return np.where(fpr[i] == grid, tpr[i], tpr[i] + t * (tpr[j] - tpr[i]))


def run_score(z, score: str) -> str:
    """The score a run is drawn and summarised with: ``score`` for runs with logits, else its stored one
    (the contrastive track's ``knn``)."""
    stored = precomputed_scores(z)
    return score if "logits_known" in z or not stored else (score if score in stored else stored[0])


def roc_points(root: str | Path, methods, score: str = "mls", fpr_grid: np.ndarray = FPR_GRID) -> pd.DataFrame:
    """Columns method, score, fpr, tpr: for each method, the mean over its runs under ``root`` of
    :func:`tpr_at` on ``fpr_grid`` (vertical averaging, Fawcett 2006, "An introduction to ROC analysis",
    §8.1). Runs with logits use ``score``; contrastive runs their stored kNN score."""
    rows = []
    for method in methods:
        curves, names = [], set()
        for d in find_runs(root, [method]):
            _, z = read_run(d)
            name = run_score(z, score)
            s_k, _, s_u = run_scores(z, name)
            if len(s_u) == 0:                        # closed set (data.known=all): no ROC
                continue
            curves.append(tpr_at(fpr_grid, *roc(s_k, s_u)))
            names.add(name)
        if curves:
            rows.append(pd.DataFrame({"method": method, "score": "/".join(sorted(names)), "fpr": fpr_grid,
                                      "tpr": np.mean(curves, axis=0)}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["method", "score", "fpr", "tpr"])


def training_curves(root: str | Path, methods) -> pd.DataFrame:
    """Columns method, epoch, runs, then the mean over the method's runs of each other column of their
    ``log.csv`` (``seconds`` left out), for the methods whose logs record a test metric per epoch (the
    cross-entropy track; contrastive runs log their losses only and are left out)."""
    frames = []
    for method in methods:
        logs = [pd.read_csv(d / "log.csv") for d in find_runs(root, [method]) if (d / "log.csv").is_file()]
        logs = [g for g in logs if "test_accuracy" in g.columns]
        if not logs:
            continue
        both = pd.concat(logs, ignore_index=True).drop(columns=["seconds"], errors="ignore")
        mean = both.groupby("epoch", sort=True).mean(numeric_only=True).reset_index()
        mean.insert(0, "method", method)
        mean.insert(2, "runs", both.groupby("epoch", sort=True).size().to_numpy())
        frames.append(mean)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "epoch", "runs"])


def summary(metrics: dict, score: str = "mls", digits: int = 4) -> dict:
    """dataset → method → {accuracy, auroc, oscr} means from :func:`gradmix.evaluate.aggregate`'s
    output, rounded; AUROC and OSCR of ``score`` where a method has it, else of its own stored score
    (the contrastive track's kNN). A metric a method lacks (e.g. AUROC of a closed-set run) is left out."""
    out: dict = {}
    for dataset, methods in metrics.items():
        for method, m in methods.items():
            names = [k[len("auroc_"):] for k in m if k.startswith("auroc_")]
            own = score if score in names else (names[0] if names else score)
            keys = {"accuracy": "accuracy", "auroc": f"auroc_{own}", "oscr": f"oscr_{own}"}
            out.setdefault(dataset, {})[method] = {k: round(m[v]["mean"], digits) for k, v in keys.items()
                                                   if v in m and np.isfinite(m[v]["mean"])}
    return out


def write(root: str | Path, out_dir: str | Path, methods, metrics: dict, score: str = "mls") -> dict[str, Path]:
    """Write ``out_dir/summary.json``, ``out_dir/plots/training.csv`` and ``out_dir/plots/roc.csv`` for the
    runs of ``methods`` under ``root`` (``metrics``: :func:`gradmix.evaluate.evaluate`'s result)."""
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    paths = {"summary": out_dir / "summary.json", "training": out_dir / "plots" / "training.csv",
             "roc": out_dir / "plots" / "roc.csv"}
    paths["summary"].write_text(json.dumps(summary(metrics, score), indent=2) + "\n")
    training_curves(root, methods).to_csv(paths["training"], index=False, float_format="%.5g")
    roc_points(root, methods, score).to_csv(paths["roc"], index=False, float_format="%.4g")
    return paths
