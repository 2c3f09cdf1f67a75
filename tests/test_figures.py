"""Figures: what each figure draws, checked against values computed by hand from fabricated runs."""
import json
import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

from gradmix import config, figures, gallery, rundir, train  # noqa: E402
from gradmix.contrastive import runs as contrastive_runs  # noqa: E402
from gradmix.config import ConfigError  # noqa: E402
from gradmix.robustness import ood_columns  # noqa: E402

import fakes  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def errorbars(ax) -> dict:
    """{label: (mean x, (left end, right end), y)} of the horizontal error bars of a panel."""
    out = {}
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            line, _, (bars,) = c.lines
            (x0, y0), (x1, _) = bars.get_segments()[0]
            out[c.get_label()] = (float(line.get_xdata()[0]), (x0, x1), y0)
    return out


def panel(fig, xlabel: str):
    hits = [ax for ax in fig.axes if ax.get_xlabel() == xlabel]
    assert len(hits) == 1, [ax.get_xlabel() for ax in fig.axes]
    return hits[0]


# ---------------------------------------------------------------------------------------------
# metric panels

RUNS = pd.DataFrame({
    "dataset": "digits", "method": ["a", "a", "a", "b", "b"], "split": [0, 1, 2, 0, 1], "seed": 0,
    "accuracy": [0.90, 0.92, 0.97, 0.50, 0.60],
    "auroc_mls": [0.80, 0.81, 0.83, 0.70, 0.74],
    "fpr95_mls": [0.40, 0.35, 0.30, 0.6, 0.5],
    "auroc_knn": np.nan,
})


def test_metrics_figure_draws_mean_std_and_every_run_in_percent():
    fig = figures.metrics_figure(RUNS, ("accuracy", "auroc_mls", "fpr95_mls"), order=["b", "a"])
    ax = panel(fig, "Accuracy [%]")
    bars = errorbars(ax)
    # hand: a = 90, 92, 97 -> mean 93, sample std sqrt(((-3)² + (-1)² + 4²) / 2) = sqrt(13)
    mean, (lo, hi), y = bars["a"]
    assert mean == pytest.approx(93.0) and (lo, hi) == pytest.approx((93 - 13 ** 0.5, 93 + 13 ** 0.5)) and y == 1
    mean, (lo, hi), y = bars["b"]                      # 50, 60 -> 55 ± sqrt(50)
    assert mean == pytest.approx(55.0) and hi - lo == pytest.approx(2 * 50 ** 0.5) and y == 0
    dots = sorted(float(x) for c in ax.collections if isinstance(c, PathCollection) for x, _ in c.get_offsets())
    assert dots == pytest.approx([50, 60, 90, 92, 97])  # every run, in %
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "a"]       # order, top to bottom
    lo, hi = ax.get_xlim()
    assert 0 <= lo <= 50 - 5 ** 0.5 and 97 < hi <= 102                    # every dot and bar inside
    assert panel(fig, "FPR@95%TPR (MLS) [%] (lower is better)")
    assert panel(fig, "AUROC (MLS) [%]")
    assert "± std over splits × seeds" in fig.texts[0].get_text() and "n = 2–3" in fig.texts[0].get_text()


def test_metrics_figure_colours_follow_the_palette_and_missing_values_say_so():
    colors = figures.palette(["x", "a", "b"])
    fig = figures.metrics_figure(RUNS, ("accuracy", "auroc_knn"), order=["a", "b"], colors=colors)
    ax = panel(fig, "Accuracy [%]")
    for c in ax.containers:
        assert matplotlib.colors.same_color(c.lines[0].get_color(), colors[c.get_label()])
    empty = panel(fig, "AUROC (kNN) [%]")
    assert not errorbars(empty) and "n/a" in empty.texts[0].get_text()
    with pytest.raises(ValueError, match=r"no runs of method\(s\) \['c'\]"):
        figures.metrics_figure(RUNS, order=["a", "c"])
    with pytest.raises(KeyError, match="oscr_mls"):
        figures.metrics_figure(RUNS, ("accuracy", "oscr_mls"))


def test_palette_gives_every_method_its_own_colour_and_keeps_a_prefix():
    names = [f"m{i}" for i in range(14)]
    full, head = figures.palette(names), figures.palette(names[:9])
    assert len({full[m] for m in names}) == 14
    assert all(full[m] == head[m] for m in names[:9])


# ---------------------------------------------------------------------------------------------
# ROC


def test_tpr_at_is_the_roc_polyline():
    rng = np.random.default_rng(0)
    fpr = np.concatenate([[0], np.sort(rng.uniform(0, 1, 20)), [1]])
    tpr = np.sort(rng.uniform(0, 1, 22))
    grid = np.linspace(0, 1, 57)
    assert np.allclose(figures.tpr_at(fpr, tpr, grid), np.interp(grid, fpr, tpr))
    # a vertical jump at FPR 0 (to 0.5) and a diagonal to (0.5, 0.75): the top of the jump, then linear
    got = figures.tpr_at([0, 0, 0.5, 1], [0, 0.5, 0.75, 1], [0, 0.25, 0.5, 0.75, 1])
    assert got == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0])
    mean, std = figures.mean_roc([([0, 0, 1], [0, 1, 1]), ([0, 1], [0, 1])], np.array([0, 0.5]))
    assert mean == pytest.approx([0.5, 0.75]) and std == pytest.approx([0.5, 0.25])


def fabricate_runs(root, methods=("a", "b"), splits=3, n=40):
    """Run directories with hand-made logits (no model): root/<method>/split<k>-seed0."""
    rng = np.random.default_rng(0)
    for m, shift in zip(methods, (1.5, 0.5, 1.0)):
        for k in range(splits):
            d = root / m / f"split{k}-seed0"
            d.mkdir(parents=True)
            run = {"method": m, "split": k, "seed": 0, "dataset": "digits"}
            (d / "config.json").write_text(json.dumps({"run": run}))
            known = rng.normal(size=(n, 3))
            labels = rng.integers(0, 3, n)
            known[np.arange(n), labels] += shift + 0.3 * k
            np.savez(d / "scores.npz", logits_known=known, labels_known=labels,
                     logits_unknown=rng.normal(size=(n, 3)), labels_unknown=np.full(n, 9))
            fakes.seal(d, run)                                # a finished run
    return root


def hand_auroc(k, u):
    """P(s_k > s_u) + ½·P(s_k = s_u) over all pairs."""
    k, u = np.asarray(k)[:, None], np.asarray(u)[None, :]
    return float(np.mean((k > u) + 0.5 * (k == u)))


def test_roc_figure_one_axes_all_methods_mean_auroc_in_legend(tmp_path):
    root = fabricate_runs(tmp_path)
    fig = figures.roc_figure(root, ["a", "b"], "mls", grid_points=11)
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    for m, text in zip(["a", "b"], legend):
        aurocs = []
        for k in range(3):
            z = np.load(root / m / f"split{k}-seed0" / "scores.npz")
            aurocs.append(hand_auroc(z["logits_known"].max(1), z["logits_unknown"].max(1)))     # MLS
        assert text == f"{m}: {100 * np.mean(aurocs):.1f} ± {100 * np.std(aurocs, ddof=1):.1f}"
    assert legend[-1] == "chance: 50.0"
    lines = {line.get_label(): line for line in ax.get_lines()}
    chance = lines["chance: 50.0"]
    assert list(chance.get_xdata()) == [0, 100] and list(chance.get_ydata()) == [0, 100]
    a = lines[legend[0]]
    assert np.allclose(a.get_xdata(), np.linspace(0, 100, 11))
    assert a.get_ydata()[0] >= 0 and a.get_ydata()[-1] == pytest.approx(100)
    assert np.all(np.diff(a.get_ydata()) >= -1e-12)                      # a mean of monotone curves
    assert ax.get_aspect() == 1.0 and ax.get_xlim() == (0, 100) and ax.get_ylim() == (0, 100)
    assert "[%]" in ax.get_xlabel() and "[%]" in ax.get_ylabel()
    with pytest.raises(FileNotFoundError, match=r"c: no runs in"):
        figures.roc_figure(root, ["a", "c"])


def test_roc_curve_is_the_vertical_average_of_the_runs(tmp_path):
    from gradmix.metrics import roc

    root = fabricate_runs(tmp_path, methods=("a",))
    grid = np.linspace(0, 1, 21)
    curves = []
    for k in range(3):
        z = np.load(root / "a" / f"split{k}-seed0" / "scores.npz")
        curves.append(roc(z["logits_known"].max(1), z["logits_unknown"].max(1)))
    want = np.mean([figures.tpr_at(f, t, grid) for f, t in curves], axis=0)
    line = figures.roc_figure(root, ["a"], grid_points=21).axes[0].get_lines()[0]
    assert np.allclose(line.get_ydata(), 100 * want)


# ---------------------------------------------------------------------------------------------
# robustness


def test_ood_and_corruption_figures_show_mean_std_in_percent(cfg):
    cols_a, cols_f = ood_columns(cfg.ood, "mls", "auroc"), ood_columns(cfg.ood, "mls", "fpr95")
    rows = []
    for m, base in (("a", 0.8), ("b", 0.6)):
        for k in range(2):
            row = {"dataset": "digits", "method": m, "split": k, "seed": 0}
            row.update({c: base + 0.1 * k for c in cols_a + cols_f})
            rows.append(row)
    fig = figures.ood_figure(pd.DataFrame(rows), cfg.ood, "mls", ["a", "b"])
    assert len(fig.axes) == len(cols_a) + len(cols_f)
    bars = errorbars(fig.axes[0])
    assert fig.axes[0].get_title() == cols_a[0].split("/")[0] and fig.axes[0].get_xlabel() == "AUROC (MLS) [%]"
    assert bars["a"][0] == pytest.approx(85) and bars["a"][1] == pytest.approx((85 - 50 ** 0.5, 85 + 50 ** 0.5))

    cc = cfg.corruption
    rows = []
    for m, base in (("a", 0.9), ("b", 0.5)):
        for k in range(2):
            row = {"dataset": "digits", "method": m, "split": k, "seed": 0, "clean": base + 0.02 * k}
            row.update({f"s{s}/mean": base - 0.05 * s for s in cc.severities})
            row.update({f"{c}/mean": base - 0.1 for c in cc.corruptions})
            rows.append(row)
    fig = figures.corruption_figure(pd.DataFrame(rows), cc, ["a", "b"])
    lines, heat = fig.axes[0], fig.axes[1]
    clean = [c for c in lines.containers if c.get_label() == "a"][0].lines[0]
    assert clean.get_ydata()[0] == pytest.approx(91) and clean.get_ydata()[1] == pytest.approx(90 - 5 * cc.severities[0])
    assert heat.images[0].get_array()[1, 0] == pytest.approx(40) and heat.images[0].get_clim() == (0, 100)
    assert fig.axes[-1].get_ylabel() == "accuracy [%]"                    # the colourbar


# ---------------------------------------------------------------------------------------------
# galleries on trained smoke runs


@pytest.fixture(scope="module")
def trained(cfg, tmp_path_factory):
    """Smoke runs (1 epoch, 192 images) of gradmix (cross-entropy) and supcon_gradmix (contrastive)."""
    root = tmp_path_factory.mktemp("runs")
    train.train_run(cfg, "gradmix", 0, 0, root / "gradmix" / "split0-seed0")
    contrastive_runs.train_run(cfg, "supcon_gradmix", 0, 0, root / "supcon_gradmix" / "split0-seed0")
    return root


def map_axes(fig):
    return [ax for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == gallery.MAP_CMAP]


def test_gallery_colourbar_lambdas_and_smoke_title(trained, params_file):
    run = trained / "gradmix" / "split0-seed0"
    fig = gallery.gallery_from_run(run, 3)
    cbar = [ax for ax in fig.axes if ax.get_ylabel() == gallery.MAP_LABEL]
    assert len(cbar) == 1                                                   # one colourbar, labelled
    maps = map_axes(fig)
    assert len(maps) == 3 * 3                                               # 2 stages + combined, 3 rows
    assert all(ax.images[0].get_clim() == (0, 1) for ax in maps)
    title = fig._suptitle.get_text()
    assert title.startswith("SMOKE MODEL") and "1 epoch" in title and "192 training images" in title
    assert "gradmix (cross-entropy)" in title and "split0-seed0" in title and "fill noise" in title
    assert "layercam on stage2+stage3" in title
    # each row: λ' = 1 - the area of the drawn box; λ is the box parameter the side follows from
    image_axes = [ax for ax in fig.axes if ax.get_ylabel().startswith("class ")]
    assert len(image_axes) == 3
    for ax in image_axes:
        label = ax.get_ylabel().split("\n")
        lam, lam_prime = float(label[1].split("= ")[1]), float(label[2].split("= ")[1])
        (box,) = ax.patches
        h, w = ax.images[0].get_array().shape[:2]
        assert lam_prime == pytest.approx(1 - box.get_width() * box.get_height() / (h * w), abs=0.005 + 1e-9)  # shown with 2 decimals
        inside = (box.get_x() > 0 and box.get_y() > 0 and box.get_x() + box.get_width() < w - 1
                  and box.get_y() + box.get_height() < h - 1)
        if inside:                                                          # the box was not clipped
            side = int(h * (1 - lam) ** 0.5)
            assert box.get_height() in (2 * ((side - 1) // 2), 2 * (side // 2), 2 * ((side + 1) // 2))
    assert "λ′: fraction left unmasked" in fig._supxlabel.get_text()


def test_gallery_title_follows_the_training_budget(trained, tmp_path, params_file):
    src = trained / "gradmix" / "split0-seed0"
    run = tmp_path / "gradmix" / "split0-seed0"
    shutil.copytree(src, run)
    raw = json.loads((run / "config.json").read_text())
    raw["train"]["epochs"], raw["data"]["max_train"] = 15, 0                # as if trained by the pipeline
    (run / "config.json").write_text(json.dumps(raw))
    rundir.write_marker(run, rundir.read_marker(run)["identity"])           # re-sealed after the edit
    assert gallery.training_budget(run) == {"epochs": 15, "max_train": 0, "smoke": False, "why": ""}
    assert not gallery.gallery_from_run(run, 2)._suptitle.get_text().startswith("SMOKE")
    longer = config.replace(config.load(params_file), train={"epochs": 20})
    budget = gallery.training_budget(run, reference=longer)
    assert budget["smoke"] and budget["why"] == "15 epochs (pipeline: 20)"
    assert gallery.gallery_from_run(run, 2, reference=longer)._suptitle.get_text().startswith(
        "SMOKE MODEL, barely trained, not a result: 15 epochs (pipeline: 20)")
    smoke = gallery.training_budget(src, reference=config.load(params_file))
    assert smoke["smoke"] and smoke["why"].startswith("1 epoch (pipeline: ") and "192 training images (pipeline: all)" in smoke["why"]


def test_gallery_per_sample_lambdas_and_partner_labels(trained):
    run = trained / "gradmix" / "split0-seed0"
    o = gallery.gallery_options(run, fill="partner", per_sample=True)
    fig = gallery.gallery_from_run(run, 4, o, seed=3)
    rows = [ax for ax in fig.axes if ax.get_ylabel().startswith("class ")]
    lams = {ax.get_ylabel().split("\n")[1] for ax in rows}
    assert len(lams) > 1                                                  # one λ per image
    soft = [ax.get_xlabel() for ax in fig.axes if "·" in ax.get_xlabel()]
    assert len(soft) == 4 and all(abs(sum(float(p.split("·")[0]) for p in s.split(" + ")) - 1) < 0.02 for s in soft)
    same = gallery.gallery_from_run(run, 4, o, seed=3)
    assert [ax.get_ylabel() for ax in rows] == [ax.get_ylabel() for ax in same.axes if ax.get_ylabel().startswith("class ")]
    with pytest.raises(IndexError, match="out of range"):
        gallery.gallery_from_run(run, options=o, images=[0, 10_000])


def test_contrastive_gallery_names_its_track_and_objective(trained):
    fig = gallery.gallery_from_run(trained / "supcon_gradmix" / "split0-seed0", 2, objective="supcon")
    title = fig._suptitle.get_text()
    assert "supcon_gradmix (contrastive)" in title and "objective supcon" in title and title.startswith("SMOKE")
    assert any(ax.get_ylabel() == gallery.MAP_LABEL for ax in fig.axes)
    with pytest.raises(ConfigError, match="valid choices"):
        gallery.gallery_from_run(trained / "supcon_gradmix" / "split0-seed0", 2, objective="gt_logit")


def test_gallery_figure_rejects_unnormalised_maps():
    img = np.zeros((1, 4, 4))
    with pytest.raises(ValueError, match="'combined' spans"):
        gallery.gallery_figure(img, {"s": np.zeros((1, 2, 2))}, 2 * np.ones((1, 4, 4)), ([0], [2], [0], [2]), img)


def test_one_per_class_takes_classes_in_turn():
    assert gallery.one_per_class(np.array([0, 0, 1, 1, 2, 0]), 5).tolist() == [0, 2, 4, 1, 3]


# ---------------------------------------------------------------------------------------------
# the explorer


def test_explorer_redraws_on_every_control(trained, params_file):
    from gradmix import explore

    view = explore.Explorer(trained, "gradmix", n_images=2, reference=config.load(params_file))
    assert "fill noise" in view.figure._suptitle.get_text()
    view.controls["fill"].value = "partner"
    assert "fill partner" in view.figure._suptitle.get_text()
    view.controls["attribution"].value = "gradcam"
    view.controls["stages"].value = ("stage3",)
    assert "gradcam on stage3," in view.figure._suptitle.get_text()
    view.controls["objective"].value = "ce"
    assert "objective ce" in view.figure._suptitle.get_text()
    view.controls["index"].value = 5
    first = [ax.get_ylabel() for ax in view.figure.axes if ax.get_ylabel().startswith("class ")]
    assert len(first) == 2
    view.controls["method"].value = "supcon_gradmix"                    # a contrastive run: its own choices
    assert [v for _, v in view.controls["objective"].options] == ["", "simclr", "supcon", "loss"]
    assert view.controls["objective"].value == "" and view.controls["stages"].value == ("stage2", "stage3")
    assert "supcon_gradmix (contrastive)" in view.figure._suptitle.get_text()
    with pytest.raises(ConfigError, match="explore method"):
        explore.explore_figure(trained, "erm")
    with pytest.raises(IndexError, match="image index 9999"):
        explore.explore_figure(trained, "gradmix", index=9999)


def test_explorer_shows_a_failed_redraw_and_keeps_the_last_view(trained, monkeypatch):
    from gradmix import explore

    view = explore.Explorer(trained, "gradmix", n_images=1)
    before = view.figure

    def refuse(*_, **kw):
        raise ConfigError(f"gradmix.fill: invalid value {kw['fill']!r}")

    monkeypatch.setattr(explore, "explore_figure", refuse)
    view.controls["fill"].value = "colocated"
    assert view.error == "ConfigError: gradmix.fill: invalid value 'colocated'" and view.figure is before
    with pytest.raises(ConfigError):                                   # the first view fails loudly
        explore.Explorer(trained, "gradmix")
