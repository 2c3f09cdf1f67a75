"""Paired differences with intervals (gradmix.statistics), the masked area of box mixers
(gradmix.evaluate.mixing_fractions) and the tables that show them (gradmix.report): hand-computed values."""
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradmix import config, evaluate, report, statistics

import fakes
from conftest import ROOT


def exact_bootstrap_interval(d, confidence=0.95):
    """The percentile interval of the exact bootstrap distribution: every one of the n^n resamples."""
    means = np.sort([np.mean(r) for r in itertools.product(d, repeat=len(d))])
    lo, hi = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    return means[int(np.floor(lo * len(means)))], means[int(np.ceil(hi * len(means))) - 1]


def test_five_pairs_all_won_hand_computed():
    s = statistics.differences(np.array([0.91, 0.92, 0.93, 0.94, 0.95]), np.full(5, 0.90))
    assert s["n"] == 5 and s["mean"] == pytest.approx(0.03) and (s["wins"], s["losses"], s["ties"]) == (5, 0, 0)
    assert s["p"] == pytest.approx(2 / 32)          # exact Wilcoxon: all 5 ranks positive, two-sided
    lo, hi = exact_bootstrap_interval([0.01, 0.02, 0.03, 0.04, 0.05])
    assert s["ci_low"] == pytest.approx(lo, abs=0.002) and s["ci_high"] == pytest.approx(hi, abs=0.002)
    assert lo == pytest.approx(0.018) and hi == pytest.approx(0.042)


def test_one_loss_hand_computed():
    # d = [1, -2, 3, 4, 5]: W- = 2; subsets of ranks 1..5 with sum <= 2: {}, {1}, {2} -> p = 2·3/32
    s = statistics.differences(np.array([1.0, -2, 3, 4, 5]), np.zeros(5))
    assert s["p"] == pytest.approx(6 / 32) and s["mean"] == pytest.approx(2.2) and (s["wins"], s["losses"]) == (4, 1)
    assert s["ci_low"] < 0 < s["ci_high"]            # the interval straddles 0: no evidence of a difference


def test_exact_bootstrap_of_three_pairs():
    # d = [0, 0, 3]: resample mean = 3·Binomial(3, 1/3)/3 in {0, 1, 2, 3} with P(3) = 1/27 > 2.5 %
    s = statistics.differences(np.array([0.0, 0.0, 3.0]), np.zeros(3))
    assert (s["ci_low"], s["ci_high"]) == (0.0, 3.0) == exact_bootstrap_interval([0, 0, 3])
    assert s["p"] == 1.0 and s["ties"] == 2          # zeros dropped: one non-zero difference


def test_degenerate_cases():
    same = statistics.differences(np.array([0.5, 0.6, 0.7]), np.array([0.4, 0.5, 0.6]))
    assert same["ci_low"] == pytest.approx(0.1) and same["ci_high"] == pytest.approx(0.1)
    zero = statistics.differences(np.ones(4), np.ones(4))
    assert (zero["mean"], zero["ci_low"], zero["ci_high"], zero["p"]) == (0.0, 0.0, 0.0, 1.0)
    one = statistics.differences(np.array([0.8]), np.array([0.7]))
    assert one["mean"] == pytest.approx(0.1) and np.isnan(one["ci_low"]) and np.isnan(one["p"])
    assert np.isnan(statistics.differences(np.array([]), np.array([]))["mean"])
    with pytest.raises(ValueError, match="non-finite"):
        statistics.differences(np.array([np.nan, 1.0]), np.ones(2))
    with pytest.raises(ValueError, match="equal length"):
        statistics.differences(np.ones(3), np.ones(2))


def test_seeded_and_reproducible():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.8, 1.0, 12), rng.uniform(0.8, 1.0, 12)     # enough distinct resample means
    assert statistics.differences(a, b, seed=3) == statistics.differences(a, b, seed=3)
    assert statistics.differences(a, b, seed=3)["ci_low"] != statistics.differences(a, b, seed=4)["ci_low"]


def runs_frame(rows):
    return pd.DataFrame(rows, columns=["dataset", "method", "split", "seed", "auroc_mls", "oscr_mls"])


def test_pairs_match_split_and_seed_not_row_order():
    rows = [("digits", "erm", s, 0, 0.80 + 0.01 * s, 0.7) for s in range(4)]
    rows += [("digits", "gradmix", s, 0, 0.81 + 0.01 * s + (0.02 if s == 3 else 0), 0.7) for s in (3, 2, 1, 0)]
    rows += [("digits", "gradmix", 4, 0, 0.99, 0.7)]       # no erm partner: left out
    out = statistics.paired_differences(runs_frame(rows), [("gradmix", "erm")], ["auroc_mls", "oscr_mls", "auroc_knn"])
    auroc, oscr = out["digits"]
    assert (auroc["a"], auroc["b"], auroc["metric"], auroc["n"]) == ("gradmix", "erm", "auroc_mls", 4)
    assert auroc["mean"] == pytest.approx((0.01 * 3 + 0.03) / 4) and auroc["wins"] == 4
    assert oscr["mean"] == pytest.approx(0.0) and oscr["p"] == 1.0
    with pytest.raises(KeyError, match="no runs of method 'cutmix'.*erm"):
        statistics.paired_differences(runs_frame(rows), [("cutmix", "erm")], ["auroc_mls"])


def test_comparisons_of_the_default_pipeline():
    cfg = config.load(ROOT / "params.yaml")
    pairs = statistics.comparisons(cfg.pipeline_methods, cfg.evaluate.baseline, cfg.evaluate.pairs, cfg.contrastive)
    assert pairs[0] == ("mixup", "erm") and ("asymkd", "erm") in pairs and ("gradmix_ce", "erm") in pairs
    assert {("gradmix", "gradmix_random"), ("gradmix_ce", "gradmix"), ("supcon_gradmix", "supcon_none"),
            ("simclr_gradmix", "simclr_none")} <= set(pairs)
    assert len(pairs) == len(set(pairs)) and not any(a == "erm" for a, _ in pairs)
    assert statistics.comparisons(["mixup", "cutmix"], "erm") == []          # the baseline did not run


def test_pairs_are_validated():
    cfg = config.load(ROOT / "params.yaml")
    with pytest.raises(config.ConfigError, match=r"evaluate.pairs \(\['gradmix', 'gradmx'\]\): unknown value 'gradmx'"):
        config.from_dict(config.merge(cfg.to_dict(), {"evaluate": {"pairs": [["gradmix", "gradmx"]]}}))
    with pytest.raises(config.ConfigError, match=r"evaluate.pairs: \['erm'\] is not a pair"):
        config.replace(cfg, evaluate={"pairs": [["erm"]]})
    with pytest.raises(config.ConfigError, match=r"evaluate.baseline: unknown value 'ermm'"):
        config.from_dict(config.merge(cfg.to_dict(), {"evaluate": {"baseline": "ermm"}}))


def test_differences_table_hand_values():
    diffs = {"digits": [{"a": "gradmix", "b": "erm", "metric": "auroc_mls", **statistics.differences(
        np.array([0.91, 0.92, 0.93, 0.94, 0.95]), np.full(5, 0.90))}]}
    md = report.differences_table(diffs, "digits")
    assert "| gradmix − erm | +3.0 [+1.8, +4.2] 5/5 p=0.062 |" in md
    assert "no p can be below 0.062" in md
    tex = report.differences_table(diffs, "digits", "tex")
    assert r"gradmix $-$ erm & +3.0 [+1.8, +4.2] 5/5 p=0.062 \\" in tex and r"$\Delta$ AUROC (MLS)" in tex


def fake_run(path: Path, method: str, split: int, known, unknown, log: str) -> Path:
    path.mkdir(parents=True)
    info = {"method": method, "split": split, "seed": 0, "dataset": "digits"}
    (path / "config.json").write_text(json.dumps({"run": info}))
    k, u = np.asarray(known, dtype=np.float64), np.asarray(unknown, dtype=np.float64)
    np.savez(path / "scores.npz", logits_known=np.stack([k, np.zeros_like(k)], 1), labels_known=np.zeros(len(k), int),
             logits_unknown=np.stack([u, np.zeros_like(u)], 1), labels_unknown=np.zeros(len(u), int))
    (path / "log.csv").write_text(log)
    return fakes.seal(path, info)


def test_masked_area_and_differences_reach_metrics_and_tables(tmp_path):
    cfg = config.load(ROOT / "params.yaml")
    root = tmp_path / "runs"
    for s in range(3):
        fake_run(root / "erm" / f"split{s}-seed0", "erm", s, [2, 3, 1], [0.5, 2.5], "epoch,loss\n1,1.0\n2,0.5\n")
        fake_run(root / "cutmix" / f"split{s}-seed0", "cutmix", s, [2, 3, 1], [0.5, 1.5],
                 "epoch,loss,masked_fraction\n1,1.0,0.2\n2,0.5,0.3\n")       # mean over epochs: 0.25
    cfg = config.from_dict(config.merge(cfg.to_dict(), {"pipeline": {"methods": ["erm", "cutmix"], "distill": []}}))
    summary = evaluate.evaluate(root, tmp_path / "out", ["erm", "cutmix"], ("mls",), compare=cfg)
    assert summary["digits"]["cutmix"]["masked_fraction"] == {"mean": 0.25, "std": 0.0, "n": 3}
    assert "masked_fraction" not in summary["digits"]["erm"]
    diffs = json.loads((tmp_path / "out" / "differences.json").read_text())["digits"]
    # AUROC: erm 4/6 (known [2, 3, 1] vs unknown [0.5, 2.5]), cutmix 5/6 (vs [0.5, 1.5]): +1/6 on each split
    auroc = [d for d in diffs if d["metric"] == "auroc_mls"][0]
    assert (auroc["a"], auroc["b"], auroc["n"], auroc["wins"]) == ("cutmix", "erm", 3, 3)
    assert auroc["mean"] == pytest.approx(1 / 6) and auroc["ci_low"] == pytest.approx(1 / 6)
    full = report.results_table(summary, "digits", ["erm", "cutmix"], ("auroc_mls", "masked_fraction"))
    assert "| cutmix | **83.3 ± 0.0** | 25.0 ± 0.0 |" in full and "| erm | 66.7 ± 0.0 | – |" in full
