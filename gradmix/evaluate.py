"""Run directories -> open-set metrics, per run and aggregated over splits and seeds.

A run's ``scores.npz`` holds classifier logits (``logits_known``, ``logits_unknown``; scored by
``evaluate.scores``) and/or precomputed known-ness scores ``score_<name>_known``,
``score_<name>_unknown`` with predictions ``pred_<name>_known`` (e.g. the contrastive track's kNN),
plus optional scalar metrics ``metric_<name>`` (e.g. ``metric_probe_accuracy``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, from_dict
from .metrics import openset_metrics, score_metrics
from .train import RUN_FILES


def read_run(run_dir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config dict with its ``run`` block, arrays of scores.npz); a missing or corrupt file fails clearly."""
    run_dir = Path(run_dir)
    missing = [f for f in ("config.json", "scores.npz") if not (run_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished run directory: missing {missing} "
                                f"(a run holds {', '.join(RUN_FILES)})")
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
        with np.load(run_dir / "scores.npz") as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"corrupt run directory {run_dir}: {type(e).__name__}: {e}") from None
    return cfg, arrays


def run_config(run_dir: str | Path) -> tuple[Config, dict]:
    """The validated Config a run was trained with, and its ``run`` block (method, split, seed, ...)."""
    cfg, _ = read_run(run_dir)
    info = cfg.pop("run")
    return from_dict(cfg), info


def find_runs(root: str | Path, methods=None) -> list[Path]:
    """Finished run directories under ``root`` (``root/<method>/<run>/scores.npz``), in method order."""
    root = Path(root)
    dirs = sorted(p.parent for p in root.glob("*/*/scores.npz"))
    if methods is not None:
        known = {d.parent.name for d in dirs}
        missing = [m for m in methods if m not in known]
        if missing:
            raise FileNotFoundError(f"no finished runs under {root} for method(s) {missing}; "
                                    f"found: {sorted(known)}")
        dirs = [d for m in methods for d in dirs if d.parent.name == m]
    return dirs


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
    return row


def evaluate_runs(root: str | Path, methods=None, scores=("msp", "mls")) -> pd.DataFrame:
    """A table with one row per run under ``root``."""
    dirs = find_runs(root, methods)
    if not dirs:
        raise FileNotFoundError(f"no finished run directories under {Path(root).resolve()}")
    return pd.DataFrame([evaluate_run(d, scores) for d in dirs])


def aggregate(df: pd.DataFrame) -> dict:
    """dataset -> method -> metric -> {mean, std, n}; std is the sample std (ddof=1) over splits × seeds, 0 if n=1.

    A metric a method's runs do not have (e.g. ``auroc_knn`` of a cross-entropy run) is left out.
    """
    out: dict = {}
    metrics = [c for c in df.columns if c not in ID_COLUMNS]
    for (dataset, method), g in df.groupby(["dataset", "method"], sort=False):
        cols = {m: g[m].dropna() for m in metrics}
        out.setdefault(dataset, {})[method] = {
            m: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "n": int(len(v))} for m, v in cols.items() if len(v)}
    return out


def evaluate(root: str | Path, out_dir: str | Path, methods=None, scores=("msp", "mls")) -> dict:
    """Evaluate every run under ``root``; write ``out_dir/metrics.json`` and ``out_dir/runs.csv``."""
    df = evaluate_runs(root, methods, scores)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = aggregate(df)
    df.to_csv(out_dir / "runs.csv", index=False)
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
