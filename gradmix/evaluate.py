"""Run directories -> open-set metrics, per run and aggregated over splits and seeds.

A run's ``scores.npz`` holds classifier logits (``logits_known``, ``logits_unknown``; scored by
``evaluate.scores``) and/or precomputed known-ness scores ``score_<name>_known``,
``score_<name>_unknown`` with predictions ``pred_<name>_known`` (e.g. the contrastive track's kNN),
plus optional scalar metrics ``metric_<name>`` (e.g. ``metric_probe_accuracy``).

Only finished runs are read (:mod:`gradmix.rundir`: a valid ``complete.json``, written last); a
``<run>.tmp`` folder is never read. Given the plan (``expected``: the run names every method must
have, :func:`gradmix.rundir.planned_runs`), a missing or unfinished run fails the evaluation by name,
so the ``n`` of every aggregated metric is the planned count.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, from_dict
from .metrics import openset_metrics, score_metrics
from .rundir import (CorruptFileError, IncompleteRunError, atomic_write, find_finished, planned_runs,  # noqa: F401
                     read_config)


def read_run(run_dir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config dict with its ``run`` block, arrays of scores.npz) of a finished run.

    Raises IncompleteRunError (a FileNotFoundError: no valid completion marker, a missing file) or
    CorruptFileError (a ValueError: a file differs from its record, or is not what it should be),
    naming the file and the problem.
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)                     # verifies the marker and config.json
    return cfg, read_scores(run_dir)


def read_scores(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a finished run's ``scores.npz``, verified against ``complete.json`` and checked:
    labels of the known and unknown test sets, and logits or ``score_<name>_*`` of matching lengths."""
    from .rundir import verify_run

    path = Path(run_dir) / "scores.npz"
    verify_run(run_dir, files=("scores.npz",))
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CorruptFileError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    except (AttributeError, TypeError):            # np.load of a plain .npy: an array, not an archive
        raise CorruptFileError(f"{path}: an array, not an .npz archive of named arrays") from None
    problem = _scores_problem(arrays)
    if problem:
        raise CorruptFileError(f"{path}: {problem}")
    return arrays


def _scores_problem(z: dict) -> str | None:
    missing = [k for k in ("labels_known", "labels_unknown") if k not in z]
    if missing:
        return f"arrays {missing} are missing (it has {sorted(z)})"
    n_k, n_u = len(z["labels_known"]), len(z["labels_unknown"])
    if "logits_known" not in z and not precomputed_scores(z):
        return f"neither logits_known nor score_<name>_known (it has {sorted(z)})"
    for key, n in (("logits_known", n_k), ("logits_unknown", n_u)):
        if ("logits_known" in z) and (key not in z or z[key].ndim != 2 or len(z[key]) != n):
            return f"{key} must be (N, K) with N = {n} (the labels' length)"
    for name in precomputed_scores(z):
        for key, n in ((f"score_{name}_known", n_k), (f"pred_{name}_known", n_k), (f"score_{name}_unknown", n_u)):
            if key not in z or len(z[key]) != n:
                return f"{key} must hold {n} values"
    return None


def run_config(run_dir: str | Path) -> tuple[Config, dict]:
    """The validated Config a run was trained with, and its ``run`` block (method, split, seed, ...)."""
    cfg = read_config(run_dir)
    info = cfg.pop("run")
    return from_dict(cfg), info


def find_runs(root: str | Path, methods=None, expected=None, *, strict: bool = True) -> list[Path]:
    """Finished run directories ``root/<method>/<run>``, in method then plan order.

    ``expected``: the run names every method must have (:func:`gradmix.rundir.planned_runs`); default:
    every run name found for any of ``methods``. A planned run that is missing or unfinished (a
    ``<run>.tmp`` leftover, no valid ``complete.json``) raises IncompleteRunError naming each, or
    (``strict=False``) warns and is left out.
    """
    return find_finished(root, methods, expected, strict=strict)


ID_COLUMNS = ("dataset", "method", "split", "seed", "track")


def precomputed_scores(z) -> list[str]:
    """Names of the precomputed scores of a run's arrays (keys ``score_<name>_known``)."""
    return [k[len("score_"):-len("_known")] for k in z if k.startswith("score_") and k.endswith("_known")]


def run_scores(z, score: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(known-test scores, known-test predictions, unknown-test scores) of ``score`` for a run's arrays:
    precomputed if the run stores it, else computed from its logits (gradmix.scores)."""
    from .scores import SCORES

    if f"score_{score}_known" in z:
        return z[f"score_{score}_known"], z[f"pred_{score}_known"], z[f"score_{score}_unknown"]
    if "logits_known" not in z or score not in SCORES:
        raise KeyError(f"run has no score {score!r}; it has {precomputed_scores(z) or list(SCORES)}")
    s_k, pred = SCORES[score](z["logits_known"])
    return s_k, pred, SCORES[score](z["logits_unknown"])[0]


def evaluate_run(run_dir: str | Path, scores=("msp", "mls")) -> dict:
    """One row: dataset, method, split, seed, track and the metrics of :func:`gradmix.metrics.openset_metrics`
    (for logits), the same four per precomputed score (e.g. ``auroc_knn``), and the stored scalar metrics.

    A closed-set run (no unknown test images) has NaN open-set metrics: absent, not a number
    (:func:`aggregate` leaves them out, tables show "–")."""
    cfg, z = read_run(run_dir)
    info = cfg["run"]
    row = {k: info[k] for k in ("dataset", "method", "split", "seed")}
    row["track"] = info.get("track", "ce")
    if "logits_known" in z:
        row.update(openset_metrics(z["logits_known"], z["labels_known"], z["logits_unknown"], scores))
    for name in precomputed_scores(z):
        s_k, pred, s_u = run_scores(z, name)
        m = score_metrics(name, s_k, pred, z["labels_known"], s_u)     # NaN open-set metrics if closed set
        row.setdefault("accuracy", m.pop("accuracy"))
        row.update(m)
    row.update({k[len("metric_"):]: float(z[k]) for k in z if k.startswith("metric_")})
    row.update(mixing_fractions(run_dir))
    return row


MIXING_COLUMNS = ("masked_fraction", "fallback_fraction")


def mixing_fractions(run_dir: str | Path) -> dict:
    """{masked_fraction, fallback_fraction}: the mean over a finished run's epochs of its ``log.csv``
    columns (each epoch's mean over the images the mixer saw of the fraction of pixels it replaced,
    a batch it left unmixed counting 0; and of GradMix's degenerate-map fallbacks), for the columns
    the run logged (box mixers: CutMix, GradMix, R-Mix, Saliency Grafting; not Mixup or ERM).

    The mean over epochs is what the model was trained on, so rows of a table with the same value
    occluded the same amount. Raises CorruptFileError if log.csv is damaged."""
    from .rundir import verify_run

    path = Path(run_dir) / "log.csv"
    verify_run(run_dir, files=("log.csv",))
    try:
        log = pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise CorruptFileError(f"{path}: not a readable CSV log ({type(e).__name__}: {e})") from None
    return {c: float(log[c].mean()) for c in MIXING_COLUMNS if c in log and log[c].notna().any()}


def evaluate_runs(root: str | Path, methods=None, scores=("msp", "mls"), expected=None) -> pd.DataFrame:
    """A table with one row per run under ``root``; every planned run must be finished (:func:`find_runs`)."""
    dirs = find_runs(root, methods, expected)
    if not dirs:
        raise FileNotFoundError(f"no finished run directories under {Path(root).resolve()}")
    return pd.DataFrame([evaluate_run(d, scores) for d in dirs])


def aggregate(df: pd.DataFrame) -> dict:
    """dataset -> method -> metric -> {mean, std, n}; std is the sample std (ddof=1) over splits × seeds, 0 if n=1.

    A metric a method's runs do not have (e.g. ``auroc_knn`` of a cross-entropy run) is left out; one
    that only some of its runs have raises ValueError naming them (n would silently drop).
    """
    out: dict = {}
    metrics = [c for c in df.columns if c not in ID_COLUMNS]
    for (dataset, method), g in df.groupby(["dataset", "method"], sort=False):
        cols = {m: g[m].dropna() for m in metrics}
        for m, v in cols.items():
            if 0 < len(v) < len(g):
                lacking = g.loc[g[m].isna(), [c for c in ("split", "seed") if c in g]].to_dict("records")
                raise ValueError(f"{dataset}/{method}: metric {m!r} is undefined (NaN) in {len(g) - len(v)} of "
                                 f"{len(g)} runs {lacking}; aggregating the rest would report n={len(v)}")
        out.setdefault(dataset, {})[method] = {
            m: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "n": int(len(v))} for m, v in cols.items() if len(v)}
    return out


def evaluate(root: str | Path, out_dir: str | Path, methods=None, scores=("msp", "mls"), expected=None,
             compare=None) -> dict:
    """Evaluate every planned run under ``root`` (``expected``, as in :func:`find_runs`); write
    ``out_dir/metrics.json`` and ``out_dir/runs.csv`` and, given ``compare`` (a
    :class:`~gradmix.config.Config`: its ``evaluate`` section and pipeline), ``out_dir/differences.json``
    (:func:`differences`). Nothing is written if a planned run is missing or unfinished, and each file
    is replaced atomically (a killed evaluation leaves the old one)."""
    df = evaluate_runs(root, methods, scores, expected)
    out_dir = Path(out_dir)
    summary = aggregate(df)
    diffs = differences(df, compare) if compare is not None else None
    atomic_write(out_dir / "runs.csv", df.to_csv(index=False))
    atomic_write(out_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
    if diffs is not None:
        atomic_write(out_dir / "differences.json", json.dumps(diffs, indent=2) + "\n")
    return summary


def differences(df: pd.DataFrame, cfg: Config) -> dict:
    """dataset -> list of paired differences (gradmix.statistics.paired_differences) of the runs ``df``:
    the pairs of :func:`gradmix.statistics.comparisons` for ``cfg``'s pipeline and ``evaluate``
    section, on AUROC and OSCR of ``evaluate.primary_score`` (the contrastive track: of its kNN score)."""
    from .statistics import comparisons, paired_differences

    e = cfg.evaluate
    ran = set(df["method"])
    pairs = [(a, b) for a, b in comparisons(cfg.pipeline_methods, e.baseline, e.pairs, cfg.contrastive)
             if a in ran and b in ran]
    metrics = (f"auroc_{e.primary_score}", f"oscr_{e.primary_score}", "auroc_knn", "oscr_knn")
    return paired_differences(df, pairs, metrics, confidence=e.confidence, resamples=e.bootstrap_resamples,
                              seed=e.bootstrap_seed)
