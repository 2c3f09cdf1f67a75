"""Paired differences between methods over splits × seeds, with a confidence interval and a sign test.

Two methods trained on the same split with the same seed share the data, the test set and the
initial weights, so the honest comparison is paired: d_i = metric(a)_i - metric(b)_i for each
(split, seed) both have. For each pair of methods and each open-set metric this module reports:

* ``mean``: the mean paired difference (in metric units; tables show percentage points);
* ``ci_low``, ``ci_high``: a percentile **paired bootstrap** interval of that mean
  (``scipy.stats.bootstrap`` on the differences, i.e. resampling whole (split, seed) pairs; seeded,
  ``evaluate.bootstrap_resamples`` resamples at ``evaluate.confidence``). Chosen over a t-interval
  because per-split AUROC differences are neither normal nor homoscedastic (some splits are easy
  for every method), and over BCa because BCa's acceleration is unstable with 5 values;
* ``wins``, ``losses``, ``ties``: how many pairs a beats, loses to, ties b;
* ``p``: the exact two-sided **Wilcoxon signed-rank** p-value (``scipy.stats.wilcoxon``), which asks
  whether the differences are centred on 0 without assuming their distribution.

What 5 pairs (the default's 5 splits × 1 seed) can and cannot show: the bootstrap draws from only
126 distinct resamples and ignores that 5 values understate the spread, so its interval covers the
true mean difference less often than the nominal 95 %: read it as the range the 5 splits span,
and a gap whose interval straddles 0 as no evidence of a difference. The exact Wilcoxon test cannot
reach p < 0.0625 with 5 pairs (all five on one side gives 2/32), so no difference is "significant
at 5 %" with 5 pairs whatever its size; 6 pairs can reach 0.031, 10 pairs 0.002. More seeds
(``train.seeds``) add pairs. Neither test corrects for the many comparisons a table makes.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

PAIR_KEYS = ("split", "seed")


def differences(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95, resamples: int = 10000,
                seed: int = 0) -> dict:
    """Statistics (module docstring) of the paired differences a - b, each (n,) in pair order.

    ``n`` 0 gives NaN statistics; ``n`` 1 a mean with a NaN interval and p; differences that are all
    equal give the interval [d, d] and (all zero) p = 1. Raises ValueError for unequal lengths or
    non-finite values."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired differences need two 1-D arrays of equal length, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired differences: non-finite metric values")
    d = a - b
    n = len(d)
    out = {"n": n, "mean": float(d.mean()) if n else math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum()), "p": math.nan,
           "confidence": confidence}
    if n < 2:
        return out
    if np.all(d == d[0]):
        out.update(ci_low=float(d[0]), ci_high=float(d[0]))
    else:
        res = stats.bootstrap((d,), np.mean, n_resamples=resamples, confidence_level=confidence,
                              method="percentile", rng=np.random.default_rng(seed))
        out.update(ci_low=float(res.confidence_interval.low), ci_high=float(res.confidence_interval.high))
    if np.all(d == 0):
        out["p"] = 1.0
    else:
        out["p"] = float(stats.wilcoxon(d, alternative="two-sided", method="auto").pvalue)
    return out


def paired_differences(df: pd.DataFrame, pairs, metrics, *, confidence: float = 0.95, resamples: int = 10000,
                       seed: int = 0) -> dict:
    """dataset -> list of {a, b, metric, **:func:`differences`} for each (a, b) of ``pairs`` and each
    metric of ``metrics`` both methods have (finite in every matched run), over the (split, seed)
    pairs both have.

    ``df``: one row per run (gradmix.evaluate.evaluate_runs: dataset, method, split, seed, metrics).
    A pair whose methods share no (split, seed) is left out; a method a pair names that has no runs
    raises KeyError naming it and the methods there are.
    """
    out: dict = {}
    for dataset, g in df.groupby("dataset", sort=False):
        have = list(dict.fromkeys(g["method"]))
        rows = []
        for a, b in pairs:
            for m in (a, b):
                if m not in have:
                    raise KeyError(f"paired differences: no runs of method {m!r} on {dataset!r}; methods: {have}")
            ga = g[g["method"] == a].set_index(list(PAIR_KEYS))
            gb = g[g["method"] == b].set_index(list(PAIR_KEYS))
            common = ga.index.intersection(gb.index).sort_values()
            if not len(common):
                continue
            for metric in metrics:
                if metric not in g or ga.loc[common, metric].isna().any() or gb.loc[common, metric].isna().any():
                    continue
                stats = differences(ga.loc[common, metric].to_numpy(), gb.loc[common, metric].to_numpy(),
                                    confidence=confidence, resamples=resamples, seed=seed)
                rows.append({"a": a, "b": b, "metric": metric, **stats})
        out[dataset] = rows
    return out


def comparisons(methods, baseline: str | None, pairs=(), contrastive=None) -> list[tuple[str, str]]:
    """The (a, b) pairs a results table compares, in table order, each once:

    every method of ``methods`` (the cross-entropy track, distilled students included) against
    ``baseline`` (``evaluate.baseline``, e.g. erm) when it is among them; the explicit ``pairs``
    (``evaluate.pairs``) whose two methods both run; and for the contrastive track (``contrastive``: a
    gradmix.contrastive.ContrastiveConfig or None) each method with an extra view against the method of
    its pipeline with no extra view and the same loss weights γ, μ (supcon_gradmix vs supcon_none).
    """
    methods = list(methods)
    out: list[tuple[str, str]] = []
    if baseline in methods:
        out += [(m, baseline) for m in methods if m != baseline]
    cl = list(contrastive.pipeline) if contrastive is not None else []
    everything = methods + cl
    out += [(a, b) for a, b in pairs if a in everything and b in everything]
    for m in cl:
        me = contrastive.methods[m]
        if me.view == "none":
            continue
        base = [b for b in cl if contrastive.methods[b].view == "none" and
                (contrastive.methods[b].gamma, contrastive.methods[b].mu) == (me.gamma, me.mu)]
        if base:
            out.append((m, base[0]))
    return list(dict.fromkeys(out))
