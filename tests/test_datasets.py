"""The OSR benchmarks from URL to ready open-set splits, on archives in the official formats served locally."""
import dataclasses

import numpy as np
import pytest
import torch

import archives as A
from gradmix import config, data, datasets
from gradmix.config import ConfigError, DataConfig
from gradmix.download import Resource
from gradmix.prepare import prepare


@pytest.fixture(scope="module")
def served():
    """Every official archive, fabricated, on a local server; RESOURCES checksums set to theirs."""
    s = A.Server()
    c10, c10_arrays = A.cifar10_tarball()
    c100, c100_arrays = A.cifar100_tarball()
    mnist_files, mnist_arrays = A.mnist_files()
    svhn_train, svhn_train_arrays = A.svhn_mat(4, seed=3)
    svhn_test, svhn_test_arrays = A.svhn_mat(2, seed=5)
    tin, tin_info = A.tinyimagenet_zip()
    blobs = {"cifar10": c10, "cifar100": c100, "svhn/train": svhn_train, "svhn/test": svhn_test,
             "tinyimagenet": tin, "cifar10c": A.cifar10c_tar(c10_arrays), "dtd": A.dtd_tarball(),
             "places365/val_256": A.places_tar(),
             **{f"mnist/{k}": v for k, v in mnist_files.items()}}
    patched = {}
    for key, blob in blobs.items():
        official = datasets.RESOURCES[key]
        s.files[official.filename] = blob
        patched[key] = Resource(official.filename, official.urls, md5=A.md5(blob), size=len(blob))
    saved = dict(datasets.RESOURCES)
    datasets.RESOURCES.update(patched)
    yield {"server": s, "cifar10": c10_arrays, "cifar100": c100_arrays, "mnist": mnist_arrays,
           "svhn_train": svhn_train_arrays, "svhn_test": svhn_test_arrays, "tin": tin_info}
    datasets.RESOURCES.clear()
    datasets.RESOURCES.update(saved)
    s.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def dcfg(served, root, dataset, **kw):
    return DataConfig(dataset=dataset, root=str(root), mirror=served["server"].url, image_size=kw.pop("image_size", 0),
                      splits=kw.pop("splits", (0,)), **kw)


def test_cifar10_split_from_url(served, root):
    d = data.load_openset(dcfg(served, root, "cifar10"), 0)
    a = served["cifar10"]
    assert d.known == [0, 6, 4, 9, 1, 7]
    assert set(d.y_unknown.tolist()) == {2, 3, 5, 8}
    assert len(d.x_known) == len(d.x_unknown) == 24                # 6·6 known vs 4·6 unknown, balanced
    assert len(d.x_train) == 60 and sorted(set(d.y_train.tolist())) == list(range(6))
    # pixels survive the pickle round trip: the first training image, label 0 (airplane)
    first = d.denormalize(d.x_train[:1])[0]
    assert torch.allclose(first, torch.from_numpy(a["x_train"][0]).float() / 255, atol=1e-5)
    assert d.class_names == ("airplane", "frog", "deer", "truck", "automobile", "horse")


@pytest.mark.parametrize("dataset, n_unknown_classes", [("cifar_plus_10", 10), ("cifar_plus_50", 50)])
def test_cifar_plus_unknowns_are_the_listed_cifar100_classes(served, root, dataset, n_unknown_classes):
    from gradmix.splits import OSR_SPLITS

    cfg = dcfg(served, root, dataset, splits=(1,), balance_test=False)
    d = data.load_openset(cfg, 1)
    assert d.known == OSR_SPLITS["cifar-10-100"][1]
    expect = {10 + c for c in OSR_SPLITS[f"cifar-10-100-{n_unknown_classes}"][1]}
    assert set(d.y_unknown.tolist()) == expect                      # only the listed CIFAR-100 classes
    assert len(d.x_unknown) == 2 * n_unknown_classes                # 2 test images per CIFAR-100 class
    assert len(d.x_known) == 4 * 6
    balanced = data.load_openset(dataclasses.replace(cfg, balance_test=True), 1)
    assert len(balanced.x_known) == len(balanced.x_unknown) == min(24, 2 * n_unknown_classes)


def test_mnist_from_idx_gz(served, root):
    d = data.load_openset(dcfg(served, root, "mnist", balance_test=False), 0)
    a = served["mnist"]
    assert d.x_train.shape[1:] == (1, 28, 28) and d.known == [2, 4, 5, 9, 8, 3]
    assert len(d.x_train) == 36 and len(d.x_known) == 24 and len(d.x_unknown) == 16
    first = d.denormalize(d.x_train[:1])[0, 0]
    i = int(np.flatnonzero(a["y_train"] == 2)[0])                  # the first known-class image
    assert torch.allclose(first, torch.from_numpy(a["x_train"][i]).float() / 255, atol=1e-5)


def test_svhn_from_mat_label_10_is_zero(served, root):
    raw = datasets.svhn(dcfg(served, root, "svhn"))
    a = served["svhn_train"]
    assert raw.x_train.shape[1:] == (3, 32, 32) and raw.y_train.min() == 0 and raw.y_train.max() == 9
    np.testing.assert_array_equal(raw.y_train, a["y"])
    np.testing.assert_array_equal(raw.x_train, a["x"])             # (N, C, H, W) channel order kept
    d = data.load_openset(dcfg(served, root, "svhn", image_size=16), 0)
    assert d.x_train.shape[1:] == (3, 16, 16) and d.known == [5, 3, 7, 2, 8, 6]


def test_tinyimagenet_sorted_wnids_and_val_annotations(served, root):
    raw = datasets.tinyimagenet(dcfg(served, root, "tinyimagenet"))
    assert raw.class_names == tuple(served["tin"]["wnids"])        # sorted wnid order = class id
    assert raw.x_train.shape == (200, 3, 64, 64) and raw.x_test.shape == (200, 3, 64, 64)
    # each image is the solid colour (k, 255 - k, 128) of its sorted class index k
    for x, y in ((raw.x_train, raw.y_train), (raw.x_test, raw.y_test)):
        red = np.asarray(x[:, 0]).reshape(len(x), -1).mean(1)
        assert np.abs(red - np.asarray(y)).max() < 3
    d = data.load_openset(dcfg(served, root, "tinyimagenet"), 0)
    assert len(d.known) == 20 and d.known[:3] == [108, 147, 17]
    assert len(d.x_known) == len(d.x_unknown) == 20 and d.x_train.shape[-1] == 64


def test_prepared_data_is_not_fetched_again(served, root):
    cfg = dcfg(served, root, "cifar_plus_10")
    data.load_openset(cfg, 0)
    before = len(served["server"].log)
    data.load_openset(cfg, 2)
    prepare(config.from_dict({"data": dataclasses.asdict(cfg)}), progress=False)
    assert len(served["server"].log) == before


def test_paper_ood_sets_and_cifar10c(served, root):
    from gradmix.corruption import cifar10c
    from gradmix.ood import ood_set

    cfg = config.from_dict({"data": dataclasses.asdict(dcfg(served, root, "cifar10", known="all")),
                            "ood": {"near": ["cifar100", "tinyimagenet"], "far": ["mnist", "svhn", "dtd", "places365"],
                                    "places365_subset": 5},
                            "corruption": {"source": "cifar10c", "corruptions": ["gaussian_noise", "contrast"]}})
    prepare(cfg, progress=False)
    ident = torch.zeros(1, 3, 32, 32)
    sizes = {s: ood_set(s, cfg.data, cfg.ood, ident).shape for s in cfg.ood.near + cfg.ood.far}
    assert sizes == {"cifar100": (200, 3, 32, 32), "tinyimagenet": (200, 3, 32, 32), "mnist": (40, 3, 32, 32),
                     "svhn": (20, 3, 32, 32), "dtd": (6, 3, 32, 32), "places365": (5, 3, 32, 32)}
    grey = ood_set("svhn", cfg.data, cfg.ood, torch.zeros(1, 1, 16, 16))
    assert grey.shape == (20, 1, 16, 16)
    again = ood_set("places365", cfg.data, cfg.ood, ident)
    assert torch.equal(again, ood_set("places365", cfg.data, cfg.ood, ident))    # a fixed subset
    x, y = cifar10c(cfg.data, "contrast", 1)
    np.testing.assert_array_equal(x, served["cifar10"]["x_test"])  # severity 1 rows are the clean test set
    x5, _ = cifar10c(cfg.data, "contrast", 5)
    assert x5.max() == 0 and len(y) == 60


def test_bad_data_configs_fail_fast(served, root):
    with pytest.raises(ConfigError, match="has no standard splits"):
        DataConfig(dataset="imagefolder", folder="x")
    with pytest.raises(ConfigError, match="data.splits.*valid: \\[0\\]"):
        DataConfig(dataset="cifar10", known="all", splits=(0, 1))
    with pytest.raises(ConfigError, match="data.mean/std"):
        DataConfig(mean=(0.5,), std=())
    with pytest.raises(ConfigError, match="unknown value 'imagenet'"):
        DataConfig(dataset="imagenet")
    cfg = dcfg(served, root, "cifar10", known="list", known_classes=("cat", "zebra"))
    with pytest.raises(ConfigError, match="unknown class 'zebra'.*'airplane'"):
        data.load_openset(cfg, 0)
