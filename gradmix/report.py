"""Tables of the report (markdown and LaTeX) and the metric names they and the figures share.

Figures are in :mod:`gradmix.figures` (metrics, ROC, scores, robustness) and :mod:`gradmix.gallery`
(attribution galleries and other image grids).
"""
from __future__ import annotations

import numpy as np

LABELS = {"accuracy": "Accuracy", "auroc_msp": "AUROC (MSP)", "auroc_mls": "AUROC (MLS)",
          "oscr_msp": "OSCR (MSP)", "oscr_mls": "OSCR (MLS)", "fpr95_msp": "FPR@95%TPR (MSP)",
          "fpr95_mls": "FPR@95%TPR (MLS)", "auroc_knn": "AUROC (kNN)", "oscr_knn": "OSCR (kNN)",
          "fpr95_knn": "FPR@95%TPR (kNN)", "probe_accuracy": "Linear probe acc."}


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
                  fmt: str = "md", lower_is_better=("fpr95_msp", "fpr95_mls", "fpr95_knn")) -> str:
    """An OSR-paper table: rows = methods, columns = metrics, mean ± std in %, best mean in bold.

    A metric a method does not have (e.g. kNN AUROC of a cross-entropy run, or any open-set metric of
    a closed-set run, ``data.known: all``: missing or NaN in the summary) shows as "–", never as a number.
    """
    tex = fmt == "tex"
    rows = summary[dataset]
    missing = [k for k in methods if k not in rows]
    if missing:
        raise KeyError(f"results_table: no results for method(s) {missing} on {dataset!r}; have {sorted(rows)}")
    best = {}
    for m in metrics:
        vals = [rows[k][m]["mean"] for k in methods if _present(rows, k, m)]
        best[m] = (min if m in lower_is_better else max)(vals) if vals else None
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
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    lines.append(f"\n{dataset}: mean ± std over {n} runs (splits × seeds), in %.")
    return "\n".join(lines) + "\n"
