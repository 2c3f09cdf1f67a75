"""Run directories -> open-set metrics, per run and aggregated over splits and seeds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, from_dict
from .metrics import openset_metrics
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


def evaluate_run(run_dir: str | Path, scores=("msp", "mls")) -> dict:
    """One row: dataset, method, split, seed and the metrics of :func:`gradmix.metrics.openset_metrics`."""
    cfg, z = read_run(run_dir)
    info = cfg["run"]
    row = {k: info[k] for k in ("dataset", "method", "split", "seed")}
    row.update(openset_metrics(z["logits_known"], z["labels_known"], z["logits_unknown"], scores))
    return row


def evaluate_runs(root: str | Path, methods=None, scores=("msp", "mls")) -> pd.DataFrame:
    """A table with one row per run under ``root``."""
    dirs = find_runs(root, methods)
    if not dirs:
        raise FileNotFoundError(f"no finished run directories under {Path(root).resolve()}")
    return pd.DataFrame([evaluate_run(d, scores) for d in dirs])


def aggregate(df: pd.DataFrame) -> dict:
    """dataset -> method -> metric -> {mean, std, n}; std is the sample std (ddof=1) over splits × seeds, 0 if n=1."""
    out: dict = {}
    metrics = [c for c in df.columns if c not in ("dataset", "method", "split", "seed")]
    for (dataset, method), g in df.groupby(["dataset", "method"], sort=False):
        out.setdefault(dataset, {})[method] = {
            m: {"mean": float(g[m].mean()), "std": float(g[m].std(ddof=1)) if len(g) > 1 else 0.0,
                "n": int(len(g))} for m in metrics}
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
