"""Result figures: per-method metrics, ROC curves, score distributions, OOD and corruption robustness.

Every function returns a matplotlib Figure; :func:`save` writes one. Conventions shared by all:

* Metrics are shown in % on labelled axes ("AUROC (MLS) [%]").
* A method's spread is shown, not hidden: a point at the mean over its runs (splits × seeds) with an
  error bar of ± the sample standard deviation (ddof = 1, as the tables of :mod:`gradmix.report`;
  0 for a single run), and every run as a small dot. No bar chart with a truncated axis.
* Methods keep one colour and one order in every figure: pass the same ``order`` (the pipeline's
  method list) or the same ``colors`` (:func:`palette`) to each.

Image galleries (attribution maps, mixed samples, dataset examples) are in :mod:`gradmix.gallery`.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .evaluate import find_runs, read_run, run_scores
from .metrics import auroc, roc
from .report import label

# One caption line under the metric figures (what a point, a bar and a dot are).
SPREAD_NOTE = "point: mean; bar: ± std over splits × seeds; dots: single runs ({n})"


def score_name(score: str) -> str:
    """Display name of a known-ness score: ``"MLS"``, ``"MSP"``, ``"kNN"``."""
    return {"knn": "kNN"}.get(score, score.upper())


def lower_is_better(metric: str) -> bool:
    """FPR at 95 % TPR (``fpr95_*``, ``<set>/fpr95_*``) is the one metric family where lower is better."""
    return metric.split("/")[-1].startswith("fpr95")


def axis_label(metric: str) -> str:
    """``"AUROC (MLS) [%]"``; FPR gets ``"(lower is better)"``."""
    return f"{label(metric)} [%]" + (" (lower is better)" if lower_is_better(metric) else "")


def palette(methods) -> dict[str, tuple]:
    """A fixed colour per method, by its position in ``methods``.

    Up to 10 methods get matplotlib's tab10; beyond that tab20's light shades follow (the first ten
    colours stay tab10's, so a prefix of a method list keeps its colours). Beyond 20 colours repeat.
    """
    tab20 = plt.get_cmap("tab20").colors
    colours = list(tab20[::2]) + list(tab20[1::2])
    return {m: colours[i % len(colours)] for i, m in enumerate(dict.fromkeys(methods))}


def _order(df: pd.DataFrame, order) -> list[str]:
    order = list(order) if order is not None else list(dict.fromkeys(df["method"]))
    missing = [m for m in order if m not in set(df["method"])]
    if missing:
        raise ValueError(f"no runs of method(s) {missing} in the results; found {sorted(set(df['method']))}")
    return order


def _spread(values: np.ndarray) -> tuple[float, float]:
    """(mean, sample std with ddof = 1; 0 for a single value) as in gradmix.evaluate.aggregate."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _runs_note(df: pd.DataFrame, order) -> str:
    counts = sorted({int((df["method"] == m).sum()) for m in order})
    n = f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]}–{counts[-1]}"
    return SPREAD_NOTE.format(n=f"{n} per method")


def dot_panel(ax, df: pd.DataFrame, column: str, order, colors, scale: float = 100.0):
    """Methods on the y axis (top to bottom in ``order``), ``column`` × ``scale`` on the x axis.

    Per method: its runs as small dots (spread vertically by run, deterministically), the mean with
    an error bar of ± std (ddof = 1). Each method's error bar is labelled with its name. The x range
    covers every dot and bar plus a margin, within [0, scale] ± 2 %; an all-NaN column (e.g. AUROC of
    a closed-set run) leaves a note instead.
    """
    shown = []
    for i, m in enumerate(order):
        v = scale * df.loc[df["method"] == m, column].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        offsets = np.linspace(-0.22, 0.22, len(v)) if len(v) > 1 else np.zeros(1)
        ax.scatter(v, i + offsets, s=9, color=colors[m], alpha=0.55, linewidths=0, zorder=2)
        mean, std = _spread(v)
        ax.errorbar(mean, i, xerr=std, fmt="o", color=colors[m], ms=5.5, mec="k", mew=0.6,
                    elinewidth=1.4, capsize=3, zorder=3, label=m)
        shown += [v.min(), v.max(), mean - std, mean + std]
    ax.set_yticks(range(len(order)), order)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.grid(axis="x", lw=0.5, alpha=0.4)
    ax.set_xlabel(axis_label(column))
    if not shown:
        ax.text(0.5, 0.5, "n/a\n(no unknown test set)", transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="0.4")
        ax.set_xticks([])
        return
    lo, hi = min(shown), max(shown)
    pad = max(0.08 * (hi - lo), 0.01 * scale)
    edge = 0.02 * scale                      # a marker at 0 or 100 % stays whole
    ax.set_xlim(max(-edge, lo - pad), min(scale + edge, hi + pad))


def _dot_grid(df, panels, order, colors, ncols, titles=None):
    """A grid of :func:`dot_panel` panels sharing the method axis; names on the first column only."""
    n = len(panels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    height = max(1.6, 0.26 * len(order) + 0.9)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols + 1.0, height * nrows), squeeze=False,
                             sharey=True)
    flat = list(axes.flat)
    for k, (ax, col) in enumerate(zip(flat, panels)):
        dot_panel(ax, df, col, order, colors)
        if titles:
            ax.set_title(titles[k], fontsize=9)
        ax.tick_params(axis="y", labelleft=k % ncols == 0, labelsize=8)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def metrics_figure(runs: pd.DataFrame, metrics=("accuracy", "auroc_mls", "oscr_mls"), order=None, colors=None):
    """One panel per metric, methods as rows: mean ± std over splits × seeds, every run a dot.

    ``runs``: one row per run (:func:`gradmix.evaluate.evaluate_runs`), metrics as fractions in
    [0, 1]; shown in %. ``order``: methods top to bottom (default: first appearance); ``colors``:
    {method: colour} (default :func:`palette` of ``order``). Raises ValueError for a method in
    ``order`` without runs and KeyError for a metric the frame does not have.
    """
    order = _order(runs, order)
    missing = [m for m in metrics if m not in runs.columns]
    if missing:
        raise KeyError(f"metric(s) {missing} not in the runs table; it has "
                       f"{[c for c in runs.columns if c not in ('dataset', 'method', 'split', 'seed', 'track')]}")
    colors = colors or palette(order)
    fig, _ = _dot_grid(runs, list(metrics), order, colors, ncols=len(metrics))
    fig.text(0.5, 0.0, _runs_note(runs, order), ha="center", va="top", fontsize=8, color="0.3")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# ROC


def _scores(run_dir: Path, score: str):
    _, z = read_run(run_dir)
    s_k, pred, s_u = run_scores(z, score)
    return s_k, s_u, pred == z["labels_known"]


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """TPR of the ROC polyline (``fpr``, ``tpr``: non-decreasing, as from :func:`gradmix.metrics.roc`)
    at each FPR of ``grid``: linear between successive points; at a vertical jump (repeated FPR)
    the top of the jump. Equal to ``np.interp`` where ``fpr`` is strictly increasing; written out
    because ``np.interp`` requires strictly increasing ``xp`` and ROC curves repeat FPR values."""
    fpr, tpr, grid = (np.asarray(a, dtype=np.float64) for a in (fpr, tpr, grid))
    j = np.searchsorted(fpr, grid, side="right") - 1              # last point with fpr <= grid
    j = np.clip(j, 0, len(fpr) - 1)
    nxt = np.minimum(j + 1, len(fpr) - 1)
    span = fpr[nxt] - fpr[j]
    t = np.where(span > 0, (grid - fpr[j]) / np.where(span > 0, span, 1.0), 0.0)
    return tpr[j] + np.clip(t, 0.0, 1.0) * (tpr[nxt] - tpr[j])


def mean_roc(curves, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertical averaging (Fawcett 2006, §7.1): mean and std (ddof = 0) over ``curves`` [(fpr, tpr), ...]
    of the TPR at each FPR of ``grid`` (:func:`tpr_at`)."""
    t = np.stack([tpr_at(f, r, grid) for f, r in curves])
    return t.mean(0), t.std(0)


def roc_figure(root, methods, score: str = "mls", colors=None, grid_points: int = 201, expected=None):
    """ROC curves of every method on one axes, known test images positive.

    Each method's curve is the vertical average over its runs (splits × seeds): the mean TPR at
    ``grid_points`` FPRs in [0, 1] (:func:`mean_roc`). The legend gives each method's AUROC as the
    mean ± std (ddof = 1) of its runs' AUROCs, the number the tables report (not the area under
    the averaged curve). Axes in %, equal aspect, the chance diagonal dashed.
    Raises FileNotFoundError when a method has no finished runs under ``root``.
    """
    methods = list(methods)
    colors = colors or palette(methods)
    grid = np.linspace(0.0, 1.0, grid_points)
    fig, ax = plt.subplots(figsize=(5.6 if len(methods) <= 8 else 7.8, 5.0))
    counts = set()
    for m in methods:
        dirs = find_runs(root, [m], expected)
        scores = [_scores(d, score)[:2] for d in dirs]
        mean_tpr, _ = mean_roc([roc(k, u) for k, u in scores], grid)
        mean, std = _spread(np.array([auroc(k, u) for k, u in scores]))
        counts.add(len(dirs))
        ax.plot(100 * grid, 100 * mean_tpr, color=colors[m], lw=1.6,
                label=f"{m}: {100 * mean:.1f} ± {100 * std:.1f}")
    ax.plot([0, 100], [0, 100], ls="--", color="0.5", lw=0.9, label="chance: 50.0")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_aspect("equal")
    ax.grid(lw=0.5, alpha=0.4)
    ax.set_xlabel("FPR: unknown test images accepted [%]")
    ax.set_ylabel("TPR: known test images accepted [%]")
    n = min(counts) if len(counts) == 1 else f"{min(counts)}–{max(counts)}"
    ax.set_title(f"ROC, score {score_name(score)}: TPR averaged over {n} runs at each FPR", fontsize=9)
    legend = dict(loc="lower right") if len(methods) <= 8 else dict(loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.legend(title=f"AUROC [%], mean ± std", fontsize=7.5, title_fontsize=8, **legend)
    fig.tight_layout()
    return fig


def score_distribution_figure(root, methods, score: str = "mls", colors=None, expected=None):
    """Histograms (density) of the known-ness score, known vs unknown test images, pooled over each
    method's runs (splits × seeds); one panel per method, four per row."""
    methods = list(methods)
    ncols = min(len(methods), 4)
    nrows = -(-len(methods) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.5 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(methods):]:
        ax.set_visible(False)
    for k, (ax, m) in enumerate(zip(flat, methods)):
        ks, us = zip(*[_scores(d, score)[:2] for d in find_runs(root, [m], expected)])
        known, unknown = np.concatenate(ks), np.concatenate(us)
        bins = np.histogram_bin_edges(np.concatenate([known, unknown]), bins=30)
        ax.hist(known, bins=bins, alpha=0.6, density=True, label="known", color="#1b9e77")
        ax.hist(unknown, bins=bins, alpha=0.6, density=True, label="unknown", color="#d95f02")
        ax.set_title(m, fontsize=9)
        ax.set_xlabel(f"{score_name(score)} score", fontsize=8)
        if k % ncols == 0:
            ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=7)
    flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# robustness (gradmix.robustness frames: one row per run)


def ood_figure(df: pd.DataFrame, ood, score: str = "mls", order=None, colors=None):
    """OOD detection, one panel per OOD set and per near/far mean: AUROC (top row) and FPR at 95 %
    TPR (bottom row), in-distribution positive; methods as rows, mean ± std over runs, runs as dots.
    ``ood``: the :class:`~gradmix.ood.OODConfig` of the runs."""
    from .robustness import ood_columns

    order = _order(df, order)
    colors = colors or palette(order)
    auroc_cols, fpr_cols = ood_columns(ood, score, "auroc"), ood_columns(ood, score, "fpr95")
    names = {"near": "near sets: mean", "far": "far sets: mean"}
    titles = [names.get(c.split("/")[0], c.split("/")[0]) for c in auroc_cols]
    fig, axes = _dot_grid(df, auroc_cols + fpr_cols, order, colors, ncols=len(auroc_cols),
                          titles=titles + titles)
    for ax, col in zip(axes, auroc_cols + fpr_cols):
        ax.set_xlabel(("AUROC" if col in auroc_cols else "FPR@95%TPR") + f" ({score_name(score)}) [%]", fontsize=8)
    fig.suptitle("OOD detection (in-distribution positive); FPR: lower is better", fontsize=9)
    fig.text(0.5, 0.0, _runs_note(df, order), ha="center", va="top", fontsize=8, color="0.3")
    fig.tight_layout()
    return fig


def corruption_figure(df: pd.DataFrame, cc, order=None, colors=None):
    """Left: accuracy [%] on clean images and at each severity (mean over corruptions), mean ± std
    over runs, methods dodged sideways. Right: method × corruption accuracy [%], mean over severities and runs.
    ``cc``: the :class:`~gradmix.corruption.CorruptionConfig` of the runs."""
    order = _order(df, order)
    colors = colors or palette(order)
    height = max(3.2, 0.26 * len(order) + 1.2)
    fig, axes = plt.subplots(1, 2, figsize=(12.5, height), gridspec_kw={"width_ratios": [1, 1.4]})
    sev = np.arange(1 + len(cc.severities), dtype=float)             # ordinal: clean, then each severity
    cols = ["clean"] + [f"s{s}/mean" for s in cc.severities]
    width = 0.4 / max(1, len(order) - 1)
    for k, m in enumerate(order):
        rows = df[df["method"] == m]
        stats = [_spread(100 * rows[c].to_numpy(dtype=float)) for c in cols]
        axes[0].errorbar(sev + (k - (len(order) - 1) / 2) * width, [s[0] for s in stats],
                         yerr=[s[1] for s in stats], marker="o", ms=3.5, lw=1.2, capsize=2,
                         color=colors[m], label=m)
    axes[0].set_xticks(sev, ["clean"] + [str(s) for s in cc.severities])
    axes[0].set_xlabel("corruption severity")
    axes[0].set_ylabel("accuracy, known classes [%]")
    axes[0].grid(axis="y", lw=0.5, alpha=0.4)
    axes[0].legend(fontsize=7, ncol=min(5, len(order)), loc="upper center", bbox_to_anchor=(0.5, -0.25),
                   frameon=False)
    axes[0].set_title("mean over corruptions; bars: ± std over runs", fontsize=9)
    heat = 100 * df.groupby("method")[[f"{c}/mean" for c in cc.corruptions]].mean().reindex(order)
    im = axes[1].imshow(heat.values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    axes[1].set_xticks(range(len(cc.corruptions)), cc.corruptions, rotation=35, ha="right", fontsize=8)
    axes[1].set_yticks(range(len(order)), order, fontsize=8)
    for i in range(heat.shape[0]):
        for j in range(heat.shape[1]):
            v = heat.values[i, j]
            axes[1].text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="k" if v > 60 else "w")
    fig.colorbar(im, ax=axes[1], fraction=0.04, label="accuracy [%]")
    axes[1].set_title("accuracy [%], mean over severities and runs", fontsize=9)
    fig.tight_layout()
    return fig


def save(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parent folders created), tight bounding box; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
