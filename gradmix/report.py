"""Tables of the report (markdown and LaTeX) and the metric names they and the figures share.

Figures are in :mod:`gradmix.figures` (metrics, ROC, scores, robustness) and :mod:`gradmix.gallery`
(attribution galleries and other image grids).
"""
from __future__ import annotations

LABELS = {"accuracy": "Accuracy", "auroc_msp": "AUROC (MSP)", "auroc_mls": "AUROC (MLS)",
          "oscr_msp": "OSCR (MSP)", "oscr_mls": "OSCR (MLS)", "fpr95_msp": "FPR@95%TPR (MSP)",
          "fpr95_mls": "FPR@95%TPR (MLS)", "auroc_knn": "AUROC (kNN)", "oscr_knn": "OSCR (kNN)",
          "fpr95_knn": "FPR@95%TPR (kNN)", "probe_accuracy": "Linear probe acc."}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


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
