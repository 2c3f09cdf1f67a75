"""Do fresh numbers reproduce committed ones? Compare two ``metrics.json`` files within a tolerance.

What reproduces how (docs/reproducibility.md): on the CPU, a run is bit-identical when the CPU
type, torch's thread count (``train.threads``, pinned by every stage) and the library versions
(recorded in each run's ``config.json``) match; change any of them and float sums are split
differently, training follows another trajectory, and only means over splits × seeds agree within a
tolerance. Two tolerances are stated here, each from a measurement of that spread:

* for the means of the default pipeline (``make check-results``: a fresh clone's ``dvc repro``
  against the committed ``results/metrics.json``): :data:`SE_FACTOR` standard errors of the
  reference mean, at least :data:`TOLERANCE`;
* :data:`TINY_TOLERANCE` for the tiny profile of :data:`TINY` that the test suite trains in seconds
  and compares with ``tests/reference/tiny_metrics.json`` (one run per method: no standard error).
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

# How far a fresh mean may lie from the reference's: max(TOLERANCE, SE_FACTOR × the reference's
# standard error std/sqrt(n)) in metric units (0.01 = one point). Measured (docs/reproducibility.md):
# the default pipeline trained with 1 and with 2 threads on one 2-core AMD EPYC (everything else
# equal). No run was bit-identical across the two (per-run AUROC differences: median 0.57, largest
# 5.8 points); the method means moved by 0.34 points on average and by up to 2.4 points
# (gradmix_replace, whose splits spread by ±6.4), at most 1.55 standard errors of the mean
# (MEASURED_SE_RATIO: simclr_gradmix's kNN FPR@95). SE_FACTOR is about twice that; the floor covers
# rows with almost no spread (the masked area moved by at most 0.004).
MEASURED_SPREAD = 0.0242            # largest |difference| of an accuracy / AUROC / OSCR mean (gradmix_replace OSCR)
MEASURED_SE_RATIO = 1.55            # largest |difference| / (std / sqrt(n)) of a compared metric with spread
SE_FACTOR = 3.0
TOLERANCE = 0.005
# The tiny profile (TINY) trained with 1, 2, 3 and 4 threads on one 2-core AMD EPYC: the largest
# difference of any metric between any two thread counts was 0.00002 (one tied pair of cutmix's
# AUROC); its 21 steps barely let trajectories part. The tolerance, half a point, leaves room for
# other CPU types' kernels, which could not be measured here, and still catches a change of the
# training code that moves a metric by more than half a point.
TINY_MEASURED_SPREAD = 2.1e-5
TINY_TOLERANCE = 0.005

# A profile small enough for a test: one split, a few hundred images, three epochs, three methods
# (plain training, a box mixer, GradMix with its attribution pass).
TINY = {"data": {"splits": [0], "max_train": 240, "image_size": 12},
        "train": {"epochs": 3, "batch_size": 32, "progress": False, "checkpoint_dir": ""}}
TINY_METHODS = ("erm", "cutmix", "gradmix")
COMPARED = ("accuracy", "auroc_msp", "auroc_mls", "oscr_msp", "oscr_mls", "fpr95_msp", "fpr95_mls",
            "auroc_knn", "oscr_knn", "fpr95_knn", "probe_accuracy", "masked_fraction")


def allowed(ref: dict, tolerance: float = TOLERANCE, se_factor: float = SE_FACTOR) -> float:
    """How far a fresh mean may lie from the reference entry ``ref`` ({mean, std, n}):
    max(tolerance, se_factor · std / sqrt(n))."""
    n, std = ref.get("n") or 1, ref.get("std") or 0.0
    se = std / math.sqrt(n) if math.isfinite(std) else 0.0
    return max(tolerance, se_factor * se)


def compare(fresh: dict, reference: dict, tolerance: float = TOLERANCE, metrics=COMPARED,
            se_factor: float = SE_FACTOR) -> list[str]:
    """Problems of ``fresh`` against ``reference`` (both dataset -> method -> metric -> {mean, std, n},
    as gradmix.evaluate writes ``metrics.json``): a dataset, method or metric of the reference that
    ``fresh`` lacks, a different ``n``, or a mean further from the reference's than :func:`allowed`
    (``tolerance``, or ``se_factor`` standard errors of the reference mean if more; NaN equals NaN:
    a closed-set run's absent open-set metric). Only ``metrics`` are compared. An empty list means the
    fresh numbers reproduce the reference."""
    problems = []
    for dataset, methods in reference.items():
        if dataset not in fresh:
            problems.append(f"{dataset}: missing (fresh has {sorted(fresh)})")
            continue
        for method, values in methods.items():
            if method not in fresh[dataset]:
                problems.append(f"{dataset}/{method}: missing (fresh has {list(fresh[dataset])})")
                continue
            for metric, ref in values.items():
                if metric not in metrics:
                    continue
                new = fresh[dataset][method].get(metric)
                where = f"{dataset}/{method}/{metric}"
                if new is None:
                    problems.append(f"{where}: missing")
                elif new.get("n") != ref.get("n"):
                    problems.append(f"{where}: n {new.get('n')} != reference n {ref.get('n')}")
                elif not _close(new["mean"], ref["mean"], allowed(ref, tolerance, se_factor)):
                    problems.append(f"{where}: mean {new['mean']:.5f} vs reference {ref['mean']:.5f} "
                                    f"(|diff| {abs(new['mean'] - ref['mean']):.5f} > "
                                    f"{allowed(ref, tolerance, se_factor):.5f})")
    return problems


def largest_difference(a: dict, b: dict, metrics=COMPARED) -> tuple[float, str]:
    """(largest |difference| of a metric mean between two metrics.json mappings, where): the spread
    the tolerances are measured with."""
    best = (0.0, "")
    for dataset, methods in b.items():
        for method, values in methods.items():
            for metric, ref in values.items():
                new = a.get(dataset, {}).get(method, {}).get(metric)
                if metric in metrics and new is not None and math.isfinite(new["mean"]) and math.isfinite(ref["mean"]):
                    d = abs(new["mean"] - ref["mean"])
                    if d > best[0]:
                        best = (d, f"{dataset}/{method}/{metric}")
    return best


def _close(a: float, b: float, tolerance: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tolerance


def tiny_metrics(params_file: str | Path = "params.yaml", threads: int | None = None,
                 out_dir: str | Path | None = None) -> dict:
    """Train :data:`TINY_METHODS` on the :data:`TINY` profile of ``params_file`` (``threads``: another
    ``train.threads``) in ``out_dir`` (default a temporary folder) and return their metrics.json mapping."""
    from . import config, evaluate, trainers

    cfg = config.load(params_file, overrides={f"{s}.{k}": v for s, d in TINY.items() for k, v in d.items()})
    if threads is not None:
        cfg = config.replace(cfg, train={"threads": threads})
        config.pin_threads(cfg)
    root = Path(out_dir or tempfile.mkdtemp(prefix="gradmix-tiny-"))
    trainers.train_methods(cfg, list(TINY_METHODS), root)
    return evaluate.aggregate(evaluate.evaluate_runs(root, list(TINY_METHODS), cfg.evaluate.scores))


def read_metrics(path: str | Path) -> dict:
    """A metrics.json mapping; OSError / ValueError name the file when it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a metrics.json ({e})") from None
