"""Tables of the report (markdown and LaTeX) and the metric names they and the figures share.

Figures are in :mod:`gradmix.figures` (metrics, ROC, scores, robustness) and :mod:`gradmix.gallery`
(attribution galleries and other image grids).
"""
from __future__ import annotations

import numpy as np

LABELS = {"accuracy": "Accuracy", "auroc_msp": "AUROC (MSP)", "auroc_mls": "AUROC (MLS)",
          "oscr_msp": "OSCR (MSP)", "oscr_mls": "OSCR (MLS)", "fpr95_msp": "FPR@95%TPR (MSP)",
          "fpr95_mls": "FPR@95%TPR (MLS)", "auroc_knn": "AUROC (kNN)", "oscr_knn": "OSCR (kNN)",
          "fpr95_knn": "FPR@95%TPR (kNN)", "probe_accuracy": "Linear probe acc.",
          "masked_fraction": "Masked area", "fallback_fraction": "Map fallback"}
UNRANKED = ("masked_fraction", "fallback_fraction")   # descriptive columns: no best value in bold


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def _present(rows: dict, method: str, metric: str) -> bool:
    """True when ``method`` has a finite mean for ``metric`` (a closed-set run's open-set metrics are NaN
    or left out of the summary: absent)."""
    stats = rows[method].get(metric)
    return stats is not None and bool(np.isfinite(stats["mean"]))


def _cell(stats: dict, scale: float, bold: bool, tex: bool) -> str:
    text = f"{scale * stats['mean']:.1f} ± {scale * stats['std']:.1f}"
    if tex:
        text = text.replace("±", r"$\pm$")
        return rf"\textbf{{{text}}}" if bold else text
    return f"**{text}**" if bold else text



def results_table(summary: dict, dataset: str, methods, metrics=("accuracy", "auroc_mls", "oscr_mls"),
                  fmt: str = "md", lower_is_better=("fpr95_msp", "fpr95_mls", "fpr95_knn"), notes=()) -> str:
    """An OSR-paper table: rows = methods, columns = metrics, mean ± std in %, best mean in bold.

    A metric a method does not have (e.g. kNN AUROC of a cross-entropy run, or any open-set metric of
    a closed-set run, ``data.known: all``: missing or NaN in the summary) shows as "–", never as a number.
    ``masked_fraction`` (the mean area a box mixer masked, gradmix.evaluate.mixing_fractions) and
    ``fallback_fraction`` are descriptive: never bold. ``notes``: lines printed below the table.
    """
    tex = fmt == "tex"
    rows = summary[dataset]
    missing = [k for k in methods if k not in rows]
    if missing:
        raise KeyError(f"results_table: no results for method(s) {missing} on {dataset!r}; have {sorted(rows)}")
    best = {}
    for m in metrics:
        vals = [rows[k][m]["mean"] for k in methods if _present(rows, k, m)]
        best[m] = (min if m in lower_is_better else max)(vals) if vals and m not in UNRANKED else None
    header = ["Method"] + [label(m) for m in metrics]
    body = [[k] + [_cell(rows[k][m], 100, rows[k][m]["mean"] == best[m], tex) if _present(rows, k, m) else "–"
                   for m in metrics] for k in methods]
    n = max((rows[k][m]["n"] for k in methods for m in metrics if _present(rows, k, m)), default=0)
    if tex:
        lines = [r"\begin{tabular}{l" + "c" * len(metrics) + "}", r"\toprule",
                 " & ".join(header) + r" \\", r"\midrule"]
        lines += [" & ".join(r).replace("_", r"\_") + r" \\" for r in body]
        lines += [r"\bottomrule", r"\end{tabular}",
                  f"% {dataset}: mean ± std over {n} runs (splits × seeds), in %"]
        lines += [f"% {note}" for note in notes]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    lines.append(f"\n{dataset}: mean ± std over {n} runs (splits × seeds), in %.")
    lines += [f"{note}" for note in notes]
    return "\n".join(lines) + "\n"


def row_notes(cfg, methods) -> list[str]:
    """Lines a table of ``methods`` needs below it: the contrastive extra views that are not the
    authors' (Mixup / CutMix / a third plain view in place of GradMix's), and what the masked-area
    column means."""
    cl = getattr(cfg, "contrastive", None)
    notes = []
    extra = [m for m in methods if cl is not None and m in cl.methods and cl.methods[m].view in ("mixup", "cutmix", "aug")]
    if extra:
        notes.append(f"{', '.join(extra)}: like-for-like extra views (this package's Mixup / CutMix of view 1, or a "
                     f"third plain view, in place of the GradMix view and weighted the same way), not the GradMix "
                     f"authors' baselines (their code's own cutmix positive pastes a resized partner image).")
    return notes


def differences_table(diffs: dict, dataset: str, fmt: str = "md") -> str:
    """Paired differences (gradmix.statistics, results/differences.json) as a table: one row per
    compared pair "a − b", one column per metric: mean difference in percentage points, its
    paired-bootstrap interval, how many of the n (split, seed) pairs a wins, and the Wilcoxon p."""
    tex = fmt == "tex"
    rows = diffs.get(dataset, [])
    if not rows:
        return f"{dataset}: no paired differences (no compared pair ran).\n"
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    pairs = list(dict.fromkeys((r["a"], r["b"]) for r in rows))
    by = {(r["a"], r["b"], r["metric"]): r for r in rows}
    conf = int(round(100 * rows[0]["confidence"]))

    def cell(r):
        if r is None:
            return "–"
        ci = "[–]" if not np.isfinite(r["ci_low"]) else f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"
        p = "–" if not np.isfinite(r["p"]) else f"{r['p']:.2g}"
        return f"{100 * r['mean']:+.1f} {ci} {r['wins']}/{r['n']} p={p}"

    header = ["a − b"] + [f"Δ {label(m)}" for m in metrics]
    body = [[f"{a} − {b}"] + [cell(by.get((a, b, m))) for m in metrics] for a, b in pairs]
    n = max(r["n"] for r in rows)
    note = (f"{dataset}: mean paired difference over n = {n} (split, seed) pairs in points, its {conf} % paired-bootstrap "
            f"interval, pairs a wins of n, exact two-sided Wilcoxon signed-rank p (with {n} pairs no p can be below "
            f"{2 / 2 ** n:.2g}; what this can and cannot show: docs/reproducibility.md).")
    if tex:
        head = " & ".join(header).replace("Δ", r"$\Delta$").replace("−", "$-$").replace("%", r"\%")
        lines = [r"\begin{tabular}{l" + "c" * len(metrics) + "}", r"\toprule", head + r" \\", r"\midrule"]
        lines += [" & ".join(row).replace("_", r"\_").replace("−", "$-$") + r" \\" for row in body]
        lines += [r"\bottomrule", r"\end{tabular}", f"% {note}"]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"
