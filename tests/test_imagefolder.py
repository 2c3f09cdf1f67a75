"""Bring your own data: the ImageFolder tree of examples/imagefolder.py goes through the pipeline's steps unchanged."""
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gradmix import config, data, evaluate, figures, gallery, report, robustness, trainers
from gradmix.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = runpy.run_path(str(ROOT / "examples" / "imagefolder.py"))   # the users' entry point builds the tree
CLASSES, build_tree = list(EXAMPLE["CLASSES"]), EXAMPLE["build_tree"]


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

    runs = trainers.train_methods(cfg, methods, tmp_path / "runs")
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


# ----------------------------------------------------------------------------- Pillow modes

from gradmix import images  # noqa: E402
from gradmix.datasets import image_folder, image_folder_index  # noqa: E402


def save(path: Path, im) -> str:
    im.save(path)
    return str(path)


def u16(values, mode="I;16"):
    a = np.asarray(values, dtype=">u2" if mode == "I;16B" else np.uint16)
    return Image.frombytes(mode, (a.shape[1], a.shape[0]), a.tobytes())


def test_every_pillow_mode_scaled_to_unit_range(tmp_path):
    f = lambda *v: np.asarray(v, dtype=np.float32)  # noqa: E731
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50])
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0                       # index 0 transparent: dropped, its colour kept
    pa = Image.new("PA", (2, 1))
    pa.putpalette([10, 20, 30, 200, 100, 50])
    pa.putpixel((1, 0), (1, 7))
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    cases = {  # file, decode mode, expected (C, H, W) values in [0, 1], by hand
        "1": (save(tmp_path / "a.png", bilevel), "L", f([[0, 1]])),
        "L": (save(tmp_path / "l.png", Image.fromarray(np.array([[0, 51, 255]], np.uint8))), "L",
              f([[0, 0.2, 1]])),
        "LA": (save(tmp_path / "la.png", Image.new("LA", (1, 1), (102, 0))), "L", f([[0.4]])),     # alpha 0 dropped
        "P": (save(tmp_path / "p.png", pal), "RGB", f([[10 / 255, 200 / 255]], [[20 / 255, 100 / 255]],
                                                      [[30 / 255, 50 / 255]])),
        "PA": (save(tmp_path / "pa.tif", pa), "RGB", f([[10 / 255, 200 / 255]], [[20 / 255, 100 / 255]],
                                                       [[30 / 255, 50 / 255]])),
        "RGB": (save(tmp_path / "rgb.png", Image.new("RGB", (1, 1), (255, 51, 0))), "RGB", f([[1]], [[0.2]], [[0]])),
        "RGBA": (save(tmp_path / "rgba.png", Image.new("RGBA", (1, 1), (10, 20, 30, 0))), "RGB",
                 f([[10 / 255]], [[20 / 255]], [[30 / 255]])),
        # Pillow's CMYK -> RGB: (255 - C)(255 - K)/255 per channel: (155·235, 205·235, 255·235)/255 -> 143, 189, 235
        "CMYK": (save(tmp_path / "c.tif", Image.new("CMYK", (1, 1), (100, 50, 0, 20))), "RGB",
                 f([[143 / 255]], [[189 / 255]], [[235 / 255]])),
        "YCbCr": (save(tmp_path / "y.tif", Image.new("YCbCr", (1, 1), (100, 128, 128))), "RGB",   # neutral chroma
                  f([[100 / 255]], [[100 / 255]], [[100 / 255]])),
        "I;16": (save(tmp_path / "i16.png", u16([[0, 1000, 65535]])), "L", f([[0, 1000 / 65535, 1]])),
        "I;16B": (save(tmp_path / "i16b.tif", u16([[0, 1000, 65535]], "I;16B")), "L", f([[0, 1000 / 65535, 1]])),
        "I": (save(tmp_path / "i.tif", Image.fromarray(np.array([[0, 32768, 65535]], np.int32))), "L",
              f([[0, 32768 / 65535, 1]])),
        "F": (save(tmp_path / "f.tif", Image.fromarray(np.array([[0, 0.25, 1]], np.float32))), "L", f([[0, 0.25, 1]])),
    }
    for mode, (path, target, expect) in cases.items():
        with Image.open(path) as im:
            assert im.mode == mode, (mode, im.mode)
        got = images.decode(path, target, as_float=True)
        assert got.dtype == np.float32 and got.shape == expect.shape, mode
        assert np.allclose(got, expect, atol=1e-6), (mode, got, expect)
        assert np.array_equal(images.decode(path, target), np.round(expect * 255).astype(np.uint8)), mode
    # grey 16-bit in a colour dataset: repeated over the channels
    rgb = images.decode(cases["I;16"][0], "RGB", as_float=True)
    assert rgb.shape == (3, 1, 3) and np.allclose(rgb, f([[0, 1000 / 65535, 1]] * 3)[:, None, 0])
    # LAB: Pillow's conversion, white and black within 2/255
    lab = images.decode(save(tmp_path / "lab.tif", Image.new("LAB", (2, 1), (255, 128, 128))), "RGB", as_float=True)
    assert np.allclose(lab, 1.0, atol=2 / 255)
    # 16-bit resized as floats: a constant image stays exactly its value / 65535
    big = images.decode(save(tmp_path / "c16.png", u16(np.full((8, 12), 30000))), "L", 4, as_float=True)
    assert big.shape == (1, 4, 4) and np.allclose(big, 30000 / 65535, atol=1e-6)


def test_modes_pillow_cannot_write_convert_by_the_same_rules():
    la = images._eight_bit(Image.new("La", (1, 1), (100, 128)), "L")       # premultiplied: un-premultiplied
    assert la.getpixel((0, 0)) == round(100 * 255 / 128)
    rgba = images._eight_bit(Image.new("RGBa", (1, 1), (100, 50, 0, 128)), "RGB")
    assert rgba.getpixel((0, 0)) == (199, 99, 0)
    assert images._eight_bit(Image.new("HSV", (1, 1), (0, 0, 200)), "RGB").getpixel((0, 0)) == (200, 200, 200)


def test_values_a_mode_cannot_mean_and_unknown_modes_fail_naming_the_file(tmp_path):
    bad_i = save(tmp_path / "neg.tif", Image.fromarray(np.array([[-5, 70000]], np.int32)))
    with pytest.raises(ValueError, match=r"neg\.tif: Pillow mode 'I' values span \[-5, 70000\]"):
        images.decode(bad_i, "L")
    bad_f = save(tmp_path / "hot.tif", Image.fromarray(np.array([[0.0, 1.5]], np.float32)))
    with pytest.raises(ValueError, match=r"hot\.tif: Pillow mode 'F'"):
        images.decode(bad_f, "L")
    nan_f = save(tmp_path / "nan.tif", Image.fromarray(np.array([[0.0, np.nan]], np.float32)))
    with pytest.raises(ValueError, match=r"nan\.tif: .*not finite"):
        images.decode(nan_f, "L")
    with pytest.raises(ValueError, match=r"x\.raw: Pillow image mode 'I;16S' is not supported"):
        images.check_mode("I;16S", "x.raw")


def test_16_bit_folder_is_scaled_not_clipped_to_white(tmp_path):
    # regression: 16-bit grey files were clipped to 255, every image of every class white
    root = tmp_path / "micro"
    for split in ("train", "test"):
        for k, c in enumerate(("a", "b")):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                img = np.full((6, 6), 2000 + 1000 * i, np.uint16)
                img[:, 2 * k:2 * k + 2] = 40000                       # the class bar
                save(root / split / c / f"{i}.png", u16(img))
    raw = image_folder(config.DataConfig(dataset="imagefolder", folder=str(root), known="all", splits=(0,),
                                         image_size=6))
    assert raw.x_train.dtype == np.float32 and raw.x_train.shape == (4, 1, 6, 6)
    assert np.allclose(raw.x_train[0, 0, 0, 2:], [2000 / 65535, 2000 / 65535, 2000 / 65535, 2000 / 65535])
    assert np.allclose(raw.x_train[0, 0, 0, :2], 40000 / 65535) and raw.x_train.max() < 1.0
    d = data.load_openset(config.DataConfig(dataset="imagefolder", folder=str(root), known="all", splits=(0,),
                                            image_size=6, mean=(0.0,), std=(1.0,), storage="float32"), 0)
    assert torch.allclose(torch.unique(d.x_train), torch.tensor([2000, 3000, 40000]) / 65535)   # none clipped
    # data.storage auto keeps 16-bit pixels as float16 (not exact in 8 bits): within float16's 2.4e-4
    d = data.load_openset(config.DataConfig(dataset="imagefolder", folder=str(root), known="all", splits=(0,),
                                            image_size=6, mean=(0.0,), std=(1.0,)), 0)
    assert d.storage == "float16"
    assert torch.allclose(torch.unique(d.x_train), torch.tensor([2000, 3000, 40000]) / 65535, rtol=0, atol=2.5e-4)


# ----------------------------------------------------------------------------- hidden entries, numeric names, splits

def test_hidden_entries_are_neither_classes_nor_images(tmp_path):
    folder = build_tree(tmp_path / "tree", n_train=2, n_test=2)
    for split in ("train", "test"):
        (folder / split / ".ipynb_checkpoints").mkdir()
        Image.new("RGB", (20, 14)).save(folder / split / ".ipynb_checkpoints" / "x-checkpoint.png")
        (folder / split / ".thumbs").mkdir()
        (folder / split / ".DS_Store").write_bytes(b"\0\1junk")
        (folder / split / "cat" / "._cat_0.png").write_bytes(b"\0\5AppleDouble")    # macOS resource fork
        (folder / split / "cat" / ".ipynb_checkpoints").mkdir()
        Image.new("RGB", (20, 14)).save(folder / split / "cat" / ".ipynb_checkpoints" / "c-checkpoint.png")
    idx = image_folder_index(config.DataConfig(dataset="imagefolder", folder=str(folder), known="all", splits=(0,)))
    assert idx["classes"] == CLASSES
    assert len(idx["train"]) == 2 * len(CLASSES) and all("/." not in p for p, _ in idx["train"] + idx["test"])


def numbered_tree(root: Path, names) -> Path:
    for split in ("train", "test"):
        for n in names:
            (root / split / n).mkdir(parents=True)
            Image.fromarray(np.full((4, 4), 9 * len(n), np.uint8)).save(root / split / n / "0.png")
    return root


def yaml_params(tmp_path, folder, known_classes: str) -> config.Config:
    """params.yaml with the known classes written as YAML text, as a user types them."""
    path = params(tmp_path, folder, known="list", splits=[0])
    text = path.read_text().replace("known_classes: []", f"known_classes: {known_classes}")
    assert f"known_classes: {known_classes}" in text
    path.write_text(text)
    return config.load(path)


def test_integers_in_known_classes_are_folder_names(tmp_path):
    folder = numbered_tree(tmp_path / "n", [str(i) for i in range(1, 11)])     # sorted: 1, 10, 2, ..., 9
    cfg = yaml_params(tmp_path, folder, "[1, 2]")
    with pytest.warns(UserWarning, match="1 selects the folder named '1', not folder '10' at sorted position 1"):
        d = data.load_openset(cfg.data, 0)
    assert d.class_names == ("1", "2")                 # not ('10', '2'), the positions
    quoted = yaml_params(tmp_path, folder, "['1', '2']")
    assert data.load_openset(quoted.data, 0).class_names == ("1", "2")


def test_octal_looking_entries_are_refused_with_the_fix(tmp_path):
    folder = numbered_tree(tmp_path / "z", [f"{i:03d}" for i in range(1, 11)])   # 001 ... 010
    cfg = yaml_params(tmp_path, folder, "[001, 010]")                            # YAML 1.1: [1, 8]
    assert list(cfg.data.known_classes) == [1, 8]
    with pytest.raises(ConfigError, match=r"1 is not a class folder name.*unquoted 001 as the octal number 1: "
                                          r"write '001' in quotes"):
        data.load_openset(cfg.data, 0)
    with pytest.raises(ConfigError, match=r"8 is not a class folder name.*unquoted 010 as the octal number 8"):
        data.load_openset(config.replace(cfg, data={"known_classes": [8]}).data, 0)
    with pytest.raises(ConfigError, match=r"9 is not a class folder name.*did you mean '009'"):
        data.load_openset(config.replace(cfg, data={"known_classes": [9]}).data, 0)
    ok = yaml_params(tmp_path, folder, "['001', '010']")
    assert data.load_openset(ok.data, 0).class_names == ("001", "010")


def test_a_split_that_cannot_give_its_metrics_fails_before_training(tmp_path):
    folder = build_tree(tmp_path / "tree", n_train=2, n_test=2)
    for p in (folder / "test" / "owl").iterdir():
        p.unlink()
    cfg = config.load(params(tmp_path, folder, known="list", known_classes=["owl", "cat"], splits=[0]))
    with pytest.raises(ConfigError, match=r"data.folder .*tree, split 0: known class\(es\) \['owl'\] have no test"):
        trainers.train_methods(cfg, ["erm"], tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))
    with pytest.raises(ConfigError, match=r"\['owl'\] have no test images"):
        data.load_openset(cfg.data, 0)
    # split 1 of a random draw lacks test images: found before split 0 trains, in both tracks
    cfg = config.load(params(tmp_path, build_tree(tmp_path / "r", n_train=2, n_test=2), splits=[0, 1]))
    from gradmix.data import DATASETS, open_set_classes
    raw = DATASETS["imagefolder"].load(cfg.data)
    k0, k1 = (open_set_classes(cfg.data, DATASETS["imagefolder"], raw, s)[0] for s in (0, 1))
    only1 = CLASSES[sorted(set(k1) - set(k0))[0]]
    for p in (tmp_path / "r" / "test" / only1).iterdir():
        p.unlink()
    for method in ("erm", "supcon_none"):            # both tracks check before the first run
        with pytest.raises(ConfigError, match=rf"split 1: known class\(es\) \['{only1}'\] have no test images"):
            trainers.train_methods(cfg, [method], tmp_path / "runs2")
        assert not (tmp_path / "runs2").exists()
    # every unknown class without test images: the unknown test set would be empty
    for c in ("dog", "fox", "yak"):
        for p in (folder / "test" / c).iterdir():
            p.unlink()
    cfg = config.load(params(tmp_path, folder, known="list", known_classes=["cat"], splits=[0]))
    with pytest.raises(ConfigError, match=r"unknown test set is empty: unknown class\(es\) \['dog', 'fox', 'owl', 'yak'\]"):
        data.check_splits(cfg.data)
    # a class folder with no image files at all (only hidden ones)
    empty = build_tree(tmp_path / "e", n_train=1, n_test=1)
    for p in (empty / "train" / "yak").iterdir():
        p.rename(p.with_name("." + p.name))
    with pytest.raises(FileNotFoundError, match=r"class folder\(s\) \['yak'\] hold no image files"):
        data.check_splits(config.load(params(tmp_path, empty)).data)
