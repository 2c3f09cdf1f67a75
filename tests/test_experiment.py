"""What DVC's experiment views read (gradmix.experiment) and what dvc.yaml declares for them."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gradmix import experiment
from gradmix.metrics import roc

import fakes

ROOT = Path(__file__).resolve().parents[1]


def fake_run(path: Path, method: str, split: int, known, labels, unknown, log=None, stored=None):
    """A finished run: MLS scores come from two-class logits [s, 0]; ``stored`` = a contrastive run's
    precomputed kNN scores instead of logits."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"run": {"method": method, "split": split, "seed": 0,
                                                          "dataset": "digits"}}))
    k, u = np.asarray(known, dtype=np.float64), np.asarray(unknown, dtype=np.float64)
    arrays = {"labels_known": np.asarray(labels), "labels_unknown": np.zeros(len(u), dtype=np.int64)}
    if stored:
        arrays.update(score_knn_known=k, pred_knn_known=np.asarray(labels), score_knn_unknown=u)
    else:
        arrays.update(logits_known=np.stack([k, np.zeros_like(k)], 1), logits_unknown=np.stack([u, np.zeros_like(u)], 1))
    np.savez(path / "scores.npz", **arrays)
    if log is not None:
        pd.DataFrame(log).to_csv(path / "log.csv", index=False)
    return fakes.seal(path, {"method": method, "split": split})


def test_tpr_at_reads_the_drawn_staircase():
    # known [2, 3, 1, 0.5] vs unknown [0.2, 1.5, 0.4]: the curve rises to 0.5 at FPR 0, stays there up
    # to FPR 1/3 (the unknown scoring 1.5), then jumps to 1
    fpr, tpr = roc(np.array([2, 3, 1, 0.5]), np.array([0.2, 1.5, 0.4]))
    got = experiment.tpr_at(np.array([0, 1 / 6, 1 / 3, 0.5, 1]), fpr, tpr)
    assert got.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0, 1.0])
    # between two points of different FPR: linear
    assert experiment.tpr_at(np.array([0.25]), np.array([0, 0.5, 1]), np.array([0, 0.5, 1])) == pytest.approx(0.25)


def test_plot_data_and_summary_from_fabricated_runs(tmp_path):
    runs = tmp_path / "runs"
    log0 = {"epoch": [1, 2], "lr": [0.1, 0.0], "loss": [2.0, 1.0], "test_accuracy": [0.5, 0.75],
            "test_auroc_mls": [0.6, 0.8], "seconds": [1.0, 2.0]}
    log1 = {**log0, "loss": [1.0, 0.5], "test_accuracy": [0.7, 0.95], "test_auroc_mls": [0.7, 1.0]}
    fake_run(runs / "erm/split0-seed0", "erm", 0, [2, 3, 1, 0.5], [0, 0, 0, 0], [0.2, 1.5, 0.4], log0)
    fake_run(runs / "erm/split1-seed0", "erm", 1, [5, 4], [0, 0], [1, 2], log1)          # perfect: TPR 1 at FPR 0
    fake_run(runs / "supcon_none/split0-seed0", "supcon_none", 0, [0.9, 0.8], [0, 1], [0.85, 0.1],
             {"epoch": [1], "loss": [5.0], "seconds": [1.0]}, stored=True)

    curves = experiment.training_curves(runs, ["erm", "supcon_none"])
    assert list(curves.columns) == ["method", "epoch", "runs", "lr", "loss", "test_accuracy", "test_auroc_mls"]
    assert curves.method.tolist() == ["erm", "erm"] and curves.runs.tolist() == [2, 2]   # no per-epoch test metric
    assert curves.loss.tolist() == [1.5, 0.75] and curves.test_auroc_mls.tolist() == pytest.approx([0.65, 0.9])

    points = experiment.roc_points(runs, ["erm", "supcon_none"], "mls", fpr_grid=np.array([0, 1 / 6, 0.5, 1]))
    erm = points[points.method == "erm"]
    assert erm.score.unique().tolist() == ["mls"]
    assert erm.tpr.tolist() == pytest.approx([(0.5 + 1) / 2, (0.5 + 1) / 2, 1, 1])
    knn = points[points.method == "supcon_none"]       # known 0.9, 0.8 vs unknown 0.85, 0.1
    assert knn.score.unique().tolist() == ["knn"] and knn.tpr.tolist() == pytest.approx([0.5, 0.5, 1, 1])

    metrics = {"digits": {"erm": {"accuracy": {"mean": 0.912345, "std": 0.1, "n": 2},
                                  "auroc_msp": {"mean": 0.5, "std": 0, "n": 2},
                                  "auroc_mls": {"mean": 0.87654, "std": 0, "n": 2},
                                  "oscr_mls": {"mean": 0.8, "std": 0, "n": 2},
                                  "fpr95_mls": {"mean": 0.3, "std": 0, "n": 2}},
                          "supcon_none": {"accuracy": {"mean": 0.5, "std": 0, "n": 1},
                                          "auroc_knn": {"mean": 0.75, "std": 0, "n": 1},
                                          "oscr_knn": {"mean": 0.25, "std": 0, "n": 1},
                                          "probe_accuracy": {"mean": 0.9, "std": 0, "n": 1}}}}
    assert experiment.summary(metrics, "mls") == {"digits": {
        "erm": {"accuracy": 0.9123, "auroc": 0.8765, "oscr": 0.8},
        "supcon_none": {"accuracy": 0.5, "auroc": 0.75, "oscr": 0.25}}}

    paths = experiment.write(runs, tmp_path / "results", ["erm", "supcon_none"], metrics, "mls")
    assert json.loads(paths["summary"].read_text())["digits"]["erm"]["auroc"] == 0.8765
    roc_csv = pd.read_csv(paths["roc"])
    assert len(roc_csv) == 2 * len(experiment.FPR_GRID) and roc_csv.tpr.between(0, 1).all()
    pd.testing.assert_frame_equal(pd.read_csv(paths["training"]), curves, check_dtype=False, rtol=1e-4)


def test_dvc_yaml_declares_summary_metrics_and_plots_that_stages_write():
    """The one metrics file and every plot's data file are outputs of a stage (DVC's own loader), the
    plot template exists and colours by method, and the evaluate notebook writes those files."""
    from dvc.repo import Repo

    dvcyaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert "metrics" not in dvcyaml                                # only the evaluate stage's summary
    with Repo(str(ROOT)) as repo:
        outs = {str(Path(o.fs_path).relative_to(ROOT)): o for s in repo.index.stages for o in s.outs}
    metrics = [p for p, o in outs.items() if o.metric]
    assert metrics == ["results/summary.json"] and outs["results/summary.json"].use_cache is False
    data_plots = [next(iter(p.values())) for p in dvcyaml["plots"] if isinstance(p, dict)]
    for plot in data_plots:
        (file, field), = plot["y"].items()
        assert file in outs and outs[file].use_cache is False, file
        assert plot["template"] == "methods"
    assert {next(iter(p["y"].values())) for p in data_plots} == {"loss", "test_accuracy", "test_auroc_mls", "tpr"}
    template = json.loads((ROOT / ".dvc/plots/methods.json").read_text())
    assert template["encoding"]["color"]["field"] == "method" and template["encoding"]["strokeDash"]["field"] == "rev"
    assert (ROOT / ".gitignore").read_text().count("/dvc_plots") == 1
    assert "experiment.write(" in (ROOT / "notebooks/evaluate.ipynb").read_text()
