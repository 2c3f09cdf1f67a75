"""Figures and tables the notebooks render. Each function returns a figure or a string; callers save."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .evaluate import find_runs, read_run, run_scores
from .metrics import roc

LABELS = {"accuracy": "Accuracy", "auroc_msp": "AUROC (MSP)", "auroc_mls": "AUROC (MLS)",
          "oscr_msp": "OSCR (MSP)", "oscr_mls": "OSCR (MLS)", "fpr95_msp": "FPR@95%TPR (MSP)",
          "fpr95_mls": "FPR@95%TPR (MLS)", "auroc_knn": "AUROC (kNN)", "oscr_knn": "OSCR (kNN)",
          "fpr95_knn": "FPR@95%TPR (kNN)", "probe_accuracy": "Linear probe acc."}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def metrics_figure(runs: pd.DataFrame, metrics=("accuracy", "auroc_mls", "oscr_mls"), order=None):
    """One panel per metric: mean per method (bar) with every split/seed as a dot."""
    order = order or list(dict.fromkeys(runs["method"]))
    width = max(4.2, 0.45 * len(order))     # room for one label per method
    fig, axes = plt.subplots(1, len(metrics), figsize=(width * len(metrics), 3.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.barplot(data=runs, x="method", y=m, order=order, errorbar=None, ax=ax, color="#9ecae1")
        sns.stripplot(data=runs, x="method", y=m, order=order, ax=ax, color="k", size=3, jitter=0.15)
        lo = runs[m].min()
        if np.isfinite(lo):                 # all NaN for closed-set runs (data.known: all)
            ax.set_ylim(max(0.0, lo - 0.1 * (1 - lo) - 0.02), min(1.0, runs[m].max() + 0.02))
        ax.set_title(label(m))
        ax.set_xlabel("")
        ax.set_ylabel("")
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    fig.tight_layout()
    return fig


def _panels(n: int, w: float, h: float, ncols: int = 4, **kw):
    """A grid of ``n`` panels, ``ncols`` per row; unused panels hidden. Returns (fig, flat axes)."""
    ncols = min(n, ncols)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False, **kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _scores(run_dir: Path, score: str):
    _, z = read_run(run_dir)
    s_k, pred, s_u = run_scores(z, score)
    return s_k, s_u, pred == z["labels_known"]


def roc_figure(root, methods, score: str = "mls", expected=None):
    """ROC curves (known positive) of every run, one panel per method, one line per split/seed.
    ``expected``: the planned run names (gradmix.evaluate.find_runs); a missing one fails by name."""
    fig, axes = _panels(len(methods), 3.2, 3.3)
    for ax, method in zip(axes, methods):
        for d in find_runs(root, [method], expected):
            fpr, tpr = roc(*_scores(d, score)[:2])
            ax.plot(fpr, tpr, lw=1, alpha=0.8, label=d.name)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(method)
        ax.set_xlabel("FPR (unknown accepted)")
        ax.set_aspect("equal")
    axes[0].set_ylabel("TPR (known accepted)")
    axes[-1].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"ROC, score = {score.upper()}")
    fig.tight_layout()
    return fig


def score_distribution_figure(root, methods, score: str = "mls", expected=None):
    """Histograms of the known-ness score, known vs unknown test samples, pooled over splits/seeds
    (``expected`` as in :func:`roc_figure`)."""
    fig, axes = _panels(len(methods), 3.2, 2.8)
    for ax, method in zip(axes, methods):
        ks, us = zip(*[_scores(d, score)[:2] for d in find_runs(root, [method], expected)])
        k, u = np.concatenate(ks), np.concatenate(us)
        bins = np.histogram_bin_edges(np.concatenate([k, u]), bins=30)
        ax.hist(k, bins=bins, alpha=0.6, density=True, label="known")
        ax.hist(u, bins=bins, alpha=0.6, density=True, label="unknown")
        ax.set_title(method)
        ax.set_xlabel(score.upper())
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _display(data, x) -> np.ndarray:
    """Normalised images (N, C, H, W) of ``data`` -> [0, 1] arrays (N, H, W) grey or (N, H, W, 3)."""
    t = data.denormalize(x).clamp(0, 1).cpu()
    return t[:, 0].numpy() if t.shape[1] == 1 else t.permute(0, 2, 3, 1).numpy()


def split_figure(data, per_row: int = 12):
    """Example test images of one open-set split: a row of known-class images, a row of unknown ones."""

    rows = {"known": (_display(data, data.x_known[:per_row]), data.y_known[:per_row].tolist(), data.known),
            "unknown": (_display(data, data.x_unknown[:per_row]), data.y_unknown[:per_row].tolist(), None)}
    fig, axes = plt.subplots(2, per_row, figsize=(1.0 * per_row, 2.5), squeeze=False)
    for r, (name, (imgs, labels, lut)) in enumerate(rows.items()):
        for j, ax in enumerate(axes[r]):
            ax.axis("off")
            if j < len(imgs):
                ax.imshow(imgs[j], cmap="gray" if imgs.ndim == 3 else None, vmin=0, vmax=1)
                ax.set_title(str(lut[labels[j]] if lut else labels[j]), fontsize=7)
        axes[r][0].text(-0.3, 0.5, name, transform=axes[r][0].transAxes, ha="right", va="center")
    fig.suptitle(f"known classes {data.known}", fontsize=9)
    fig.tight_layout()
    return fig


def gallery_figure(images: np.ndarray, stage_maps: dict, combined: np.ndarray, boxes, mixed: np.ndarray,
                   titles=None):
    """Rows = images; columns = image, each stage's map, the summed map with the box, the mixed image.

    images, mixed: (N, H, W) or (N, H, W, 3) in [0, 1]; stage_maps: {stage: (N, h, w)};
    combined: (N, H, W); boxes: (y1, y2, x1, x2) arrays of length N.
    """
    n = len(images)
    cols = 3 + len(stage_maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    cmap = "gray" if images.ndim == 3 else None
    y1, y2, x1, x2 = (np.asarray(b) for b in boxes)
    for i in range(n):
        row = axes[i]
        row[0].imshow(images[i], cmap=cmap, vmin=0, vmax=1)
        for j, (stage, m) in enumerate(stage_maps.items()):
            row[1 + j].imshow(m[i], cmap="jet")
            if i == 0:
                row[1 + j].set_title(stage, fontsize=8)
        row[-2].imshow(images[i], cmap=cmap, vmin=0, vmax=1)
        row[-2].imshow(combined[i], cmap="jet", alpha=0.5)
        row[-2].add_patch(plt.Rectangle((x1[i] - 0.5, y1[i] - 0.5), x2[i] - x1[i], y2[i] - y1[i],
                                        fill=False, ec="w", lw=1.5))
        row[-1].imshow(np.clip(mixed[i], 0, 1), cmap=cmap, vmin=0, vmax=1)
        if titles is not None:
            row[0].set_ylabel(titles[i], fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("image", fontsize=8)
    axes[0][-2].set_title("sum + box", fontsize=8)
    axes[0][-1].set_title("GradMix", fontsize=8)
    fig.tight_layout()
    return fig


def _cell(stats: dict, scale: float, bold: bool, tex: bool) -> str:
    text = f"{scale * stats['mean']:.1f} ± {scale * stats['std']:.1f}"
    if tex:
        text = text.replace("±", r"$\pm$")
        return rf"\textbf{{{text}}}" if bold else text
    return f"**{text}**" if bold else text


def results_table(summary: dict, dataset: str, methods, metrics=("accuracy", "auroc_mls", "oscr_mls"),
                  fmt: str = "md", lower_is_better=("fpr95_msp", "fpr95_mls", "fpr95_knn")) -> str:
    """An OSR-paper table: rows = methods, columns = metrics, mean ± std in %, best mean in bold.

    A metric a method does not have (e.g. kNN AUROC of a cross-entropy run) shows as "–".
    """
    tex = fmt == "tex"
    rows = summary[dataset]
    best = {}
    for m in metrics:
        vals = [rows[k][m]["mean"] for k in methods if m in rows[k]]
        best[m] = (min if m in lower_is_better else max)(vals) if vals else None
    header = ["Method"] + [label(m) for m in metrics]
    body = [[k] + [_cell(rows[k][m], 100, rows[k][m]["mean"] == best[m], tex) if m in rows[k] else "–"
                   for m in metrics] for k in methods]
    n = max(rows[k][m]["n"] for k in methods for m in metrics if m in rows[k])
    if tex:
        lines = [r"\begin{tabular}{l" + "c" * len(metrics) + "}", r"\toprule",
                 " & ".join(header) + r" \\", r"\midrule"]
        lines += [" & ".join(r).replace("_", r"\_") + r" \\" for r in body]
        lines += [r"\bottomrule", r"\end{tabular}",
                  f"% {dataset}: mean ± std over {n} runs (splits × seeds), in %"]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    lines.append(f"\n{dataset}: mean ± std over {n} runs (splits × seeds), in %.")
    return "\n".join(lines) + "\n"


def save(fig, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def gallery_from_run(run_dir, n: int = 6, options=None, seed: int = 0, device="cpu"):
    """Gallery figure of a trained run: attribution maps, GradMix box and mixed image for ``n`` test images.

    ``options`` (a :class:`~gradmix.mixing.GradMixOptions`) defaults to the run's own when it is a
    GradMix run, else to GradMix's defaults with the model's last two stages.
    """
    import dataclasses

    import torch

    from .data import load_openset
    from .evaluate import run_config
    from .mixing import GradMixOptions
    from .mixing.gradmix import explain
    from .train import load_model

    cfg, info = run_config(run_dir)
    model = load_model(run_dir, device)
    contrastive = info.get("track") == "contrastive"  # maps of its contrastive loss (gradmix.contrastive)
    if options is None:
        own = (cfg.contrastive if contrastive else cfg).method(info["method"]).options
        options = own if isinstance(own, GradMixOptions) else GradMixOptions(stages=model.stages[-2:])
    data = load_openset(cfg.data, info["split"], device)
    idx = torch.linspace(0, len(data.x_known) - 1, n).long()
    x, y = data.x_known[idx], data.y_known[idx]
    gen = torch.Generator(device=device).manual_seed(seed)
    if contrastive:
        from .contrastive import explain as explain_contrastive, explain_method, load_net

        method = dataclasses.replace(explain_method(cfg.contrastive, info["method"], options.stages),
                                     options=dataclasses.replace(options, prob=1.0))
        out = explain_contrastive(load_net(run_dir, device), x, y, method=method, cfg=cfg.contrastive,
                                  num_classes=data.num_classes, generator=gen)
    else:
        out = explain(model, x, y, num_classes=data.num_classes, generator=gen,
                      options=dataclasses.replace(options, prob=1.0))


    fig = gallery_figure(_display(data, x), {s: m.cpu().numpy() for s, m in out["stage_maps"].items()},
                         out["combined"].cpu().numpy(), [b.cpu() for b in out["bounds"]],
                         _display(data, out["mixed"].x),
                         titles=[f"class {data.class_names[int(c)]}" for c in y])
    fig.suptitle(f"{info['method']} · {Path(run_dir).name} · fill={options.fill}", y=1.01, fontsize=9)
    return fig


def saliency_mixing_figure(run_dir, options: dict, n: int = 4, seed: int = 0, device="cpu"):
    """R-Mix and Saliency Grafting on ``n`` known test images, with the trained model of ``run_dir``.

    ``options``: {method name: RMixOptions | GraftingOptions}. Per method, columns = image i, its
    partner j, i's grid saliency, the share of each pixel that stays i's (1 own, 0 partner's, w1 where
    R-Mix blends), the mixed image titled with its label weights.
    """
    import dataclasses

    import torch

    from .data import load_openset
    from .evaluate import run_config
    from .mixing.grafting import GraftingOptions, grafting_parts
    from .mixing.rmix import rmix_parts
    from .train import load_model

    cfg, info = run_config(run_dir)
    model = load_model(run_dir, device)
    data = load_openset(cfg.data, info["split"], device)
    idx = torch.linspace(0, len(data.x_known) - 1, 2 * n).long()
    x, y = data.x_known[idx], data.y_known[idx]
    names = data.class_names


    cols = ("image i", "partner j", "saliency of i", "share of i", "mixed")
    fig, axes = plt.subplots(n, 5 * len(options), figsize=(1.5 * 5 * len(options), 1.6 * n), squeeze=False)
    for k, (method, o) in enumerate(options.items()):
        gen = torch.Generator(device=device).manual_seed(seed)
        o = dataclasses.replace(o, prob=1.0)
        parts_fn = grafting_parts if isinstance(o, GraftingOptions) else rmix_parts
        p = parts_fn(x, y, num_classes=data.num_classes, generator=gen, options=o, model=model)
        m, j = p["mixed"], p["partner"]
        if isinstance(o, GraftingOptions):
            share = 1.0 - p["mask"][:, 0].float()
        else:
            share = p["own"][:, 0].float() + p["w1"] * p["blend"][:, 0].float()
        imgs, mixed = _display(data, x), _display(data, m.x)
        cmap = "gray" if imgs.ndim == 3 else None
        for r in range(n):
            i, jj = r, int(j[r])
            row = axes[r][5 * k:5 * k + 5]
            row[0].imshow(imgs[i], cmap=cmap, vmin=0, vmax=1)
            row[1].imshow(imgs[jj], cmap=cmap, vmin=0, vmax=1)
            row[2].imshow(p["cells"][i].cpu().numpy(), cmap="jet")
            row[3].imshow(share[i].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            row[4].imshow(np.clip(mixed[i], 0, 1), cmap=cmap, vmin=0, vmax=1)
            a, b = int(y[i]), int(y[jj])
            row[4].set_title(f"{m.target[i, a]:.2f}·{names[a]}" + (f" + {m.target[i, b]:.2f}·{names[b]}" if a != b
                                                                      else ""), fontsize=7)
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
            if r == 0:
                for ax, c in zip(row[:4], cols):
                    ax.set_title(c, fontsize=7)
        axes[0][5 * k].set_ylabel(method, fontsize=9)
    fig.suptitle(f"{info['method']} model · {Path(run_dir).name}", fontsize=9)
    fig.tight_layout()
    return fig
