"""Bring your own data: an ImageFolder tree built here goes through the pipeline's steps unchanged."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gradmix import config, data, evaluate, figures, gallery, report, robustness, train
from gradmix.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "fox", "owl", "yak"]


def build_tree(root: Path, n_train=10, n_test=6, grey=False) -> Path:
    """train/<class>/*.png and test/<class>/*.png: 20x14 noise images with a bright vertical bar whose
    column codes the class (inside the central 14x14 crop that a computed resolution of 14 keeps)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(CLASSES):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (14, 20, 3), dtype=np.uint8)
                img[:, 3 + 3 * k:5 + 3 * k] = 230
                im = Image.fromarray(img[..., 0] if grey else img)
                im.save(root / split / c / f"{c}_{i}.png")
    return root


def params(tmp_path: Path, folder: Path, **data_overrides) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update({"dataset": "imagefolder", "folder": str(folder), "known": "random", "num_known": 3,
                        "known_seed": 0, "splits": [0, 1], "image_size": 0, "max_train": 0, **data_overrides})
    raw["train"].update(epochs=2, progress=False)
    raw["pipeline"].update(methods=["erm", "gradmix"], distill=[])
    raw["ood"].update(num_generated=40)
    raw["corruption"].update(corruptions=["gaussian_noise", "pixelate"], severities=[1, 3])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_imagefolder_through_train_evaluate_figures_tables(tmp_path):
    folder = build_tree(tmp_path / "tree")
    cfg = config.load(params(tmp_path, folder))
    methods = list(cfg.pipeline_methods)
    d0 = data.load_openset(cfg.data, 0)
    assert d0.x_train.shape[1:] == (3, 14, 14)                     # resolution computed: median shorter side
    assert len(d0.known) == 3 and d0.class_names == tuple(CLASSES[k] for k in d0.known)
    assert data.load_openset(cfg.data, 1).known != d0.known       # each split index is its own seeded draw
    assert len(d0.x_known) == len(d0.x_unknown) == 12             # 2 unknown classes x 6, balanced

    runs = train.train_methods(cfg, methods, tmp_path / "runs")
    results = tmp_path / "results"
    summary = evaluate.evaluate(runs, results, methods, cfg.evaluate.scores)
    assert list(summary) == ["imagefolder"] and list(summary["imagefolder"]) == methods
    assert summary["imagefolder"]["erm"]["auroc_mls"]["n"] == 2
    frame = evaluate.evaluate_runs(runs, methods)
    figures.save(figures.metrics_figure(frame, order=methods), results / "figures" / "metrics.png")
    figures.save(figures.roc_figure(runs, methods), results / "figures" / "roc.png")
    figures.save(gallery.gallery_from_run(evaluate.find_runs(runs, ["gradmix"])[0], 3), results / "figures" / "gallery.png")
    table = report.results_table(json.loads((results / "metrics.json").read_text()), "imagefolder", methods)
    assert table.startswith("| Method |") and "gradmix" in table
    ood_rows, cor_rows = robustness.run_all(runs, cfg, results, methods)
    assert len(ood_rows) == len(cor_rows) == 4
    assert {p.name for p in (results / "figures").iterdir()} == {"metrics.png", "roc.png", "gallery.png"}
    assert json.loads((results / "corruption.json").read_text())["imagefolder"]["gradmix"]["mean"]["n"] == 2


def test_imagefolder_options(tmp_path):
    folder = build_tree(tmp_path / "grey", grey=True)
    cfg = config.load(params(tmp_path, folder, known="list", known_classes=["owl", "cat"], splits=[0],
                             image_size=8, mean=[0.5], std=[0.25]))
    d = data.load_openset(cfg.data, 0)
    assert d.known == [3, 0] and d.class_names == ("owl", "cat")   # label index follows the list order
    assert d.x_train.shape[1:] == (1, 8, 8) and d.mean == (0.5,) and d.std == (0.25,)
    assert torch.allclose(d.denormalize(d.x_train), d.x_train * 0.25 + 0.5)
    assert set(d.y_unknown.tolist()) == {1, 2, 4}
    with pytest.raises(ConfigError, match="3 values for 1-channel"):
        data.load_openset(config.replace(cfg, data={"mean": [0.5, 0.5, 0.5], "std": [1, 1, 1]}).data, 0)
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        data.load_openset(config.replace(cfg, data={"folder": str(tmp_path / "nowhere")}).data, 0)
    with pytest.raises(ConfigError, match="data.folder: empty"):
        config.replace(cfg, data={"folder": ""})
